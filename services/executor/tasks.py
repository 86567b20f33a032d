"""Running one task: read the stage input, apply its pipeline, write shuffle blocks or a result.

A persisted partition (PersistedInput) is read from its block when the task was given one;
otherwise it is computed from its lineage, and its block goes back with the task's output for
the executor to keep (TaskOutput.persisted).

Pure computation on the runner thread: no sockets. User code errors propagate to the caller, which
reports them with their traceback.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from squall.common import skips, task_partition, text_files
from squall.common.partitioning import partition_of
from squall.common.plan import (
    Aggregator,
    CoGroupInput,
    CollectionSource,
    GeneratorSource,
    PersistedInput,
    RangePartitioner,
    RangeSource,
    ResultWrite,
    ShuffleRead,
    ShuffleWrite,
    StageInput,
    StageSpec,
    TextFileSource,
    UnionInput,
)
from squall.common.serialization import SerializationError, dumps_block, loads_block, loads_function
from squall.common.stage_inputs import task_shuffles, union_branch
from squall.services.executor.persisted import MadeBlock
from squall.services.executor.safe_points import NEVER, StopSignal, TaskCancelled, TaskPreempted, checked

__all__ = ["BlockMissing", "CodeCache", "RecordError", "StateTables", "StopSignal", "TaskCancelled", "TaskOutput", "TaskPreempted",
           "run_task"]


class CodeCache:
    """User functions loaded once per code key, from the executor's store of pickled code."""

    def __init__(self, blobs: Mapping[str, bytes], limit: int = 4096) -> None:
        self._blobs = blobs
        self._fns: dict[str, Callable[..., Any]] = {}
        self._limit = limit

    def __len__(self) -> int:
        return len(self._fns)

    def load(self, key: str) -> Any:  # a user function, or a window's object (with .apply)
        fn = self._fns.get(key)
        if fn is None:
            blob = self._blobs.get(key)
            if blob is None:
                raise SerializationError(f"code {key} was never sent to this executor")
            if len(self._fns) >= self._limit:
                self._fns.clear()
            fn = self._fns[key] = loads_function(blob)
        return fn


@dataclass(frozen=True)
class TaskOutput:
    blocks: list[bytes]  # one per reduce partition (shuffle write) or exactly one (result)
    is_result: bool
    skipped: int = 0  # records user functions raised on, skipped (bad_records="skip")
    persisted: list[MadeBlock] = field(default_factory=list)  # persisted partitions the task computed, for the executor to keep

    @property
    def size(self) -> int:
        return sum(len(b) for b in self.blocks)


class RecordError(TypeError):
    """A record that does not fit what the stage expects (e.g. not a (key, value) pair)."""


class BlockMissing(LookupError):
    """A persisted partition the task must read as a block (it has no lineage here to compute it
    from) that it was not given: the scheduler placed the task wrong, and plans the job again."""


@dataclass
class _Reading:
    """What a task's input tree is read with, and (`made`) the persisted blocks it computes."""

    shuffles: Mapping[int, list[bytes | memoryview]]  # shuffle id -> the blocks read of it
    persisted: Mapping[str, bytes | memoryview]  # dataset id -> the block given
    code: CodeCache
    signal: StopSignal
    made: list[MadeBlock]


StateTables = dict[tuple[str, int], dict[Any, Any]]  # (state id, partition) -> key -> state


def run_task(
    spec: StageSpec,
    partition: int,
    inputs: list[bytes | memoryview],
    code: CodeCache,
    states: StateTables | None = None,
    batch: int = 0,
    discard_output: bool = False,
    signal: StopSignal | None = None,
    persisted: Mapping[str, bytes | memoryview] | None = None,
) -> TaskOutput:
    """Execute one task. `inputs` are the shuffle blocks this partition reads (empty otherwise);
    `states` holds the keyed state of this executor's stateful partitions; `batch` is the task's
    micro-batch (windows close at its end). `discard_output`: a rebuild of keyed state, whose
    records go nowhere, so they are run through but never serialized. `signal`: read at the safe
    points between records as they enter the pipeline and as they leave it (a step that reads its
    whole input first, or makes many records of one, can still be stopped or suspended there);
    see safe_points.py. `persisted`: the blocks of persisted partitions the task reads, by dataset
    id (TaskDescriptor.persisted); the others it reads it computes, and returns their blocks."""
    skips.reset()
    task_partition.enter(partition)
    made: list[MadeBlock] = []
    records: Iterable[Any] = read_input(spec, partition, inputs, code, signal or NEVER, persisted or {}, made)
    if signal is not None:
        records = checked(records, signal)
    if spec.state is not None:
        table = (states if states is not None else {}).setdefault((spec.state.state_id, partition), {})
        if spec.state.kind == "window":
            records = code.load(spec.state.fn).apply(records, table, batch)
        else:
            records = update_state(records, table, code.load(spec.state.fn))
    records = _pipeline(records, spec.ops, code)
    if signal is not None:
        records = checked(records, signal)
    if discard_output:
        for _ in records:
            pass
        return TaskOutput(blocks=[], is_result=isinstance(spec.output, ResultWrite), skipped=skips.count(), persisted=made)
    if isinstance(spec.output, ResultWrite):
        block = dumps_block(list(records))
        return TaskOutput(blocks=[block], is_result=True, skipped=skips.count(), persisted=made)
    blocks = write_shuffle(spec.output, records, code, signal or NEVER)
    return TaskOutput(blocks=blocks, is_result=False, skipped=skips.count(), persisted=made)


def read_input(spec: StageSpec, partition: int, inputs: list[bytes | memoryview], code: CodeCache,
               signal: StopSignal = NEVER, persisted: Mapping[str, bytes | memoryview] | None = None,
               made: list[MadeBlock] | None = None) -> Iterator[Any]:
    """The records a task reads. A shuffle's blocks are merged before the first record comes out,
    so the merge has safe points of its own: one per record merged. `inputs` holds the blocks of
    every shuffle the task reads, shuffle by shuffle in id order (see stage_inputs.task_shuffles:
    none below a persisted partition given as a block, in `persisted`). The blocks of persisted
    partitions computed instead are appended to `made`."""
    given = persisted or {}
    reading = _Reading({}, given, code, signal, made if made is not None else [])
    if isinstance(spec.input, ShuffleRead):
        reading.shuffles = {spec.input.shuffle_id: inputs}
        return _read(spec.input, partition, reading)
    shuffles: dict[int, list[bytes | memoryview]] = {}
    start = 0
    for read, _ in task_shuffles(spec.input, partition, given.keys()):
        shuffles[read.shuffle_id] = inputs[start : start + read.map_partitions]
        start += read.map_partitions
    reading.shuffles = shuffles
    return _read(spec.input, partition, reading)


def _read(source: StageInput, partition: int, reading: _Reading) -> Iterator[Any]:
    code, signal = reading.code, reading.signal
    if isinstance(source, RangeSource):
        return iter(source.partition_bounds(partition))
    if isinstance(source, CollectionSource):
        return iter(loads_block(source.slices[partition]))
    if isinstance(source, GeneratorSource):
        return iter(code.load(source.fn)(partition, source.batch))
    if isinstance(source, TextFileSource):
        split = source.splits[partition]
        return text_files.read_split(split.path, split.start, split.end)
    if isinstance(source, UnionInput):
        index, own = union_branch(source, partition)
        branch = source.branches[index]
        return iter(_pipeline(_read(branch.input, own, reading), branch.ops, code))
    if isinstance(source, CoGroupInput):
        return _cogroup(source, partition, reading)
    if isinstance(source, PersistedInput):
        return _persisted(source, partition, reading)
    assert isinstance(source, ShuffleRead)
    merged: dict[Any, Any] = {}
    merge = _merger(source.aggregator, code)
    for block in reading.shuffles[source.shuffle_id]:
        for key, value in loads_block(block):
            if signal.pending:
                signal.safe_point()
            if key in merged:
                merged[key] = merge(merged[key], value)
            else:
                merged[key] = value
    return iter(merged.items())


def _pipeline(records: Iterable[Any], ops: list[str], code: CodeCache) -> Iterable[Any]:
    for blob in ops:
        records = code.load(blob)(iter(records))
    return records


def _persisted(source: PersistedInput, partition: int, reading: _Reading) -> Iterator[Any]:
    """A persisted partition: its block, when given; else its lineage's records, whose block is
    made (before any op downstream sees, and may change, a record) and kept in `reading.made`."""
    block = reading.persisted.get(source.dataset_id)
    if block is not None:
        return iter(loads_block(block))
    fallback = source.fallback
    if fallback is None:
        raise BlockMissing(f"partition {partition} of persisted dataset {source.dataset_id} was not given to this task, "
                           "and the lineage to compute it was not planned")
    signal = reading.signal
    records = []
    for record in _pipeline(_read(fallback.input, partition, reading), fallback.ops, reading.code):
        if signal.pending:
            signal.safe_point()
        records.append(record)
    reading.made.append((source.dataset_id, partition, source.partitions, dumps_block(records)))
    return iter(records)


def _cogroup(cogroup: CoGroupInput, partition: int, reading: _Reading) -> Iterator[Any]:
    """(key, (values of branch 0, values of branch 1, ...)) for every key of any branch."""
    sides = len(cogroup.branches)
    groups: dict[Any, tuple[list[Any], ...]] = {}
    code, signal = reading.code, reading.signal
    for side, branch in enumerate(cogroup.branches):
        for record in _pipeline(_read(branch.input, partition, reading), branch.ops, code):
            if signal.pending:
                signal.safe_point()
            key, value = _pair(record, "a cogroup or join")
            lists = groups.get(key)
            if lists is None:
                lists = groups[key] = tuple([] for _ in range(sides))
            if branch.grouped:
                lists[side].extend(value)  # (key, values) of the shuffle made for the cogroup
            else:
                lists[side].append(value)
    return iter(groups.items())


def update_state(groups: Iterable[Any], table: dict[Any, Any], fn: Callable[[list[Any], Any], Any]) -> list[Any]:
    """(key, values) -> (key, fn(values, old state or None)); None drops the key's state.

    Every new state is computed before any is stored, so a user function that raises part-way
    leaves the table as it was, and a replay of the batch starts from the same state."""
    updates = [(key, fn(values, table.get(key))) for key, values in groups]
    for key, state in updates:
        if state is None:
            table.pop(key, None)
        else:
            table[key] = state
    return [(key, state) for key, state in updates if state is not None]


def write_shuffle(output: ShuffleWrite, records: Iterable[Any], code: CodeCache, signal: StopSignal = NEVER) -> list[bytes]:
    """Partition (key, value) records by key (by hash, or by range with a partitioner), combining
    values of a key map-side."""
    buckets: list[dict[Any, Any]] = [{} for _ in range(output.partitions)]
    agg = output.aggregator
    n = output.partitions
    # A hash shuffle calls partition_of directly: a wrapper would cost every record a call.
    place = None if output.partitioner is None else _range_placer(output.partitioner)
    if agg.kind == "reduce":
        fn = code.load(agg.fn) if agg.fn is not None else None
        if fn is None:
            raise RecordError("a reduce shuffle needs a function")
        for record in records:
            key, value = _pair(record)
            bucket = buckets[partition_of(key, n) if place is None else place(key)]
            bucket[key] = fn(bucket[key], value) if key in bucket else value
    else:
        for record in records:
            key, value = _pair(record)
            bucket = buckets[partition_of(key, n) if place is None else place(key)]
            if key in bucket:
                bucket[key].append(value)
            else:
                bucket[key] = [value]
    blocks = []
    for bucket in buckets:  # a safe point between two blocks' serialization
        if signal.pending:
            signal.safe_point()
        blocks.append(dumps_block(list(bucket.items())))
    return blocks


def _range_placer(partitioner: RangePartitioner) -> Callable[[Any], int]:
    """key -> partition: how many bounds lie below it (ascending), or above it (descending)."""
    bounds = loads_block(partitioner.bounds)
    last = len(bounds)

    def place(key: Any) -> int:
        try:
            below = bisect.bisect_left(bounds, key)
        except TypeError as exc:
            raise RecordError(
                f"sort keys must compare with each other: key {key!r:.100} ({type(key).__name__}) does not compare "
                f"with the partition bounds ({type(bounds[0]).__name__}): {exc}"
            ) from None
        return last - below if partitioner.descending else below

    return place


def _merger(agg: Aggregator, code: CodeCache) -> Callable[[Any, Any], Any]:
    if agg.kind == "reduce":
        if agg.fn is None:
            raise RecordError("a reduce shuffle needs a function")
        merge: Callable[[Any, Any], Any] = code.load(agg.fn)
        return merge
    return _extend  # group: value lists from different mappers


def _extend(a: list[Any], b: list[Any]) -> list[Any]:
    a.extend(b)  # blocks are freshly loaded, so their lists are ours to grow
    return a


def _pair(record: Any, needs: str = "a shuffle") -> tuple[Any, Any]:
    if type(record) is tuple and len(record) == 2:
        return record
    try:
        key, value = record
    except (TypeError, ValueError):
        raise RecordError(
            f"{needs} needs (key, value) pairs, got {type(record).__name__}: {record!r:.200}"
        ) from None
    return key, value
