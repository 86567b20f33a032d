"""BSP mode of the scheduler (the baseline): a job runs stage by stage, a stage's tasks are
launched when its parents are done, and executors report every task. Part of SchedulerState
(state.py), split out to keep each mode readable on its own; pure, like the rest of it."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from squall.common.protocol import FailureKind, JobFailed, LaunchTasks, TaskDescriptor, TaskFinished
from squall.services.scheduler.actions import Action, Send, job_done, result_blocks, result_too_large
from squall.services.scheduler.jobs import JobRun, TaskKey

if TYPE_CHECKING:
    from squall.services.scheduler.state import Run


class BspMode:
    """Mixed into SchedulerState: uses its members, bsp_jobs, pending, _ship, _release, _advance."""

    members: Any
    settings: Any
    bsp_jobs: dict[str, tuple[Run, JobRun]]
    pending: Any

    def _start_bsp(self, run: Run, now: float) -> list[Action]:
        planned = run.queue.popleft()
        job = JobRun(
            job_id=planned.job_id, driver=run.driver, plan=planned.plan, started=now, batch=planned.batch, not_before=planned.not_before
        )
        run.bsp = job
        self.bsp_jobs[job.job_id] = (run, job)
        self._launch_runnable(job)
        return self.assign()

    def task_finished(self, msg: TaskFinished, payloads: list[object], now: float) -> list[Action]:
        key = (msg.job_id, msg.stage_id, msg.partition)
        self._free_slot(msg.executor_id, key)
        entry = self.bsp_jobs.get(msg.job_id)
        if entry is None or not entry[1].is_current(msg.executor_id, msg.stage_id, msg.partition):
            return self.assign()  # a task of a job that already ended: nothing to record
        run, job = entry
        run.skipped += msg.skipped
        if job.is_result_stage(msg.stage_id) and len(payloads) != 1:
            message = f"executor {msg.executor_id} reported result partition {msg.partition} without its data"
            return self._fail_bsp(run, job, "task", message, now, stage_id=msg.stage_id, partition=msg.partition)
        progress = job.progress[msg.stage_id]
        progress.remaining.discard(msg.partition)
        if job.is_result_stage(msg.stage_id):
            job.results[msg.partition] = payloads[0]
        if not progress.done:
            return self.assign()
        if not job.finished:
            self._launch_runnable(job)
            return self.assign()
        too_large = result_too_large(job.job_id, job.results, self.settings.max_message_bytes)
        if too_large:
            return self._fail_bsp(run, job, "task", too_large, now, error_type="ResultTooLarge")
        done = Send(run.driver, job_done(job.job_id, job.results, job.started, now), result_blocks(job.results))
        return [done, *self._end_bsp(run, job, now)]

    def _fail_bsp(self, run: Run, job: JobRun, kind: FailureKind, message: str, now: float, **details: object) -> list[Action]:
        failed = JobFailed(job_id=job.job_id, kind=kind, message=message, batch=job.batch, **details)  # type: ignore[arg-type]
        return [Send(run.driver, failed), *self._end_bsp(run, job, now)]

    def _end_bsp(self, run: Run, job: JobRun, now: float) -> list[Action]:
        self.bsp_jobs.pop(job.job_id, None)
        run.bsp = None
        if any(k[0] == job.job_id for k in self.pending):
            self.pending = deque(k for k in self.pending if k[0] != job.job_id)
        return self._release([job.job_id], sorted(job.touched)) + self._advance(run, now)

    def assign(self) -> list[Action]:
        """BSP: hand pending tasks to executors with free slots, least loaded first."""
        batches: dict[str, list[TaskDescriptor]] = {}
        while self.pending:
            candidates = [r for r in self.members.executors.values() if r.free_slots > 0]
            if not candidates:
                break
            record = min(candidates, key=lambda r: (len(r.running), r.executor_id))
            job_id, stage_id, partition = key = self.pending.popleft()
            entry = self.bsp_jobs.get(job_id)
            if entry is None:
                continue
            job = entry[1]
            record.running.add(key)
            job.placed[(stage_id, partition)] = record.executor_id
            job.touched.add(record.executor_id)
            not_before = 0.0 if job.plan.stages[stage_id].parents else job.not_before
            task = TaskDescriptor(
                job_id=job_id, stage_id=stage_id, partition=partition, stage_key=job.stage_keys[stage_id], not_before=not_before
            )
            batches.setdefault(record.executor_id, []).append(task)
        actions: list[Action] = []
        for executor_id, tasks in batches.items():
            record = self.members.executors[executor_id]
            job_specs = {}
            for t in tasks:
                job = self.bsp_jobs[t.job_id][1]
                job_specs[t.stage_key] = job.plan.stages[t.stage_id].spec
            shipment = self._ship(record, set(job_specs), job_specs)
            actions.append(Send(record.peer, LaunchTasks(tasks=tasks, stages=shipment.stages, code=shipment.code,
                                                         forget_stages=shipment.forget_stages, forget_code=shipment.forget_code)))
        return actions

    def _launch_runnable(self, job: JobRun) -> None:
        for stage_id in job.runnable_stages():
            job.progress[stage_id].launched = True
            for partition in range(job.plan.stages[stage_id].spec.partitions):
                self.pending.append((job.job_id, stage_id, partition))

    def _free_slot(self, executor_id: str, key: TaskKey) -> None:
        record = self.members.get(executor_id)
        if record is not None:
            record.running.discard(key)

