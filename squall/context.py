"""`connect()` and the Context: the driver's entry point to a cluster."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from squall.broadcast import Broadcast
from squall.client import Client
from squall.common.plan import CollectionSource, RangeSource, SourceNode, code_key
from squall.common.protocol import ClusterStatus, Metrics
from squall.common.serialization import SerializationError, dumps_block, dumps_function
from squall.common.settings import Settings
from squall.dataset import Dataset
from squall.errors import JobError
from squall.runs import Errors, Run, RunStats
from squall.sources import StreamSource
from squall.stream import Stream

if TYPE_CHECKING:
    from squall.local import LocalCluster


class Context:
    """A driver's connection to one cluster (make it with squall.connect or LocalCluster.connect).

    Makes datasets (range, parallelize) and streams (stream), runs them as jobs, and holds the
    code and broadcast values they use. Use it as a context manager, or call close() when done.
    Calls that reach the scheduler raise squall.ConnectionError when it cannot be reached, and
    after close() (this context is closed).
    """

    def __init__(self, address: str | LocalCluster, settings: Settings | None = None) -> None:
        if not isinstance(address, str):  # a LocalCluster: its address, and its keys
            address, settings = _cluster_address(address), settings or address.settings
        self.settings = settings or Settings.from_env()
        self.address = address
        self.client = Client(address, self.settings)
        self.code: dict[str, bytes] = {}  # every function this context's datasets use, by code key
        self.broadcasts: list[str] = []  # keys of this context's broadcast values
        self.last_run: RunStats | None = None

    def __enter__(self) -> Context:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection to the scheduler (leaving a `with` block does this)."""
        self.client.close()

    def status(self) -> ClusterStatus:
        """The cluster as the scheduler sees it now: `executors` (id, address, task slots, ...)
        and `running_jobs`."""
        return self.client.status()

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

    def register_code(self, blob: bytes) -> str:
        """Keep a serialized function (or broadcast value) for the jobs that use it; returns its
        content key. Datasets call this themselves: users do not need to."""
        key = code_key(blob)
        self.code.setdefault(key, blob)
        return key

    @property
    def default_parallelism(self) -> int:
        """Task slots in the cluster right now (at least 2)."""
        return max(2, sum(e.slots for e in self.status().executors))

    # --- sources --------------------------------------------------------------------------------

    def range(self, start: int, stop: int | None = None, step: int = 1, partitions: int | None = None) -> Dataset:
        """A dataset of the integers of range(start, stop, step) (range(n) with one argument), made
        on the executors, in `partitions` partitions (default: default_parallelism). Raises
        ValueError for a zero step or a partition count that is not a positive integer."""
        if stop is None:
            start, stop = 0, start
        if step == 0:
            raise ValueError("range() step must not be zero")
        n = self._partitions(partitions)
        return Dataset(self, (SourceNode(source=RangeSource(start=start, stop=stop, step=step, partitions=n)),), n)

    def parallelize(self, data: Iterable[Any], partitions: int | None = None) -> Dataset:
        """A dataset of the driver's own records, split into `partitions` contiguous slices
        (default: default_parallelism). The records are pickled now and shipped with the job."""
        items = list(data)
        n = self._partitions(partitions)
        slices = [dumps_block(items[len(items) * i // n : len(items) * (i + 1) // n]) for i in range(n)]
        return Dataset(self, (SourceNode(source=CollectionSource(slices=slices)),), n)

    # --- running --------------------------------------------------------------------------------

    def run_jobs(
        self,
        datasets: Sequence[Dataset],
        group_size: int | None = None,
        preschedule: bool | None = None,
        barrier: bool | None = None,
        errors: Errors = "raise",
    ) -> list[Any]:
        """Collect every dataset, as micro-batches of one run (Drizzle's runJobs).

        Pre-scheduled (the default), the jobs are dispatched `group_size` at a time, each group
        with one message per executor. Results come back in order. With errors="raise", the first
        failed job's error is raised after the whole run has finished; with errors="return", it
        takes that job's place in the list.
        """
        outcomes = list(self.iter_jobs(datasets, group_size, preschedule, barrier, errors="return"))
        if errors == "raise":
            for outcome in outcomes:
                if isinstance(outcome, JobError):
                    raise outcome
        return outcomes

    def iter_jobs(
        self,
        datasets: Sequence[Dataset],
        group_size: int | None = None,
        preschedule: bool | None = None,
        barrier: bool | None = None,
        errors: Errors = "raise",
        not_before: Sequence[float] | None = None,
        first_batch: int = 0,
        replays: Sequence[Dataset] = (),
        replay_from: int = 0,
        resume_states: dict[str, int] | None = None,
    ) -> Iterator[Any]:
        """Like run_jobs, yielding each job's result the moment it (and those before it) is done.
        Leaving the loop early (or a Ctrl-C) cancels the run: queued jobs are dropped and running
        tasks stop at their next record. `not_before` (wall-clock
        times, one per dataset) holds each job's source tasks until then; `first_batch` numbers
        the batches in errors and placement (a stream's batch index). Streams resuming on a
        restarted scheduler send `replays` (batches replay_from, replay_from + 1, ... that only
        rebuild keyed state) and `resume_states` (state id -> the batch its checkpoints reach)."""
        plans = [d.plan() for d in datasets]
        replay_plans = [d.plan() for d in replays]
        code = {k: self.code[k] for plan in [*plans, *replay_plans] for k in plan.code_keys()}
        run = Run(
            self.client,
            plans,
            code,
            group_size=self.settings.group_size if group_size is None else group_size,
            preschedule=self.settings.preschedule if preschedule is None else preschedule,
            barrier=self.settings.barrier if barrier is None else barrier,
            not_before=list(not_before) if not_before is not None else None,
            first_batch=first_batch,
            replays=replay_plans,
            replay_from=replay_from,
            resume_states=resume_states,
        )
        self.last_run = run.stats
        if not plans:
            return iter(())
        return run.results(errors)

    def stream(self, source: StreamSource, batch_interval: float = 0.1, group_size: int | str = "auto") -> Stream:
        """A stream of micro-batches of `batch_interval` seconds from a replayable source
        (squall.sources.rate / generator / directory), run in Drizzle groups of `group_size` batches, or
        with "auto" a size tuned as it runs (settings group_overhead_lower/upper, group_max_seconds)."""
        return Stream(self, source, batch_interval, group_size)

    def _partitions(self, partitions: int | None) -> int:
        n = self.default_parallelism if partitions is None else partitions
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"partitions must be a positive integer, got {n!r}")
        return n


def connect(address: str | LocalCluster, settings: Settings | None = None) -> Context:
    """Connect to the scheduler at `address` (e.g. "tcp://host:7077"), or to a LocalCluster, and
    return a Context.

    `settings` default to Settings.from_env() (SQUALL_* environment variables), which must hold
    the cluster's CurveZMQ keys unless it runs plaintext; a LocalCluster brings its own keys.
    Raises squall.ConnectionError at once when the address is malformed, the keys differ, or the
    peer is not a scheduler, and after settings.connect_timeout when nothing answers."""
    return Context(address, settings)


def _cluster_address(cluster: Any) -> str:
    address = getattr(cluster, "address", None)
    if not isinstance(address, str) or not hasattr(cluster, "settings"):
        raise TypeError(f"connect() takes a scheduler address (tcp://host:port) or a LocalCluster, not {type(cluster).__name__}")
    return address
