"""BSP mode of the scheduler (the baseline): a job runs stage by stage, a stage's tasks are
launched when its parents are done, and executors report every task. A collaborator of
SchedulerState (state.py), which holds one and hands it what BSP runs need; pure, like the rest.

It owns the BSP jobs in flight and the tasks waiting for a free slot. What is not BSP's own, the
state lends it as two functions: `ship` (the stage specs and code an executor lacks) and `ended`
(a job is over: release what executors hold of it and move its run on).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from squall.common.core import Send
from squall.common.protocol import FailureKind, JobFailed, LaunchTasks, TaskDescriptor, TaskFinished
from squall.services.scheduler.bsp_jobs import BspJob, TaskKey
from squall.services.scheduler.events import Instruction
from squall.services.scheduler.groups import block_addresses, task_blocks
from squall.services.scheduler.job_results import job_done, result_blocks, result_too_large
from squall.services.scheduler.membership import Membership
from squall.services.scheduler.placement import FreeSlots, PlacementPolicy
from squall.services.scheduler.runs import SubmittedRun
from squall.services.scheduler.shipped import Ship

Ended = Callable[[SubmittedRun, BspJob, float], list[Instruction]]


class BspMode:
    def __init__(self, members: Membership, placement: PlacementPolicy, max_message_bytes: int, ship: Ship, ended: Ended) -> None:
        self.members = members
        self.placement = placement
        self._rounds = 0  # assign() calls: each draws its own random order (lc_placement "random")
        self.max_message_bytes = max_message_bytes
        self._ship = ship
        self._ended = ended
        self.jobs: dict[str, tuple[SubmittedRun, BspJob]] = {}  # job id -> its run and bookkeeping, while in flight
        self.pending: deque[TaskKey] = deque()  # tasks waiting for a slot

    def start(self, run: SubmittedRun, now: float) -> list[Instruction]:
        """Start the run's next queued job."""
        planned = run.queue.popleft()
        live = {record.executor_id: record for record in self.members.placeable()}
        job = BspJob(
            job_id=planned.job_id, driver=run.driver, plan=planned.plan, started=now, batch=planned.batch, not_before=planned.not_before,
            reads=task_blocks(planned, live), blocks=planned.blocks,
        )
        run.bsp = job
        self.jobs[job.job_id] = (run, job)
        self._launch_runnable(job)
        return self.assign()

    def task_finished(self, msg: TaskFinished, payloads: list[object], now: float) -> list[Instruction]:
        key = (msg.job_id, msg.stage_id, msg.partition)
        self.free_slot(msg.executor_id, key)
        entry = self.jobs.get(msg.job_id)
        if entry is None or not entry[1].is_current(msg.executor_id, msg.stage_id, msg.partition):
            return self.assign()  # a task of a job that already ended: nothing to record
        run, job = entry
        run.skipped += msg.skipped
        if job.is_result_stage(msg.stage_id) and len(payloads) != 1:
            message = f"executor {msg.executor_id} reported result partition {msg.partition} without its data"
            return self.fail(run, job, "task", message, now, stage_id=msg.stage_id, partition=msg.partition)
        progress = job.progress[msg.stage_id]
        progress.remaining.discard(msg.partition)
        if job.is_result_stage(msg.stage_id):
            job.results[msg.partition] = payloads[0]
        if not progress.done:
            return self.assign()
        if not job.finished:
            self._launch_runnable(job)
            return self.assign()
        too_large = result_too_large(job.job_id, job.results, self.max_message_bytes)
        if too_large:
            return self.fail(run, job, "task", too_large, now, error_type="ResultTooLarge")
        done = Send(run.driver, job_done(job.job_id, job.results, job.started, now), result_blocks(job.results))
        return [done, *self._end(run, job, now)]

    def fail(self, run: SubmittedRun, job: BspJob, kind: FailureKind, message: str, now: float, **details: object) -> list[Instruction]:
        failed = JobFailed(job_id=job.job_id, kind=kind, message=message, batch=job.batch, **details)  # type: ignore[arg-type]
        return [Send(run.driver, failed), *self._end(run, job, now)]

    def executor_lost(self, executor_id: str, why: str, now: float) -> list[Instruction]:
        """Jobs that needed a task or a map output on the executor fail: BSP does not replay."""
        instructions: list[Instruction] = []
        for run, job in list(self.jobs.values()):
            needed = job.depends_on(executor_id)
            if needed is not None:
                stage_id, partition = needed
                message = f"{why} while job {job.job_id} needed its task or output (stage {stage_id}, partition {partition})"
                instructions += self.fail(run, job, "executor_lost", message, now, stage_id=stage_id, partition=partition)
        return instructions

    def drop(self, run: SubmittedRun, job: BspJob) -> None:
        """Forget the job: it is over, or its run was cancelled."""
        self.jobs.pop(job.job_id, None)
        run.bsp = None
        if any(k[0] == job.job_id for k in self.pending):
            self.pending = deque(k for k in self.pending if k[0] != job.job_id)

    def _end(self, run: SubmittedRun, job: BspJob, now: float) -> list[Instruction]:
        self.drop(run, job)
        return self._ended(run, job, now)

    def assign(self) -> list[Instruction]:
        """Hand pending tasks to executors with free slots, in their run's placement order
        (placement.py: the least work of the other priority first), then the fewest BSP tasks
        running. Each task carries its run's priority."""
        if not self.pending:
            return []
        batches: dict[str, list[TaskDescriptor]] = {}
        self._rounds += 1
        free = FreeSlots(self.members.placeable(), self.placement, self._rounds)
        while self.pending:
            entry = self.jobs.get(self.pending[0][0])
            if entry is None:
                self.pending.popleft()
                continue
            run, job = entry
            record = free.take(run.priority)
            if record is None:
                break
            job_id, stage_id, partition = key = self.pending.popleft()
            record.running.add(key)
            record.count_placed(run.priority, 1)
            job.placed[(stage_id, partition)] = record.executor_id
            job.touched.add(record.executor_id)
            not_before = 0.0 if job.plan.stages[stage_id].parents else job.not_before
            persisted = block_addresses(job.reads.get((stage_id, partition)), record, job.blocks, self.members.executors)
            task = TaskDescriptor(
                job_id=job_id, stage_id=stage_id, partition=partition, stage_key=job.stage_keys[stage_id], not_before=not_before,
                priority=run.priority, persisted=persisted,
            )
            batches.setdefault(record.executor_id, []).append(task)
        instructions: list[Instruction] = []
        for executor_id, tasks in batches.items():
            record = self.members.executors[executor_id]
            job_specs = {}
            for t in tasks:
                job = self.jobs[t.job_id][1]
                job_specs[t.stage_key] = job.plan.stages[t.stage_id].spec
            shipment = self._ship(record.shipped, set(job_specs), job_specs)
            instructions.append(Send(record.peer, LaunchTasks(tasks=tasks, stages=shipment.stages, code=shipment.code,
                                                              forget_stages=shipment.forget_stages, forget_code=shipment.forget_code)))
        return instructions

    def _launch_runnable(self, job: BspJob) -> None:
        for stage_id in job.runnable_stages():
            job.progress[stage_id].launched = True
            for partition in range(job.plan.stages[stage_id].spec.partitions):
                self.pending.append((job.job_id, stage_id, partition))

    def free_slot(self, executor_id: str, key: TaskKey) -> None:
        record = self.members.get(executor_id)
        if record is not None:
            record.running.discard(key)

    def stage_keys_in_flight(self) -> set[str]:
        return {key for _, job in self.jobs.values() for key in job.stage_keys}
