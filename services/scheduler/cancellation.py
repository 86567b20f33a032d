"""Stopping a run at once: the driver cancelled it, or the driver is gone. Pure.

A driver cancels a run (CancelRun: Ctrl-C, an iterator left early, its context closed), or its
connection drops (its process died): the run's queued jobs are dropped, and every executor
holding a task of its jobs in flight gets CancelJobs, drops what it holds of them and stops the
running one at its next safe point. The run then ends (the state moves it on to RunDone). Jobs
keep their attempt ids, so what executors still send about them (results, GroupDone, TaskFailed)
finds no job and is dropped; a BSP task's late report still frees its slot.
"""

from __future__ import annotations

from squall.common.core import Log, Send, ToShuffleMeta
from squall.common.protocol import CancelJobs, ForgetJob
from squall.services.scheduler.bsp_mode import BspMode
from squall.services.scheduler.events import Instruction
from squall.services.scheduler.groups import PlannedJob
from squall.services.scheduler.membership import Membership
from squall.services.scheduler.runs import SubmittedRun


def stop_run(run: SubmittedRun, why: str, prescheduled: dict[str, tuple[SubmittedRun, PlannedJob]], bsp: BspMode,
             members: Membership) -> list[Instruction]:
    """Drop the run's queued jobs and stop its jobs in flight, forgetting them in `prescheduled`
    and `bsp`; the run is left with nothing queued or in flight."""
    queued = len(run.queue)
    run.queue.clear()
    job_ids: list[str] = []
    executors: set[str] = set()
    for group in run.groups:
        executors |= group.waiting
        for job in group.jobs:
            prescheduled.pop(job.wire_id, None)
            job_ids.append(job.wire_id)
            executors |= job.executors
    run.groups.clear()
    if run.bsp is not None:
        job_ids.append(run.bsp.job_id)
        executors |= run.bsp.touched
        bsp.drop(run, run.bsp)
    details: dict[str, object] = {"run": run.run_id, "reason": why, "queued_jobs": queued, "jobs_in_flight": len(job_ids)}
    instructions: list[Instruction] = [Log("info", "run_cancelled", details)]
    if job_ids:
        instructions.append(ToShuffleMeta(ForgetJob(job_ids=job_ids)))
        for executor_id in sorted(executors):
            record = members.get(executor_id)
            if record is not None:
                instructions.append(Send(record.peer, CancelJobs(job_ids=job_ids)))
    return instructions
