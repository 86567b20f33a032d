"""Datasets: immutable, lazily evaluated plans over partitioned records.

Every transformation adds one node to the plan and serializes its function right away, so a
function that cannot be shipped fails where it is written, before anything runs. Actions
(collect, count, reduce, sum, take, first, save_as_text_files) submit the plan as one job;
sort_by runs one of its own first, a sample of the keys that places the partitions' bounds.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from squall import ops
from squall.common.plan import Aggregator, LogicalPlan, NarrowNode, PlanNode, RangePartitioner, ShuffleNode, StateNode
from squall.common.protocol import Priority
from squall.common.serialization import SerializationError, dumps_block, dumps_function
from squall.runs import check_priority

if TYPE_CHECKING:
    from squall.connection import Connection


class Dataset:
    """An immutable, lazy plan over records in `partitions` partitions (made by Context.range,
    Context.parallelize, Context.text_file, or a transformation of another Dataset).

    Transformations return a new Dataset and run nothing (but sort_by, which samples its keys);
    actions (collect, count, reduce, sum, take, first, save_as_text_files) run the plan as one
    job. A function that cannot be pickled raises SerializationError where the transformation is
    written; a failing job raises squall.JobError (TaskError for a user error).
    """

    def __init__(self, ctx: Connection, nodes: tuple[PlanNode, ...], partitions: int) -> None:
        self.ctx = ctx
        self.nodes = nodes
        self.partitions = partitions

    def __repr__(self) -> str:
        return f"<Dataset nodes={len(self.nodes)} partitions={self.partitions}>"

    # --- narrow transformations -----------------------------------------------------------------

    def map(self, fn: Callable[[Any], Any]) -> Dataset:
        """fn(record) for every record."""
        return self._narrow(ops.map_op, fn)

    def flat_map(self, fn: Callable[[Any], Iterable[Any]]) -> Dataset:
        """Every element of fn(record), for every record."""
        return self._narrow(ops.flat_map_op, fn)

    def filter(self, fn: Callable[[Any], bool]) -> Dataset:
        """The records for which fn(record) is true."""
        return self._narrow(ops.filter_op, fn, keeps_partitioning=True)

    def map_partitions(self, fn: Callable[[Iterator[Any]], Iterable[Any]]) -> Dataset:
        """fn(iterator over a partition's records) -> that partition's new records, once per partition."""
        return self._narrow(ops.partition_op, fn)

    # --- shuffles -------------------------------------------------------------------------------

    def reduce_by_key(self, fn: Callable[[Any, Any], Any], partitions: int | None = None) -> Dataset:
        """(key, value) records -> one (key, combined value) per key: values combined with fn(a, b)
        (associative), map-side first, into `partitions` partitions (default: as many as now)."""
        _check_callable(fn)
        return self._shuffle(Aggregator(kind="reduce", fn=self.ctx.register_code(_dumps(fn))), partitions)

    def group_by_key(self, partitions: int | None = None) -> Dataset:
        """(key, value) records -> (key, [values]) for each key, in `partitions` partitions (default:
        as many as now). Value order within a key is not defined."""
        return self._shuffle(Aggregator(kind="group"), partitions)

    def _update_state(self, fn: Any, state_id: str, kind: str = "keyed") -> Dataset:
        """Keyed state after a group_by_key (streams only: see Stream.update_state_by_key)."""
        if kind == "keyed":
            _check_callable(fn)
        node = StateNode(parent=len(self.nodes) - 1, fn=self.ctx.register_code(_dumps(fn)), state_id=state_id, kind=kind)  # type: ignore[arg-type]
        return self._with(node, self.partitions)

    # --- actions --------------------------------------------------------------------------------

    def plan(self) -> LogicalPlan:
        """The logical plan the scheduler is sent for this dataset (its nodes and broadcasts)."""
        return LogicalPlan(nodes=list(self.nodes), broadcasts=list(self.ctx.broadcasts))

    def collect(self, priority: Priority = "batch") -> list[Any]:
        """Run the plan and return every record, partition after partition; raises JobError if it fails.

        `priority` is "batch" (the default) or "latency": latency tasks run first on an executor
        and suspend batch tasks there (settings.preemption), so a batch action never holds up a
        stream. Any other value raises ValueError before anything runs."""
        return self.ctx.run_jobs([self], group_size=1, priority=check_priority(priority))[0]  # type: ignore[no-any-return]

    def count(self, priority: Priority = "batch") -> int:
        """Run the plan and return how many records it makes (counted on the executors), with
        `priority` as in collect."""
        check_priority(priority)
        return sum(self._narrow_raw(ops.count_op).collect(priority))

    def reduce(self, fn: Callable[[Any, Any], Any], priority: Priority = "batch") -> Any:
        """Run the plan and combine all records with fn(a, b) (associative), each partition on its
        executor first, with `priority` as in collect; raises ValueError for an empty dataset."""
        check_priority(priority)
        partials = self._narrow(ops.reduce_op, fn).collect(priority)
        if not partials:
            raise ValueError("reduce() of an empty dataset")
        return functools.reduce(fn, partials)

    # --- key-value, set and ordering operators ---------------------------------------------------

    def map_values(self, fn: Callable[[Any], Any]) -> Dataset:
        """(key, value) records -> (key, fn(value)); a record that is not a pair fails its task
        with TypeError."""
        return self._narrow(ops.map_values_op, fn, keeps_partitioning=True)

    def flat_map_values(self, fn: Callable[[Any], Iterable[Any]]) -> Dataset:
        """(key, value) records -> (key, v) for every v of fn(value); a record that is not a pair
        fails its task with TypeError."""
        return self._narrow(ops.flat_map_values_op, fn, keeps_partitioning=True)

    def keys(self) -> Dataset:
        """The key of every (key, value) record."""
        return self._narrow_raw(ops.keys_op)

    def values(self) -> Dataset:
        """The value of every (key, value) record."""
        return self._narrow_raw(ops.values_op)

    def distinct(self, partitions: int | None = None) -> Dataset:
        """One of each record (records equal as dict keys are one: 1 and 1.0 too), through a
        shuffle into `partitions` partitions (default: as many as now). Records must be hashable."""
        keep_one = Aggregator(kind="reduce", fn=self.ctx.register_code(_dumps(ops.keep_first)))
        return self._narrow_raw(ops.as_key_op)._shuffle(keep_one, partitions)._narrow_raw(ops.keys_op)

    def sort_by(self, keyfunc: Callable[[Any], Any], ascending: bool = True, partitions: int | None = None) -> Dataset:
        """The records ordered by keyfunc(record) across `partitions` partitions (default: as many
        as now), so that collect() returns them sorted; records of equal keys come in no set order.

        As in Spark, the partitions are ranges of keys: this runs a job now that samples the keys
        (a bounded number per partition) to place the ranges' bounds. Keys must be hashable and
        compare with each other: keys that do not (say, ints among strs) raise TypeError here when
        the sample shows it, TaskError from the job otherwise."""
        _check_callable(keyfunc)
        if not isinstance(ascending, bool):
            raise TypeError(f"ascending must be True or False, got {ascending!r}")
        n = _partition_count(self.partitions if partitions is None else partitions)
        # Spark's sample size: 20 keys per output partition, thrice over, shared by the input partitions.
        per_partition = math.ceil(3 * min(20 * n, 1_000_000) / self.partitions)
        sample = self._narrow_raw(functools.partial(ops.sample_keys_op, keyfunc, per_partition)).collect()
        partitioner = RangePartitioner(bounds=dumps_block(_range_bounds(sample, n)), descending=not ascending)
        return (
            self._narrow_raw(functools.partial(ops.sort_key_op, keyfunc))
            ._shuffle(Aggregator(kind="group"), n, partitioner)
            ._narrow_raw(functools.partial(ops.sorted_groups_op, not ascending))
        )

    def sum(self, priority: Priority = "batch") -> Any:
        """Run the plan and add up its records (each partition on its executor first), with
        `priority` as in collect; 0 for an empty dataset."""
        check_priority(priority)
        return sum(self._narrow_raw(ops.sum_op).collect(priority))

    def take(self, n: int, priority: Priority = "batch") -> list[Any]:
        """Run the plan and return its first `n` records, partition after partition, with `priority`
        as in collect. Each partition sends at most n records. n=0 runs nothing; a negative n
        raises ValueError."""
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"take() needs an integer, got {type(n).__name__}: {n!r}")
        if n < 0:
            raise ValueError(f"take() needs a count of 0 or more, got {n}")
        check_priority(priority)
        if n == 0:
            return []
        return self._narrow_raw(functools.partial(ops.take_op, n)).collect(priority)[:n]

    def first(self, priority: Priority = "batch") -> Any:
        """Run the plan and return its first record (take(1)); raises ValueError for an empty dataset."""
        taken = self.take(1, priority)
        if not taken:
            raise ValueError("first() of an empty dataset")
        return taken[0]

    def save_as_text_files(self, directory: str | os.PathLike[str], priority: Priority = "batch") -> None:
        """Run the plan and write partition i's records, str(record) per line, to the file
        `directory`/part-NNNNN (i in five digits: part-00000, part-00001, ...), from the executor that computes it (so `directory` must be the same
        directory there: the same machine, or a shared volume). Each file appears whole or not at
        all (written under a hidden name, then renamed), and a task run again replaces its file.
        The directory is created; one that exists and is not empty raises FileExistsError before
        anything runs. Context.text_file(directory) reads the lines back."""
        path = os.path.abspath(os.fspath(directory))
        if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
            raise FileExistsError(f"{path} already exists and is not an empty directory")
        check_priority(priority)
        os.makedirs(path, exist_ok=True)
        self._narrow_raw(functools.partial(ops.save_text_op, path)).collect(priority)

    # --- plumbing -------------------------------------------------------------------------------

    def _narrow(self, adapter: Callable[..., Any], fn: Callable[..., Any], *, keeps_partitioning: bool = False) -> Dataset:
        # keeps_partitioning: the operation leaves every record's key as it was, so a dataset
        # partitioned by key would stay so. Nothing reads it yet.
        _check_callable(fn)
        if self.ctx.settings.bad_records == "skip":
            adapter = ops.SKIPPING.get(adapter, adapter)  # per-record functions skip and count
        try:
            blob = dumps_function(functools.partial(adapter, fn))
        except SerializationError as exc:
            raise SerializationError(f"cannot ship {_name(fn)} to executors: {exc.__cause__ or exc}") from exc
        return self._with(NarrowNode(parent=len(self.nodes) - 1, fn=self.ctx.register_code(blob)), self.partitions)

    def _narrow_raw(self, partition_fn: Callable[[Iterator[Any]], Iterable[Any]]) -> Dataset:
        key = self.ctx.register_code(_dumps(partition_fn))
        return self._with(NarrowNode(parent=len(self.nodes) - 1, fn=key), self.partitions)

    def _shuffle(self, aggregator: Aggregator, partitions: int | None, partitioner: RangePartitioner | None = None) -> Dataset:
        n = _partition_count(self.partitions if partitions is None else partitions)
        return self._with(ShuffleNode(parent=len(self.nodes) - 1, partitions=n, aggregator=aggregator, partitioner=partitioner), n)

    def _with(self, node: PlanNode, partitions: int) -> Dataset:
        return Dataset(self.ctx, (*self.nodes, node), partitions)


def _partition_count(n: object) -> int:
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"partitions must be a positive integer, got {n!r}")
    return n


def _range_bounds(sample: list[Any], partitions: int) -> list[Any]:
    """partitions - 1 keys that cut the sorted sample into equal parts (none for an empty sample)."""
    try:
        ordered = sorted(sample)
    except TypeError as exc:
        raise TypeError(f"sort_by keys must compare with each other: {exc}") from None
    if not ordered:
        return []
    return [ordered[len(ordered) * i // partitions] for i in range(1, partitions)]


def _check_callable(fn: object) -> None:
    if not callable(fn):
        raise TypeError(f"expected a function, got {type(fn).__name__}: {fn!r:.100}")


def _name(fn: Callable[..., Any]) -> str:
    return repr(getattr(fn, "__qualname__", None) or fn)


def _dumps(fn: Callable[..., Any]) -> bytes:
    try:
        return dumps_function(fn)
    except SerializationError as exc:
        raise SerializationError(f"cannot ship {_name(fn)} to executors: {exc.__cause__ or exc}") from exc
