"""Runs: a sequence of micro-batch jobs submitted at once, results handed back in order.

`Connection.run_jobs` and `Connection.iter_jobs` (squall.connection) build on this. Each job's result (its collected
records) is yielded the moment that job and every job before it are complete, without waiting
for the rest of its group. With errors="raise", a failed job raises its error when its turn
comes; with errors="return", the error object takes the result's place and the run goes on.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Collection, Container, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import msgspec

from squall.client import Client, SchedulerRestarted
from squall.common import protocol
from squall.common.plan import LogicalPlan, PlanDelta
from squall.common.protocol import ErrorReply, GroupStats, JobDone, JobFailed, JobSpec, Priority, RunDone
from squall.common.serialization import loads_block
from squall.driver_log import driver_log
from squall.errors import ExecutorLostError, JobError, SchedulerRestartedError, TaskError
from squall.result_assembly import ResultAssembly
from squall.result_socket import ResultArrived

Errors = Literal["raise", "return"]
PRIORITIES: tuple[Priority, ...] = ("latency", "batch")
log = driver_log("runs")


def check_priority(priority: object) -> Priority:
    """`priority` if it is "latency" or "batch"; ValueError naming the two otherwise."""
    if priority not in PRIORITIES:
        raise ValueError(f'priority must be "latency" or "batch", got {priority!r}')
    return priority


class Planned(Protocol):
    """What a run takes: anything with a logical plan (a Dataset)."""

    def plan(self) -> LogicalPlan:
        """The plan the scheduler is sent for it."""
        ...

    def delta(self, sent: Container[str], sending: set[str]) -> PlanDelta:
        """Its plan as a delta over the node ids `sent` and `sending` (adding its new ones to
        `sending`)."""
        ...


@dataclass
class RunStats:
    """What a run cost: the scheduler's per-group figures and when each batch came back."""

    groups: list[GroupStats] = field(default_factory=list)
    run_id: str = ""
    submitted: float = 0.0
    batch_done: list[float] = field(default_factory=list)  # at the driver: seconds since submission
    # When each batch's last result arrived, and how long the first batch took: timestamps taken
    # as results arrive, not when the driver gets round to reading them. Results sent straight
    # to the driver: its monotonic clock, the first batch timed from its submission. Results
    # relayed by the scheduler: the scheduler's clock, the first batch timed from its dispatch.
    batch_finished_at: list[float] = field(default_factory=list)
    first_elapsed: float = 0.0
    skipped: int = 0  # bad records skipped (bad_records="skip"); never dropped silently
    checkpoints: dict[str, int] = field(default_factory=dict)  # keyed state id -> batch its checkpoints reach
    # The size of each SubmitJobs message the run sent, in bytes: one, and one more for each
    # submission sent again (the scheduler had restarted) or job sent again whole (it no
    # longer kept plan nodes the job's delta named).
    submitted_bytes: list[int] = field(default_factory=list)

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
    early.

    With `deltas`, each job carries only the plan nodes the scheduler has not had from this
    client (Planned.delta). A job whose delta names nodes the scheduler no longer keeps fails
    with "plan_cache_miss": it is sent again once, whole, as a run of its own whose messages
    come to this run's mailbox, and the user sees only its result."""

    def __init__(
        self,
        client: Client,
        datasets: Sequence[Planned],
        code: Mapping[str, bytes],
        group_size: int,
        preschedule: bool,
        barrier: bool,
        not_before: list[float] | None = None,
        first_batch: int = 0,
        replays: Sequence[Planned] = (),
        replay_from: int = 0,
        resume_states: dict[str, int] | None = None,
        priority: Priority = "latency",
        deltas: bool = False,
    ) -> None:
        self.client = client
        self.priority = check_priority(priority)
        self.first_batch = first_batch
        self.run_id = client.new_run_id()
        times = not_before or [0.0] * len(datasets)
        if len(times) != len(datasets):
            raise ValueError(f"not_before has {len(times)} times for {len(datasets)} jobs")
        self.datasets = list(datasets)
        # A stream resuming on a restarted scheduler: batches that only rebuild state (no output).
        # The scheduler takes them first.
        self._planned = [*replays, *datasets]
        self._deltas = deltas
        self._code = code  # every piece of code by key (the connection's): each submission takes what it names
        shells = [JobSpec(job_id=f"{self.run_id}.r{i}", replay_only=True, batch=replay_from + i) for i in range(len(replays))]
        shells += [JobSpec(job_id=f"{self.run_id}.{i}", not_before=t) for i, t in enumerate(times)]
        self._sending = self._with_plans(shells)
        self.jobs = self._sending[len(replays):]
        self.index = {job.job_id: i for i, job in enumerate(self.jobs)}
        self.resume_states = dict(resume_states or {})
        self.stats = RunStats(run_id=self.run_id)
        self._options = (group_size, preschedule, barrier, first_batch)
        self._outcome: list[Any] = [None] * len(self.jobs)
        self._complete = [False] * len(self.jobs)
        self._finished = False
        self._resends: dict[str, int] = {}  # run id -> the job it sends again whole, until that run ends
        self._resent: set[int] = set()  # jobs sent again whole: a second miss is the job's error
        # Results executors send straight to this driver, and the jobs the scheduler says they
        # were all sent for that are not whole yet: waited for until `_awaiting_until`.
        self._direct = ResultAssembly()
        self._awaiting: set[int] = set()
        self._awaiting_until = 0.0
        self._submitted_at = 0.0  # time.monotonic(): the clock of direct results' arrival times

    def results(self, errors: Errors = "raise") -> Generator[Any, None, None]:
        """Each job's collected records, in order, as soon as available."""
        try:
            self._submit()  # waits for the run's first message: a Ctrl-C there must cancel it too
            for i in range(len(self.jobs)):
                while not self._complete[i]:
                    self._next_event()
                outcome = self._outcome[i]
                if isinstance(outcome, JobError) and errors == "raise":
                    raise outcome
                yield outcome
            # Every result is in. The run's own end (with its group figures) follows at once when
            # all went well; after a failure it may wait for slow tasks, so it is not waited for.
            while (not self._finished or self._resends) and not any(isinstance(o, JobError) for o in self._outcome):
                self._next_event()
        finally:
            if not self._finished:
                self.client.cancel(self.run_id)  # groups not yet dispatched will not be
            for run_id in self._resends:
                self.client.cancel(run_id)
            for run_id in [self.run_id, *self._resends]:
                self.client.forget(run_id)

    def _next_event(self) -> None:
        """Handle the run's next message. While results the scheduler says were sent here are
        missing, wait for them only until result_wait has passed since it said so: then their
        jobs fail, naming what to check."""
        if not self._awaiting:
            self._handle(*self.client.next_event(self.run_id))
            return
        event = self.client.next_event_until(self.run_id, self._awaiting_until)
        if event is not None:
            self._handle(*event)
            return
        wait = self.client.settings.result_wait
        for i in sorted(self._awaiting):
            message = (
                f"batch {self.first_batch + i}: the executors sent its result to this driver at {self.client.result_address}, "
                f"but {'only ' + str(self._direct.pending(i)) + ' partitions' if self._direct.pending(i) else 'nothing'} arrived "
                f"within result_wait={wait:g}s (SQUALL_RESULT_WAIT): if executors cannot reach that address, set driver_host "
                "(SQUALL_DRIVER_HOST) to one they can, or direct_results=false (SQUALL_DIRECT_RESULTS)"
            )
            self._settle(i, JobError(self.jobs[i].job_id, "results_lost", message, batch=self.first_batch + i))

    def _submit(self) -> None:
        group_size, preschedule, barrier, first_batch = self._options
        self.stats.submitted = time.perf_counter()
        self._submitted_at = time.monotonic()
        self.stats.batch_done = [0.0] * len(self.jobs)
        self.stats.batch_finished_at = [0.0] * len(self.jobs)
        for attempt in itertools.count():
            sent = self.client.submit(self.run_id, self._sending, self._code_of(self._sending), group_size, preschedule, barrier,
                                      first_batch, self.resume_states, self.priority)
            self.stats.submitted_bytes.append(sent)
            first = self.client.next_event(self.run_id)
            if not (isinstance(first[0], JobFailed) and first[0].kind == "missing_code" and attempt == 0):
                self._handle(*first)
                return
            # The scheduler lost code and plan nodes we sent earlier (it restarted): drain the
            # refusal, send all again.
            while not isinstance(self.client.next_event(self.run_id)[0], RunDone):
                pass
            self.client.forget_sent()
            self._sending = self._with_plans(self._sending)

    def _with_plans(self, jobs: list[JobSpec]) -> list[JobSpec]:
        """`jobs` (in the order of the run's plans, replays first) with their plans as this
        submission sends them: deltas over the nodes the scheduler has from this client, or whole."""
        if not self._deltas:
            return [msgspec.structs.replace(job, plan=planned.plan()) for job, planned in zip(jobs, self._planned, strict=True)]
        sending: set[str] = set()
        return [
            msgspec.structs.replace(job, delta=planned.delta(self.client.sent_nodes, sending))
            for job, planned in zip(jobs, self._planned, strict=True)
        ]

    def _code_of(self, jobs: list[JobSpec]) -> dict[str, bytes]:
        """The code these jobs name (Client.submit leaves out what the scheduler has)."""
        keys: set[str] = set()
        for job in jobs:
            keys |= job.code_keys()
        return {key: self._code[key] for key in keys}

    def _send_whole(self, i: int) -> None:
        """Job i's delta named plan nodes the scheduler no longer keeps: send it again with its
        whole plan, as a run of its own whose messages come to this run's mailbox. The nodes this
        client counted as sent are forgotten, so later deltas send their lineage again. All its
        code goes with it: the scheduler may have lost more than nodes (a restart this client
        has not heard of yet)."""
        self.client.sent_nodes.clear()
        self._resent.add(i)
        _, preschedule, barrier, first_batch = self._options
        run_id = self.client.new_run_id()
        job = JobSpec(job_id=f"{run_id}.0", plan=self.datasets[i].plan(), not_before=self.jobs[i].not_before)
        self.index[job.job_id] = i
        self._resends[run_id] = i
        try:
            sent = self.client.submit(run_id, [job], self._code_of([job]), 1, preschedule, barrier, first_batch + i,
                                      priority=self.priority, mailbox=self.run_id, all_code=True)
        except JobError as exc:
            self._resends.pop(run_id)
            self.client.forget(run_id)
            self._settle(i, exc)
            return
        self.stats.submitted_bytes.append(sent)

    def _handle(self, msg: protocol.Message, payloads: list[object]) -> None:
        if isinstance(msg, RunDone):
            self.stats.skipped += msg.skipped
            if msg.skipped:
                log.warning("bad_records_skipped", run=msg.run_id, records=msg.skipped)
            direct = {self.index[job_id] for job_id in msg.direct if job_id in self.index}
            if msg.run_id != self.run_id:  # a job sent again whole: its own run ended
                position = self._resends.pop(msg.run_id, None)
                self._ended([] if position is None else [position], direct)
                return
            self.stats.groups = list(msg.groups)
            self.stats.checkpoints = dict(msg.checkpoints)
            self._finished = True
            self._ended(set(range(len(self.jobs))) - set(self._resends.values()), direct)
            return
        if isinstance(msg, ResultArrived):
            self._take_result(msg, payloads)
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
            if msg.kind == "plan_cache_miss" and i not in self._resent:
                self._send_whole(i)
            else:
                self._settle(i, job_error(msg))

    def _take_result(self, msg: ResultArrived, payloads: list[object]) -> None:
        """A result partition an executor sent straight here: the job is settled once one
        attempt of it has sent them all (result_assembly.py)."""
        i = self.index.get(msg.result.job)
        if i is None or self._complete[i]:
            return
        whole = self._direct.take(i, msg.result, payloads[0], msg.arrived)
        if whole is None:
            return
        self.stats.batch_finished_at[i] = whole.finished_at
        if i == 0:
            self.stats.first_elapsed = max(0.0, whole.finished_at - self._submitted_at)
        self._settle(i, [record for block in whole.blocks for record in loads_block(protocol.payload_bytes(block))])

    def _ended(self, positions: Collection[int], direct: Collection[int] = ()) -> None:
        """The run that was to finish these jobs ended: those it did not finish did not run,
        unless their results were all sent here and are on their way (`direct`): those are
        waited for (result_wait)."""
        on_their_way = {i for i in positions if i in direct and not self._complete[i]}
        if on_their_way:
            self._awaiting |= on_their_way
            self._awaiting_until = time.monotonic() + self.client.settings.result_wait
        for position in sorted(set(positions) - on_their_way):
            if not self._complete[position]:  # the scheduler never finished it: say so, do not drop it silently
                batch = self.first_batch + position
                job_id = self.jobs[position].job_id
                self._settle(position, JobError(job_id, "cancelled", f"batch {batch} did not run (the run ended first)"))

    def _settle(self, i: int, outcome: Any) -> None:
        if self._complete[i]:
            return
        self._direct.forget(i)
        self._awaiting.discard(i)
        self._outcome[i] = outcome
        self._complete[i] = True
        self.stats.batch_done[i] = time.perf_counter() - self.stats.submitted


def job_error(msg: JobFailed) -> JobError:
    if msg.kind == "task":
        return TaskError(msg.job_id, msg.message, msg.error_type, msg.traceback, msg.stage_id, msg.partition, msg.batch)
    if msg.kind == "executor_lost":
        return ExecutorLostError(msg.job_id, msg.kind, msg.message, msg.stage_id, msg.partition, msg.batch)
    return JobError(msg.job_id, msg.kind, msg.message, msg.stage_id, msg.partition, msg.batch)
