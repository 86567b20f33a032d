"""The driver's connection to a cluster: the code and broadcast values its plans use, and running
those plans as jobs. Context (squall.context) builds datasets and streams on it; Dataset and Stream
hold the Connection they run on, so they need nothing above this module."""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any, Self

from squall.broadcast import Broadcast
from squall.client import Client
from squall.common.plan import code_key
from squall.common.protocol import ClusterStatus, Metrics, Priority
from squall.common.serialization import SerializationError, dumps_function
from squall.common.settings import Settings
from squall.errors import JobError
from squall.runs import DriverRun, Errors, Planned, RunStats, check_priority


class Connection:
    """A driver's connection to the scheduler at `address`, with `settings` (default
    Settings.from_env()). Runs plans as jobs and holds the code and broadcast values they use.
    Calls that reach the scheduler raise squall.ConnectionError when it cannot be reached, and
    after close()."""

    def __init__(self, address: str, settings: Settings | None = None) -> None:
        self.settings = settings or Settings.from_env()
        self.address = address
        self.client = Client(address, self.settings)
        self.code: dict[str, bytes] = {}  # every function this connection's plans use, by code key
        self.broadcasts: list[str] = []  # keys of this connection's broadcast values
        self.last_run: RunStats | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection to the scheduler (leaving a `with` block does this)."""
        self.client.close()

    def status(self) -> ClusterStatus:
        """The cluster as the scheduler sees it now: `executors` (id, address, task slots, ...,
        and latency_tasks, batch_tasks, suspended_tasks: the tasks each held by priority as its
        last heartbeat told) and `running_jobs`."""
        return self.client.status()

    def snapshot(self) -> dict[str, Any]:
        """The cluster as the scheduler sees it now, as a dict: its executors (tasks, memory,
        persisted bytes), streams with their recent batches, runs in flight with their progress,
        persisted datasets and recent events (docs/observability.md lists the fields). What the
        dashboard and `squall status` show."""
        return self.client.snapshot()

    def metrics(self) -> Metrics:
        """How many messages of each type the scheduler has received and sent."""
        return self.client.metrics()

    def broadcast(self, value: Any) -> Broadcast:
        """A read-only value for tasks: pickled once, sent to each executor once, cached there.
        Use `handle.value` inside functions."""
        try:
            blob = dumps_function(value)
        except SerializationError as exc:
            raise SerializationError(f"cannot broadcast {type(value).__name__}: {exc.__cause__ or exc}") from exc
        key = self.register_code(blob)
        if key not in self.broadcasts:
            self.broadcasts.append(key)
        return Broadcast(key, value, local=True)

    def unpersist(self, dataset_ids: list[str]) -> None:
        """The cluster may drop these persisted datasets' blocks (Dataset.unpersist)."""
        self.client.forget_persisted(dataset_ids)

    def register_code(self, blob: bytes) -> str:
        """Keep a serialized function (or broadcast value) for the jobs that use it; returns its
        content key. Datasets call this themselves: users do not need to."""
        key = code_key(blob)
        self.code.setdefault(key, blob)
        return key

    # --- running --------------------------------------------------------------------------------

    def run_jobs(self, datasets: Sequence[Planned], group_size: int | None = None, preschedule: bool | None = None,
                 barrier: bool | None = None, errors: Errors = "raise", priority: Priority = "latency") -> list[Any]:
        """Collect every dataset, as micro-batches of one run (Drizzle's runJobs).

        Pre-scheduled (the default), the jobs are dispatched `group_size` at a time, each group
        with one message per executor. Results come back in order. With errors="raise", the first
        failed job's error is raised after the whole run has finished; with errors="return", it
        takes that job's place in the list.

        `priority` is "latency" (the default) or "batch": on an executor, latency tasks run first
        and suspend batch tasks (settings.preemption), and the scheduler places each kind away
        from executors busy with the other (settings.lc_placement). Any other value raises
        ValueError before anything is sent.
        """
        outcomes = list(self.iter_jobs(datasets, group_size, preschedule, barrier, errors="return", priority=priority))
        if errors == "raise":
            for outcome in outcomes:
                if isinstance(outcome, JobError):
                    raise outcome
        return outcomes

    def iter_jobs(
        self,
        datasets: Sequence[Planned],
        group_size: int | None = None,
        preschedule: bool | None = None,
        barrier: bool | None = None,
        errors: Errors = "raise",
        not_before: Sequence[float] | None = None,
        first_batch: int = 0,
        replays: Sequence[Planned] = (),
        replay_from: int = 0,
        resume_states: dict[str, int] | None = None,
        priority: Priority = "latency",
        deltas: bool | None = None,
    ) -> Generator[Any, None, None]:
        """Like run_jobs, yielding each job's result the moment it (and those before it) is done.
        Leaving the loop early (or a Ctrl-C) cancels the run: queued jobs are dropped and running
        tasks stop at their next record. `not_before` (wall-clock
        times, one per dataset) holds each job's source tasks until then; `first_batch` numbers
        the batches in errors and placement (a stream's batch index). Streams resuming on a
        restarted scheduler send `replays` (batches replay_from, replay_from + 1, ... that only
        rebuild keyed state) and `resume_states` (state id -> the batch its checkpoints reach).
        `priority` ("latency" by default, or "batch") is as in run_jobs, and so is its ValueError:
        raised by this call, not when iterating. `deltas` (default: the plan_deltas setting)
        sends only the plan nodes the scheduler has not had from this driver."""
        check_priority(priority)
        run = DriverRun(
            self.client,
            datasets,
            self.code,
            group_size=self.settings.group_size if group_size is None else group_size,
            preschedule=self.settings.preschedule if preschedule is None else preschedule,
            barrier=self.settings.barrier if barrier is None else barrier,
            not_before=list(not_before) if not_before is not None else None,
            first_batch=first_batch,
            replays=replays,
            replay_from=replay_from,
            resume_states=resume_states,
            priority=priority,
            deltas=self.settings.plan_deltas if deltas is None else deltas,
        )
        self.last_run = run.stats
        if not datasets:
            return _no_outcomes()
        return run.results(errors)


def _no_outcomes() -> Generator[Any, None, None]:
    """The outcomes of a run of no jobs: a generator like any run's, so callers may close() it."""
    yield from ()
