"""Datasets: immutable, lazily evaluated plans over partitioned records.

Every transformation adds one node to the plan and serializes its function right away, so a
function that cannot be shipped fails where it is written, before anything runs. Actions
(collect, count, reduce) submit the plan as one job.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from squall import ops
from squall.common.plan import Aggregator, LogicalPlan, NarrowNode, PlanNode, ShuffleNode, StateNode
from squall.common.protocol import Priority
from squall.common.serialization import SerializationError, dumps_function
from squall.runs import check_priority

if TYPE_CHECKING:
    from squall.connection import Connection


class Dataset:
    """An immutable, lazy plan over records in `partitions` partitions (made by Context.range,
    Context.parallelize, or a transformation of another Dataset).

    Transformations return a new Dataset and run nothing; actions (collect, count, reduce) run
    the plan as one job. A function that cannot be pickled raises SerializationError where the
    transformation is written; a failing job raises squall.JobError (TaskError for a user error).
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
        return self._narrow(ops.filter_op, fn)

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

    # --- plumbing -------------------------------------------------------------------------------

    def _narrow(self, adapter: Callable[..., Any], fn: Callable[..., Any]) -> Dataset:
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

    def _shuffle(self, aggregator: Aggregator, partitions: int | None) -> Dataset:
        n = self.partitions if partitions is None else partitions
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"partitions must be a positive integer, got {n!r}")
        return self._with(ShuffleNode(parent=len(self.nodes) - 1, partitions=n, aggregator=aggregator), n)

    def _with(self, node: PlanNode, partitions: int) -> Dataset:
        return Dataset(self.ctx, (*self.nodes, node), partitions)


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
