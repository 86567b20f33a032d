"""Cancelled runs and vanished drivers. Part of SchedulerState (state.py), like bsp_mode.py; pure.

A driver cancels a run (CancelRun: Ctrl-C, an iterator left early, its context closed), or its
connection drops (its process died): the run's queued jobs are dropped, and every executor
holding a task of its jobs in flight gets CancelJobs, drops what it holds of them and stops the
running one at its next safe point. The run ends at once. Jobs keep their attempt ids, so what
executors still send about them (results, GroupDone, TaskFailed) finds no job and is dropped; a
BSP task's late report still frees its slot.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from squall.common.protocol import CancelJobs, ForgetJob, ForgetStates
from squall.services.scheduler.actions import Action, Send, ToShuffleMeta

if TYPE_CHECKING:
    from squall.services.scheduler.state import Run


class Cancellation:
    """Mixed into SchedulerState: uses its runs, prescheduled, bsp_jobs, pending, members,
    driver_states, cancellations, forget_states and _advance."""

    runs: dict[str, Run]
    prescheduled: dict[str, Any]
    bsp_jobs: dict[str, Any]
    pending: deque[Any]
    members: Any
    driver_states: dict[bytes, set[str]]
    cancellations: deque[dict[str, object]]

    def drivers(self) -> set[bytes]:
        """Drivers the scheduler holds something for: runs in flight, or keyed state of their streams."""
        return {run.driver for run in self.runs.values()} | set(self.driver_states)

    def driver_lost(self, driver: bytes, now: float) -> list[Action]:
        """A driver's connection is gone (its process died, or its context closed): cancel its
        runs, and forget the keyed state of its streams (no one can resume them)."""
        actions: list[Action] = []
        for run in [r for r in self.runs.values() if r.driver == driver]:
            actions += self._cancel_run(run, "its driver is gone", now)
        states = self.driver_states.pop(driver, set())
        if states:
            actions += self.forget_states(ForgetStates(state_ids=sorted(states)))  # type: ignore[attr-defined]
        return [a for a in actions if not (isinstance(a, Send) and a.peer == driver)]  # it hears nothing more

    def _cancel_run(self, run: Run, why: str, now: float) -> list[Action]:
        """Drop the run's queued jobs and stop its jobs in flight; the run ends (RunDone)."""
        queued = len(run.queue)
        run.queue.clear()
        job_ids: list[str] = []
        executors: set[str] = set()
        for group in run.groups:
            executors |= group.waiting
            for job in group.jobs:
                self.prescheduled.pop(job.wire_id, None)
                job_ids.append(job.wire_id)
                executors |= job.executors
        run.groups.clear()
        bsp = run.bsp
        if bsp is not None:
            self.bsp_jobs.pop(bsp.job_id, None)
            run.bsp = None
            self.pending = deque(k for k in self.pending if k[0] != bsp.job_id)
            job_ids.append(bsp.job_id)
            executors |= bsp.touched
        self.cancellations.append({"run": run.run_id, "reason": why, "queued_jobs": queued, "jobs_in_flight": len(job_ids)})
        actions: list[Action] = []
        if job_ids:
            actions.append(ToShuffleMeta(ForgetJob(job_ids=job_ids)))
            for executor_id in sorted(executors):
                record = self.members.get(executor_id)
                if record is not None:
                    actions.append(Send(record.peer, CancelJobs(job_ids=job_ids)))
        return actions + self._advance(run, now)  # type: ignore[attr-defined]
