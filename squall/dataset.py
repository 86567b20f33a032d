"""Datasets: immutable, lazily evaluated plans over partitioned records.

Every transformation adds one node to the plan and serializes its function right away, so a
function that cannot be shipped fails where it is written, before anything runs. Actions
(collect, count, reduce, sum, take, first, save_as_text_files) submit the plan as one job;
sort_by runs one of its own first, a sample of the keys that places the partitions' bounds.
A dataset holds the last node of its lineage (squall.lineage), which leads to the others: a job
sends the scheduler its whole plan, or with plan deltas only the nodes it has not had yet.
"""

from __future__ import annotations

import functools
import math
import os
import uuid
from collections.abc import Callable, Container, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from squall import lineage, ops
from squall.common.plan import (
    MAX_PARTITIONS,
    Aggregator,
    CheckpointSource,
    CoGroupNode,
    LogicalPlan,
    NarrowNode,
    PersistNode,
    PlanDelta,
    PlanNode,
    RangePartitioner,
    ShuffleNode,
    SourceNode,
    StateNode,
    UnionNode,
)
from squall.common.protocol import Priority
from squall.common.serialization import SerializationError, dumps_block, dumps_function
from squall.lineage import PlanVertex
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

    def __init__(self, ctx: Connection, vertex: PlanVertex, partitions: int, hash_partitions: int | None = None) -> None:
        self.ctx = ctx
        self.vertex = vertex  # its last plan node, which leads to the whole lineage
        self.partitions = partitions
        # n when the records are (key, value) pairs, each in partition partition_of(key, n) (after
        # a shuffle by key, kept by operations that keep keys where they are); None when unknown.
        # A cogroup or join reads a side partitioned as its result one-to-one, without a shuffle.
        self.hash_partitions = hash_partitions

    @classmethod
    def from_nodes(cls, ctx: Connection, nodes: Sequence[PlanNode], partitions: int, hash_partitions: int | None = None) -> Dataset:
        """The dataset of the last of `nodes`, a plan's node list (as `nodes` gives it)."""
        return cls(ctx, lineage.from_nodes(nodes), partitions, hash_partitions)

    def __repr__(self) -> str:
        return f"<Dataset {type(self.vertex.node).__name__} {self.vertex.id} partitions={self.partitions}>"

    @property
    def nodes(self) -> tuple[PlanNode, ...]:
        """Its lineage as a plan's node list: each node after those it reads, its own last."""
        return tuple(lineage.plan_nodes(self.vertex))

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

    # --- several datasets: union, cogroup, join -----------------------------------------------

    def union(self, *others: Dataset) -> Dataset:
        """Every record of this dataset and of `others`, without a shuffle: the partitions of this
        dataset, then those of each other in turn (Spark's union)."""
        sides = self._merged(others, "union")
        partitions = self.partitions + sum(o.partitions for o in others)
        if partitions > MAX_PARTITIONS:
            raise ValueError(f"a union of {partitions} partitions is more than {MAX_PARTITIONS}")
        return Dataset(self.ctx, PlanVertex(UnionNode(parents=list(range(len(sides)))), sides), partitions)

    def cogroup(self, *others: Dataset, partitions: int | None = None) -> Dataset:
        """(key, value) records of this dataset and `others` -> (key, (values here, values in the
        first other, ...)), a list per dataset (empty where the key is missing), for every key of
        any of them, in `partitions` partitions (default: the largest count of a dataset already
        partitioned by key, else the largest partition count). A dataset already partitioned by
        key into that many partitions (made by reduce_by_key, group_by_key, cogroup or join, then
        only filtered or changed in its values) is read partition to partition, not shuffled."""
        vertices = self._merged(others, "cogroup")
        sides = (self, *others)
        n = _partition_count(_cogroup_partitions(sides) if partitions is None else partitions)
        shuffled = [side.hash_partitions != n for side in sides]
        node = CoGroupNode(parents=list(range(len(sides))), partitions=n, shuffled=shuffled)
        return Dataset(self.ctx, PlanVertex(node, vertices), n, hash_partitions=n)

    def join(self, other: Dataset, how: str = "inner", partitions: int | None = None) -> Dataset:
        """(key, a) here and (key, b) in `other` -> (key, (a, b)) for every such pair. how="left"
        also gives (key, (a, None)) for keys missing from `other`, "right" (key, (None, b)) for
        keys missing here; "inner" (the default) neither. Partitions as in cogroup, which it is,
        followed by a pairing of the two lists; any other `how` raises ValueError."""
        if how not in ops.JOINS:
            raise ValueError(f"how must be one of {', '.join(map(repr, ops.JOINS))}, got {how!r}")
        _check_dataset(other, "join")
        grouped = self.cogroup(other, partitions=partitions)
        return grouped._narrow_raw(functools.partial(ops.join_op, how), keeps_partitioning=True)

    def _merged(self, others: tuple[Dataset, ...], what: str) -> list[PlanVertex]:
        """The plan nodes of this dataset and the others, checked to be datasets of this context.
        A node reached from several of them (same operation on the same parents: the same id)
        is one node of the plan: a dataset used on two sides is planned once per stage, and its
        source is never sent twice."""
        for other in others:
            _check_dataset(other, what)
            if other.ctx is not self.ctx:
                raise ValueError(f"{what} needs datasets of the same context")
        return [self.vertex, *(other.vertex for other in others)]

    def _update_state(self, fn: Any, state_id: str, kind: str = "keyed") -> Dataset:
        """Keyed state after a group_by_key (streams only: see Stream.update_state_by_key)."""
        if kind == "keyed":
            _check_callable(fn)
        node = StateNode(parent=0, fn=self.ctx.register_code(_dumps(fn)), state_id=state_id, kind=kind)  # type: ignore[arg-type]
        return self._with(node, self.partitions, self.hash_partitions)

    # --- persistence ----------------------------------------------------------------------------

    def persist(self) -> Dataset:
        """Keep this dataset's partitions in executor memory once a job has computed them, so later
        jobs read them instead of computing them again; returns this dataset.

        As in Spark, it marks this dataset itself (datasets made from it from now on read the
        kept partitions); nothing runs until an action. Partitions go to the executors that
        compute them, within each executor's budget (persist_memory): past it the least recently
        used ones are dropped, and computed again from their lineage when a job needs them, as
        are those of an executor that is lost. Calling it again does nothing."""
        if not isinstance(self.vertex.node, PersistNode):
            self.vertex = PlanVertex(PersistNode(parent=0, dataset_id=uuid.uuid4().hex), [self.vertex])
        return self

    def cache(self) -> Dataset:
        """persist(), as Spark names it."""
        return self.persist()

    @property
    def is_persisted(self) -> bool:
        """Whether persist() marked this dataset (and unpersist() did not clear it since)."""
        return isinstance(self.vertex.node, PersistNode)

    def unpersist(self) -> Dataset:
        """Drop this dataset's kept partitions from every executor (at once: nothing waits for
        it), and stop keeping them: later jobs compute it from its lineage. Datasets made from it
        while it was persisted compute it too. Returns this dataset; on a dataset not persisted
        it does nothing."""
        last = self.vertex.node
        if isinstance(last, PersistNode):
            self.vertex = self.vertex.parents[0]  # persist() put it on top
            self.ctx.unpersist([last.dataset_id])
        return self

    def checkpoint(self, priority: Priority = "batch") -> Dataset:
        """Write this dataset's partitions to the cluster's checkpoint store now, and from now on
        read them from there instead of computing them from its lineage, which is cut; returns
        this dataset (marked in place, as Spark's checkpoint; but written at once, by a job run
        with `priority` as in collect, not at the next action).

        Each task writes its partition before it reports, whole or not at all, to its executor's
        checkpoint_dir: every executor must see the same one (a shared volume across machines),
        so that any can read what another wrote, after that one is lost too. The dataset keeps
        its partitions and their partitioning by key (a cogroup or join still reads it without a
        shuffle), and stays persisted if it was (the kept partitions stay; one lost is read from
        the checkpoint). Datasets made from it before keep the old lineage. A job that finds a
        partition missing or damaged in the store fails with a TaskError naming it. Checkpoints
        stay in the store: nothing deletes them."""
        check_priority(priority)
        checkpoint_id = uuid.uuid4().hex
        self._narrow_raw(functools.partial(ops.checkpoint_op, checkpoint_id)).collect(priority)
        source = PlanVertex(SourceNode(source=CheckpointSource(checkpoint_id=checkpoint_id, partitions=self.partitions)))
        last = self.vertex.node
        self.vertex = PlanVertex(PersistNode(parent=0, dataset_id=last.dataset_id), [source]) if isinstance(last, PersistNode) else source
        return self

    # --- actions --------------------------------------------------------------------------------

    def plan(self) -> LogicalPlan:
        """The logical plan the scheduler is sent for this dataset (its nodes and broadcasts)."""
        return LogicalPlan(nodes=lineage.plan_nodes(self.vertex), broadcasts=list(self.ctx.broadcasts))

    def delta(self, sent: Container[str], sending: set[str]) -> PlanDelta:
        """What a job on this dataset sends with plan deltas: the nodes of its lineage neither in
        `sent` (ids the scheduler has from this driver) nor in `sending` (ids an earlier job of
        the same submission carries; this one's are added), and its broadcasts."""
        return lineage.delta(self.vertex, sent, sending, list(self.ctx.broadcasts))

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
        # partitioned by key stays so (and a cogroup or join need not shuffle it).
        _check_callable(fn)
        if self.ctx.settings.bad_records == "skip":
            adapter = ops.SKIPPING.get(adapter, adapter)  # per-record functions skip and count
        try:
            blob = dumps_function(functools.partial(adapter, fn))
        except SerializationError as exc:
            raise SerializationError(f"cannot ship {_name(fn)} to executors: {exc.__cause__ or exc}") from exc
        node = NarrowNode(parent=0, fn=self.ctx.register_code(blob))
        return self._with(node, self.partitions, self.hash_partitions if keeps_partitioning else None)

    def _narrow_raw(self, partition_fn: Callable[[Iterator[Any]], Iterable[Any]], *, keeps_partitioning: bool = False) -> Dataset:
        key = self.ctx.register_code(_dumps(partition_fn))
        return self._with(NarrowNode(parent=0, fn=key), self.partitions,
                          self.hash_partitions if keeps_partitioning else None)

    def _shuffle(self, aggregator: Aggregator, partitions: int | None, partitioner: RangePartitioner | None = None) -> Dataset:
        n = _partition_count(self.partitions if partitions is None else partitions)
        node = ShuffleNode(parent=0, partitions=n, aggregator=aggregator, partitioner=partitioner)
        return self._with(node, n, n if partitioner is None else None)  # by range, it is not partitioned by hash

    def _with(self, node: PlanNode, partitions: int, hash_partitions: int | None = None) -> Dataset:
        """A dataset of `node` reading this one (its parent field numbered 0)."""
        return Dataset(self.ctx, PlanVertex(node, [self.vertex]), partitions, hash_partitions)


def _check_dataset(other: object, what: str) -> None:
    if not isinstance(other, Dataset):
        raise TypeError(f"{what} takes datasets, got {type(other).__name__}: {other!r:.100}")


def _cogroup_partitions(sides: tuple[Dataset, ...]) -> int:
    """Spark's default: the largest partitioned side's count (so it need not move), else the
    largest side's."""
    partitioned = [side.hash_partitions for side in sides if side.hash_partitions is not None]
    return max(partitioned) if partitioned else max(side.partitions for side in sides)


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
