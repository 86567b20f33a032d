"""Results straight to the driver (Drizzle mode), as the scheduler sees them: pure.

A driver that takes results directly gives its result socket's address when it submits a run
(SubmitJobs.result_to). Each result task of the run's jobs is told that address
(TaskDescriptor.result_to) and sends its ResultPartition there, not here; the executor's
GroupDone lists the result partitions its tasks sent. The scheduler thus learns that a job is
complete from the group's reports, and the blocks never pass through it. A job whose result
partitions all went is done (it is not replayed if an executor dies later); one that still lacks
some when every executor of its group has reported fails, as when results are relayed.
"""

from __future__ import annotations

import msgspec
from squall.common.protocol import GroupDone, TaskDescriptor
from squall.common.security import is_loopback
from squall.services.scheduler.groups import PlannedJob


def reachable_result_address(result_to: str, executor_addresses: list[str]) -> str:
    """The driver's result address if the executors can reach it, else "" (results relayed). A
    loopback address reaches only processes on the driver's machine: where an executor
    advertises an address that is not loopback (a container, another host), it is on another
    network, and a driver that sees the scheduler through a published port (a Docker host) would
    otherwise wait for results that never come."""
    if result_to and is_loopback(result_to) and any(not is_loopback(a) for a in executor_addresses):
        return ""
    return result_to


def address_results(shares: dict[str, list[TaskDescriptor]], jobs: list[PlannedJob], result_to: str) -> dict[str, list[TaskDescriptor]]:
    """The group's shares with every result task of `jobs` told to send its partition to
    `result_to` (unchanged when it is empty: results come through the scheduler). A job that
    only rebuilds keyed state outputs nothing, and is left as it is."""
    if not result_to:
        return shares
    result_stages = {job.wire_id: len(job.plan.stages) - 1 for job in jobs if not job.replay_only}
    return {
        executor_id: [
            msgspec.structs.replace(task, result_to=result_to) if result_stages.get(task.job_id) == task.stage_id else task
            for task in tasks
        ]
        for executor_id, tasks in shares.items()
    }


def take_report(report: GroupDone, jobs: list[PlannedJob]) -> list[PlannedJob]:
    """Note the result partitions an executor says it sent to the driver; the jobs this makes
    complete are returned (and marked done). Partitions a job does not have, or reports about
    jobs that are over, change nothing."""
    completed: list[PlannedJob] = []
    by_wire_id = {job.wire_id: job for job in jobs}
    for wire_id, partitions in report.results.items():
        job = by_wire_id.get(wire_id)
        if job is None or job.over or job.replay_only:
            continue
        count = job.plan.result_stage.spec.partitions
        job.sent.update(p for p in partitions if p < count)
        if not job.results_remaining:
            job.done = True
            completed.append(job)
    return completed
