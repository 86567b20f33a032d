"""`connect()` and the Context: the driver's entry point to a cluster, where datasets and streams
are made (running them is the Connection's, squall.connection)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any, Protocol

from squall.common import text_files
from squall.common.plan import CollectionSource, RangeSource, SourceNode, TextFileSource
from squall.common.protocol import Priority
from squall.common.serialization import dumps_block
from squall.common.settings import Settings
from squall.connection import Connection
from squall.dataset import Dataset
from squall.lineage import PlanVertex
from squall.sources import StreamSource
from squall.stream import Stream


class RunningCluster(Protocol):
    """A cluster connect() can take instead of an address (a LocalCluster): where its scheduler
    listens and the settings (keys included) its members share."""

    @property
    def address(self) -> str:
        """The scheduler's address (tcp://host:port)."""
        ...

    @property
    def settings(self) -> Settings:
        """The settings the cluster's members share (its keys among them)."""
        ...


class Context(Connection):
    """A driver's connection to one cluster (make it with squall.connect or LocalCluster.connect).

    Makes datasets (range, parallelize, text_file) and streams (stream), runs them as jobs, and holds the
    code and broadcast values they use. Use it as a context manager, or call close() when done.
    Calls that reach the scheduler raise squall.ConnectionError when it cannot be reached, and
    after close() (this context is closed).
    """

    def __init__(self, address: str | RunningCluster, settings: Settings | None = None) -> None:
        if not isinstance(address, str):  # a LocalCluster: its address, and its keys
            cluster = address
            address = _cluster_address(cluster)
            settings = settings or cluster.settings
        super().__init__(address, settings)

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
        return Dataset(self, PlanVertex(SourceNode(source=RangeSource(start=start, stop=stop, step=step, partitions=n))), n)

    def parallelize(self, data: Iterable[Any], partitions: int | None = None) -> Dataset:
        """A dataset of the driver's own records, split into `partitions` contiguous slices
        (default: default_parallelism). The records are pickled now and shipped with the job."""
        items = list(data)
        n = self._partitions(partitions)
        slices = [dumps_block(items[len(items) * i // n : len(items) * (i + 1) // n]) for i in range(n)]
        return Dataset(self, PlanVertex(SourceNode(source=CollectionSource(slices=slices))), n)

    def text_file(self, path: str | os.PathLike[str], partitions: int | None = None) -> Dataset:
        """A dataset of the lines of text files (UTF-8, without their newlines), read by the
        executors: `path` is a file, a directory (its files, but for those whose names start with
        "." or "_") or a glob pattern, expanded here and sorted; FileNotFoundError names it when
        nothing matches. The executors open the same paths, so the files must be there too (the
        same machine, or a shared volume).

        The files are split by byte ranges into at least `partitions` partitions (default:
        default_parallelism), at least one per file, each file's share by its size; a line belongs
        to the range its first byte is in, so a big file is read by many tasks. A line that is not
        UTF-8 fails its task with TextDecodeError naming the file."""
        pattern = os.fspath(path)
        files = text_files.expand(pattern)
        n = self._partitions(partitions)
        source = TextFileSource(splits=text_files.plan_splits([(file, os.path.getsize(file)) for file in files], n))
        return Dataset(self, PlanVertex(SourceNode(source=source)), source.partitions)

    def stream(self, source: StreamSource, batch_interval: float = 0.1, group_size: int | str = "auto",
               priority: Priority = "latency") -> Stream:
        """A stream of micro-batches of `batch_interval` seconds from a replayable source
        (squall.sources.rate / generator / directory), run in Drizzle groups of `group_size` batches, or
        with "auto" a size tuned as it runs (settings group_overhead_lower/upper, group_max_seconds).
        Every batch runs with `priority`: "latency" (the default) tasks suspend "batch" tasks on an
        executor (settings.preemption); "batch" suits a backfill that must not hold up other
        streams. Any other value raises ValueError here."""
        return Stream(self, source, batch_interval, group_size, priority=priority)

    def _partitions(self, partitions: int | None) -> int:
        n = self.default_parallelism if partitions is None else partitions
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"partitions must be a positive integer, got {n!r}")
        return n


def connect(address: str | RunningCluster, settings: Settings | None = None) -> Context:
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
