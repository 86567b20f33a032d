"""The plan model: what a driver submits (a logical plan) and what executors run (stage specs).

Both are plain msgspec structs so that the scheduler can split a plan into stages without ever
unpickling user code: user functions travel as opaque cloudpickled bytes and are only loaded by
executors. A stage spec does not mention its job, so identical stages of different jobs (the
micro-batches of a stream) have identical bytes and can be named by content hash.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct

MAX_PARTITIONS = 1_000_000
Count = Annotated[int, Meta(ge=1, le=MAX_PARTITIONS)]
Index = Annotated[int, Meta(ge=0)]
CodeKey = Annotated[str, Meta(min_length=1, max_length=64)]
DatasetId = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


def code_key(blob: bytes) -> str:
    """The content hash that names a piece of pickled code everywhere (driver, scheduler, executors)."""
    return hashlib.blake2b(blob, digest_size=16).hexdigest()


class PlanError(ValueError):
    """A plan that cannot be executed (bad shape, bad partition counts)."""


# --- sources -------------------------------------------------------------------------------------


class RangeSource(Struct, tag="range", frozen=True):
    """Integers range(start, stop, step), split into contiguous partitions."""

    start: int
    stop: int
    step: int
    partitions: Count

    def __post_init__(self) -> None:
        if self.step == 0:
            raise ValueError("range step must not be zero")

    def partition_bounds(self, index: int) -> range:
        whole = range(self.start, self.stop, self.step)
        n = len(whole)
        lo = n * index // self.partitions
        hi = n * (index + 1) // self.partitions
        return whole[lo:hi]


class CollectionSource(Struct, tag="collection", frozen=True):
    """A driver-side collection; each slice is a serialized block (see squall.common.serialization)."""

    slices: list[bytes]

    @property
    def partitions(self) -> int:
        return len(self.slices)


class GeneratorSource(Struct, tag="generator", frozen=True):
    """Records made by fn(partition, batch): replayable, since any (partition, batch) can be made
    again. Streams give each micro-batch its own batch index; `fn` names pickled code."""

    fn: CodeKey
    partitions: Count
    batch: Index = 0


class TextSplit(Struct, frozen=True):
    """Bytes [start, end) of a text file: the lines that begin there (see common/text_files.py)."""

    path: str
    start: Index
    end: Index


class TextFileSource(Struct, tag="text_file", frozen=True):
    """Lines of text files, one partition per split. The paths are read by the executors, so they
    must name the same files there (the same machine, or a shared volume)."""

    splits: list[TextSplit]

    @property
    def partitions(self) -> int:
        return len(self.splits)


class CheckpointSource(Struct, tag="checkpoint", frozen=True):
    """A dataset's partitions as Dataset.checkpoint() wrote them to the executors' checkpoint
    store (squall.common.dataset_checkpoints), read back in place of the lineage that made them."""

    checkpoint_id: DatasetId
    partitions: Count


Source = RangeSource | CollectionSource | GeneratorSource | TextFileSource | CheckpointSource


# --- logical plan (built by the driver) ----------------------------------------------------------


class Aggregator(Struct, frozen=True):
    """How a shuffle combines values of one key: 'reduce' with fn(a, b) -> a, or 'group' into lists.
    `fn` names pickled code by its code_key."""

    kind: Literal["reduce", "group"]
    fn: CodeKey | None = None


class SourceNode(Struct, tag="source", frozen=True):
    source: Source


class NarrowNode(Struct, tag="narrow", frozen=True):
    """A per-partition transformation fn(iterator) -> iterable; `fn` names its pickled code."""

    parent: Index
    fn: CodeKey


class RangePartitioner(Struct, frozen=True):
    """Keys go to partitions by range: partition i holds the keys k with bounds[i-1] < k <= bounds[i]
    (counted from the last partition with `descending`), so partition after partition the keys
    are ordered.
    `bounds` is a data block (squall.common.serialization) of partitions - 1 sorted keys: keys
    are any comparable Python values, loaded only by executors."""

    bounds: bytes
    descending: bool = False


class ShuffleNode(Struct, tag="shuffle", frozen=True, omit_defaults=True):
    """Repartition (key, value) records by key into `partitions`, combining with `aggregator`.
    Keys go to partitions by hash, or by range with a `partitioner` (left out of the encoding
    when absent, so a hash shuffle's bytes, and the content hashes of its stages, stay as they were)."""

    parent: Index
    partitions: Count
    aggregator: Aggregator
    partitioner: RangePartitioner | None = None


class StateNode(Struct, tag="state", frozen=True):
    """Keyed state right after a grouping shuffle. kind "keyed": for each (key, values) of a batch
    the new state is fn(values, old_state or None) (None drops the key), and (key, new_state) is
    emitted. kind "window": fn is a window operator (squall.windows) that folds the batch into
    per-window accumulators and emits the windows the batch's end closes, over every key.
    The state of partition p lives on the executor that runs partition p, batch after batch."""

    parent: Index
    fn: CodeKey
    state_id: Annotated[str, Meta(min_length=1, max_length=64)]
    kind: Literal["keyed", "window"] = "keyed"


class UnionNode(Struct, tag="union", frozen=True):
    """The partitions of every parent, one parent's after the other's, with no shuffle (Spark's
    UnionRDD): partition i of the result is partition i - offset of the parent it falls in."""

    parents: Annotated[list[Index], Meta(min_length=1)]


class CoGroupNode(Struct, tag="cogroup", frozen=True):
    """(key, (values of parent 0, values of parent 1, ...)) for every key of any parent, a list
    per parent, in `partitions` hash partitions. A parent marked in `shuffled` is shuffled there
    first; the others are already hash-partitioned into `partitions` by key, so each result
    partition reads their partition of the same index (one-to-one, like Spark's
    OneToOneDependency), without a shuffle."""

    parents: Annotated[list[Index], Meta(min_length=1)]
    partitions: Count
    shuffled: list[bool]


class PersistNode(Struct, tag="persist", frozen=True):
    """The parent's records, kept by the executors that compute them (Dataset.persist): a later
    job reads a partition an executor holds instead of computing it again. `dataset_id` names the
    blocks on the executors and in the block directory (shuffle_meta)."""

    parent: Index
    dataset_id: DatasetId


class HeldNode(Struct, tag="held", frozen=True):
    """A persisted dataset of which executors hold every partition: the scheduler puts it in place
    of a PersistNode and the lineage below it, which then is not planned. Drivers never send it."""

    dataset_id: DatasetId
    partitions: Count


PlanNode = SourceNode | NarrowNode | ShuffleNode | StateNode | UnionNode | CoGroupNode | PersistNode | HeldNode


def node_parents(node: PlanNode) -> list[int]:
    """The nodes a node reads (none for a source)."""
    if isinstance(node, SourceNode | HeldNode):
        return []
    if isinstance(node, UnionNode | CoGroupNode):
        return node.parents
    return [node.parent]


def reparented(node: PlanNode, parents: Sequence[int]) -> PlanNode:
    """`node` reading `parents` (indices, in the order of its own) instead; PlanError when a node
    of its kind does not read that many."""
    if isinstance(node, SourceNode | HeldNode):
        if parents:
            raise PlanError(f"a {type(node).__name__} reads no other node, not {len(parents)}")
        return node
    if isinstance(node, UnionNode | CoGroupNode):
        if len(parents) != len(node.parents):
            raise PlanError(f"this {type(node).__name__} reads {len(node.parents)} nodes, not {len(parents)}")
        return msgspec.structs.replace(node, parents=list(parents))
    if len(parents) != 1:
        raise PlanError(f"a {type(node).__name__} reads one node, not {len(parents)}")
    return msgspec.structs.replace(node, parent=parents[0])


def node_code_keys(node: PlanNode) -> list[str]:
    """The pickled code a node names."""
    if isinstance(node, SourceNode) and isinstance(node.source, GeneratorSource):
        return [node.source.fn]
    if isinstance(node, NarrowNode | StateNode):
        return [node.fn]
    if isinstance(node, ShuffleNode) and node.aggregator.fn is not None:
        return [node.aggregator.fn]
    return []


class LogicalPlan(Struct, frozen=True):
    """Nodes in topological order; the last node is the one whose partitions the job returns."""

    nodes: list[PlanNode]
    broadcasts: list[CodeKey] = []  # broadcast values the plan's functions may use

    def code_keys(self) -> set[str]:
        keys: set[str] = set(self.broadcasts)
        for node in self.nodes:
            keys.update(node_code_keys(node))
        return keys


# --- plan deltas (a driver sends the scheduler only the nodes it lacks) --------------------------

NodeId = Annotated[str, Meta(pattern=r"^[0-9a-f]{32}$")]


def node_id(node: PlanNode, parents: Sequence[str]) -> str:
    """The id that names a node with these parents (their ids) on the driver and the scheduler:
    the content hash of the node, its parent fields numbered 0, 1, ... as its `parents` are, and
    of its parents' ids. The same operation on the same parents has the same id, and an id names
    the node's whole lineage."""
    digest = hashlib.blake2b(msgspec.msgpack.encode(node), digest_size=16)
    for parent in parents:
        digest.update(bytes.fromhex(parent))
    return digest.hexdigest()


class NodeDef(Struct, frozen=True, array_like=True):
    """A plan node as a delta carries it: its id, the node with its parent fields numbered 0, 1,
    ... (positions in `parents`), and the ids of the nodes it reads."""

    id: NodeId
    node: PlanNode
    parents: list[NodeId] = []


class PlanDelta(Struct, frozen=True):
    """A job's plan as the nodes the scheduler has not had from this driver, parents before the
    nodes that read them, and the id of the node whose partitions the job returns. The others
    are named by id: the scheduler keeps what drivers sent (its plan cache)."""

    nodes: list[NodeDef]
    root: NodeId
    broadcasts: list[CodeKey] = []

    def code_keys(self) -> set[str]:
        """The code the new nodes (and the broadcasts) name: the rest came with earlier jobs."""
        keys: set[str] = set(self.broadcasts)
        for definition in self.nodes:
            keys.update(node_code_keys(definition.node))
        return keys


# --- physical plan (built by the scheduler's planner, run by executors) --------------------------


class ShuffleRead(Struct, tag="shuffle_read", frozen=True):
    shuffle_id: Index
    map_partitions: Count
    aggregator: Aggregator


class ShuffleWrite(Struct, tag="shuffle_write", frozen=True, omit_defaults=True):
    """A map task's output: partitioned by hash of key, or by `partitioner` (see ShuffleNode)."""

    shuffle_id: Index
    partitions: Count
    aggregator: Aggregator
    partitioner: RangePartitioner | None = None


class ResultWrite(Struct, tag="result", frozen=True):
    """The stage's records go back to the driver, one block per partition."""


class StateUpdate(Struct, frozen=True):
    """A stage's keyed-state step (see StateNode), applied to its shuffle input before its ops."""

    fn: CodeKey
    state_id: str
    kind: Literal["keyed", "window"] = "keyed"


class Branch(Struct, frozen=True):
    """One input of a union or cogroup within a stage: what it reads, the narrow ops applied to
    that before the union or cogroup, and how many partitions it has. `grouped`: its records are
    (key, [values]) from a shuffle made for the cogroup, whose lists the cogroup extends."""

    input: StageInput
    ops: list[CodeKey]
    partitions: Count
    grouped: bool = False


class UnionInput(Struct, tag="union_input", frozen=True):
    """The branches' partitions one after the other: a task reads one branch's partition."""

    branches: Annotated[list[Branch], Meta(min_length=1)]


class CoGroupInput(Struct, tag="cogroup_input", frozen=True):
    """Every branch's partition of the task's index, cogrouped by key: (key, (list, list, ...))."""

    branches: Annotated[list[Branch], Meta(min_length=1)]


class PersistedInput(Struct, tag="persisted_input", frozen=True):
    """Partition p of a persisted dataset (PersistNode). A task told where the block is
    (TaskDescriptor.persisted) reads it, from its own memory or the holder's; any other task
    computes it from `fallback`, the dataset's lineage within this stage, and its executor keeps
    it. No fallback: executors hold every partition, and the lineage below was not planned."""

    dataset_id: DatasetId
    partitions: Count
    fallback: Branch | None = None


StageInput = (RangeSource | CollectionSource | GeneratorSource | TextFileSource | CheckpointSource | ShuffleRead | UnionInput
              | CoGroupInput | PersistedInput)
StageOutput = ShuffleWrite | ResultWrite


class StageSpec(Struct, frozen=True):
    """A pipeline of narrow ops between an input and an output; one task per partition. The
    input is a source, a shuffle read, or a union or cogroup of branches, each an input of its
    own and the ops before the union or cogroup point (squall.common.stage_inputs reads the tree).

    Ops and aggregators name their code by code_key, so a spec is small and the code itself is
    shipped to each executor once, whatever the number of jobs and batches that use it.
    """

    partitions: Count
    input: StageInput
    ops: list[CodeKey]
    output: StageOutput
    state: StateUpdate | None = None
    broadcasts: list[CodeKey] = []

    def key(self) -> str:
        """Content hash: the name under which executors cache this stage spec."""
        return hashlib.blake2b(msgspec.msgpack.encode(self), digest_size=16).hexdigest()

    def pipeline_key(self) -> str:
        """What the stage's tasks do, whatever they read: equal for the micro-batches of a stream,
        whose sources differ batch by batch. (Executors learn task durations under this key.)"""
        shape = (_input_shape(self.input), self.ops, self.output, self.state)
        return hashlib.blake2b(msgspec.msgpack.encode(shape), digest_size=16).hexdigest()

    def code_keys(self) -> list[str]:
        keys = list(self.ops)
        if isinstance(self.input, GeneratorSource):
            keys.append(self.input.fn)
        if self.state is not None:
            keys.append(self.state.fn)
        keys.extend(self.broadcasts)
        for side in (self.input, self.output):
            agg = getattr(side, "aggregator", None)
            if agg is not None and agg.fn is not None:
                keys.append(agg.fn)
        if isinstance(self.input, UnionInput | CoGroupInput | PersistedInput):
            keys.extend(_branch_code_keys(self.input))
        return keys

    @property
    def reads_shuffle(self) -> bool:
        return _reads_shuffle(self.input)


def _input_shape(stage_input: StageInput) -> object:
    """What a stage reads, without the records themselves (a source's batch or slices)."""
    if isinstance(stage_input, UnionInput | CoGroupInput):
        return [type(stage_input).__name__, [(_input_shape(b.input), b.ops, b.grouped) for b in stage_input.branches]]
    if isinstance(stage_input, PersistedInput):
        fallback = stage_input.fallback
        return [stage_input.dataset_id, None if fallback is None else (_input_shape(fallback.input), fallback.ops)]
    return type(stage_input).__name__


def _branches(stage_input: StageInput) -> list[Branch]:
    """The branches nested directly in a stage input (a persisted input's fallback is one)."""
    if isinstance(stage_input, UnionInput | CoGroupInput):
        return stage_input.branches
    if isinstance(stage_input, PersistedInput) and stage_input.fallback is not None:
        return [stage_input.fallback]
    return []


def _branch_code_keys(combined: StageInput) -> list[str]:
    keys: list[str] = []
    for branch in _branches(combined):
        keys.extend(branch.ops)
        inner = branch.input
        if isinstance(inner, GeneratorSource):
            keys.append(inner.fn)
        elif isinstance(inner, ShuffleRead) and inner.aggregator.fn is not None:
            keys.append(inner.aggregator.fn)
        else:
            keys.extend(_branch_code_keys(inner))
    return keys


def _reads_shuffle(stage_input: StageInput) -> bool:
    return isinstance(stage_input, ShuffleRead) or any(_reads_shuffle(b.input) for b in _branches(stage_input))


class Stage(Struct, frozen=True):
    """A stage within one job: its spec plus the stages whose shuffle output it reads."""

    stage_id: Index
    spec: StageSpec
    parents: list[int]


class JobPlan(Struct, frozen=True):
    """Stages in dependency order; the last one is the result stage."""

    stages: list[Stage]

    @property
    def result_stage(self) -> Stage:
        return self.stages[-1]
