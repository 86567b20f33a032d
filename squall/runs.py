"""Runs: a sequence of micro-batch jobs submitted at once, results handed back in order.

`Connection.run_jobs` and `Connection.iter_jobs` (squall.connection) build on this. Each job's result (its collected
records) is yielded the moment that job and every job before it are complete, without waiting
for the rest of its group. With errors="raise", a failed job raises its error when its turn
comes; with errors="return", the error object takes the result's place and the run goes on.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, Literal

from squall.client import Client, SchedulerRestarted
from squall.common import protocol
from squall.common.protocol import ErrorReply, GroupStats, JobDone, JobFailed, JobSpec, Priority, RunDone
from squall.common.serialization import loads_block
from squall.driver_log import driver_log
from squall.errors import ExecutorLostError, JobError, SchedulerRestartedError, TaskError

Errors = Literal["raise", "return"]
PRIORITIES: tuple[Priority, ...] = ("latency", "batch")
log = driver_log("runs")


def check_priority(priority: object) -> Priority:
    """`priority` if it is "latency" or "batch"; ValueError naming the two otherwise."""
    if priority not in PRIORITIES:
        raise ValueError(f'priority must be "latency" or "batch", got {priority!r}')
    return priority


@dataclass
class RunStats:
    """What a run cost: the scheduler's per-group figures and when each batch came back."""

    groups: list[GroupStats] = field(default_factory=list)
    submitted: float = 0.0
    batch_done: list[float] = field(default_factory=list)  # at the driver: seconds since submission
    # At the scheduler, when each batch's last result arrived (its clock), and how long the first
    # batch took from its dispatch: timestamps taken as results arrive, not when the driver
    # gets round to reading them.
    batch_finished_at: list[float] = field(default_factory=list)
    first_elapsed: float = 0.0
    skipped: int = 0  # bad records skipped (bad_records="skip"); never dropped silently
    checkpoints: dict[str, int] = field(default_factory=dict)  # keyed state id -> batch its checkpoints reach

    @property
    def batch_intervals(self) -> list[float]:
        """Time per micro-batch: from the previous batch's completion (the first: from dispatch)."""
        times = sorted(t for t in self.batch_finished_at if t)
        if not times:
            return []
        return [self.first_elapsed, *(b - a for a, b in itertools.pairwise(times))]


class DriverRun:
    """The driver's record of one run it submitted: its jobs (and any replays), what came back for
    each, and its RunStats; results() hands the outcomes over in order and cancels the run if left
    early."""

    def __init__(
        self,
        client: Client,
        plans: list[Any],
        code: dict[str, bytes],
        group_size: int,
        preschedule: bool,
        barrier: bool,
        not_before: list[float] | None = None,
        first_batch: int = 0,
        replays: list[Any] | None = None,
        replay_from: int = 0,
        resume_states: dict[str, int] | None = None,
        priority: Priority = "latency",
    ) -> None:
        self.client = client
        self.priority = check_priority(priority)
        self.first_batch = first_batch
        self.run_id = client.new_run_id()
        times = not_before or [0.0] * len(plans)
        if len(times) != len(plans):
            raise ValueError(f"not_before has {len(times)} times for {len(plans)} jobs")
        self.jobs = [JobSpec(job_id=f"{self.run_id}.{i}", plan=plan, not_before=t) for i, (plan, t) in enumerate(zip(plans, times, strict=True))]
        self.index = {job.job_id: i for i, job in enumerate(self.jobs)}
        # A stream resuming on a restarted scheduler: batches that only rebuild state (no output).
        self.replays = [
            JobSpec(job_id=f"{self.run_id}.r{i}", plan=plan, replay_only=True, batch=replay_from + i) for i, plan in enumerate(replays or [])
        ]
        self.resume_states = dict(resume_states or {})
        self.stats = RunStats()
        self._options = (group_size, preschedule, barrier, first_batch)
        self._code = code
        self._outcome: list[Any] = [None] * len(self.jobs)
        self._complete = [False] * len(self.jobs)
        self._finished = False

    def results(self, errors: Errors = "raise") -> Generator[Any, None, None]:
        """Each job's collected records, in order, as soon as available."""
        try:
            self._submit()  # waits for the run's first message: a Ctrl-C there must cancel it too
            for i in range(len(self.jobs)):
                while not self._complete[i]:
                    self._handle(*self.client.next_event(self.run_id))
                outcome = self._outcome[i]
                if isinstance(outcome, JobError) and errors == "raise":
                    raise outcome
                yield outcome
            # Every result is in. The run's own end (with its group figures) follows at once when
            # all went well; after a failure it may wait for slow tasks, so it is not waited for.
            while not self._finished and not any(isinstance(o, JobError) for o in self._outcome):
                self._handle(*self.client.next_event(self.run_id))
        finally:
            if not self._finished:
                self.client.cancel(self.run_id)  # groups not yet dispatched will not be
            self.client.forget(self.run_id)

    def _submit(self) -> None:
        group_size, preschedule, barrier, first_batch = self._options
        self.stats.submitted = time.perf_counter()
        self.stats.batch_done = [0.0] * len(self.jobs)
        self.stats.batch_finished_at = [0.0] * len(self.jobs)
        for attempt in itertools.count():
            self.client.submit(self.run_id, [*self.replays, *self.jobs], self._code, group_size, preschedule, barrier, first_batch,
                               self.resume_states, self.priority)
            first = self.client.next_event(self.run_id)
            if not (isinstance(first[0], JobFailed) and first[0].kind == "missing_code" and attempt == 0):
                self._handle(*first)
                return
            # The scheduler lost code we sent earlier (it restarted): drain the refusal, resend all.
            while not isinstance(self.client.next_event(self.run_id)[0], RunDone):
                pass
            self.client.sent_code.clear()

    def _handle(self, msg: protocol.Message, payloads: list[object]) -> None:
        if isinstance(msg, RunDone):
            self.stats.groups = list(msg.groups)
            self.stats.skipped = msg.skipped
            self.stats.checkpoints = dict(msg.checkpoints)
            if msg.skipped:
                log.warning("bad_records_skipped", run=self.run_id, records=msg.skipped)
            self._finished = True
            for position, done in enumerate(self._complete):
                if not done:  # the scheduler never finished it: say so, do not drop it silently
                    batch = self.first_batch + position
                    job_id = self.jobs[position].job_id
                    self._settle(position, JobError(job_id, "cancelled", f"batch {batch} did not run (the run ended first)"))
            return
        if isinstance(msg, ErrorReply):
            raise JobError(self.run_id, "protocol", f"the scheduler refused run {self.run_id}: {msg.reason}")
        if isinstance(msg, SchedulerRestarted):
            self._finished = True  # nothing more will come for it
            pending = [self.first_batch + i for i, done in enumerate(self._complete) if not done]
            raise SchedulerRestartedError(
                f"the scheduler at {self.client.address} restarted while run {self.run_id} was in flight there; "
                f"batches {pending[:1] + pending[-1:] if pending else []} (first, last) did not complete"
            )
        i = self.index.get(getattr(msg, "job_id", ""))
        if i is None:
            return
        if isinstance(msg, JobDone):
            self.stats.batch_finished_at[i] = msg.finished_at
            if i == 0:
                self.stats.first_elapsed = msg.elapsed
            records = itertools.chain.from_iterable(loads_block(protocol.payload_bytes(p)) for p in payloads)
            self._settle(i, list(records))
        elif isinstance(msg, JobFailed):
            self._settle(i, job_error(msg))

    def _settle(self, i: int, outcome: Any) -> None:
        if self._complete[i]:
            return
        self._outcome[i] = outcome
        self._complete[i] = True
        self.stats.batch_done[i] = time.perf_counter() - self.stats.submitted


def job_error(msg: JobFailed) -> JobError:
    if msg.kind == "task":
        return TaskError(msg.job_id, msg.message, msg.error_type, msg.traceback, msg.stage_id, msg.partition, msg.batch)
    if msg.kind == "executor_lost":
        return ExecutorLostError(msg.job_id, msg.kind, msg.message, msg.stage_id, msg.partition, msg.batch)
    return JobError(msg.job_id, msg.kind, msg.message, msg.stage_id, msg.partition, msg.batch)
