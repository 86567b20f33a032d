"""Split a logical plan into stages at shuffle boundaries. Pure: never loads user code.

A plan is a DAG: unions and cogroups have several parents. Everything narrow between two
shuffles is one stage, whose input is a tree: a source, a shuffle read, or a union or cogroup of
branches (each with the narrow ops before the union or cogroup point). A cogroup parent that is
already hash-partitioned as the result is read partition to partition within the stage; any
other is shuffled first.

A persisted dataset (PersistNode) is a PersistedInput whose fallback is its lineage within the
stage: a task reads the block where one is held, and computes (and keeps) it otherwise. Where
every partition is held, the scheduler has put a HeldNode in its place: its lineage is not
planned at all. A persisted dataset since unpersisted is planned as if never persisted.

Every (shuffle, reduce partition) has exactly one reader task, so that a mapper knows where to
push each block: a shuffle node reached again from another stage, or at another place of a union,
is planned again under a new shuffle id (its map stage runs once per reader). Reached again at
the same place of the same stage (a dataset on both sides of a cogroup), it is read once.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass, field

from squall.common.plan import (
    MAX_PARTITIONS,
    Aggregator,
    Branch,
    CoGroupInput,
    CoGroupNode,
    HeldNode,
    JobPlan,
    LogicalPlan,
    NarrowNode,
    PersistedInput,
    PersistNode,
    PlanError,
    PlanNode,
    RangePartitioner,
    ResultWrite,
    ShuffleNode,
    ShuffleRead,
    ShuffleWrite,
    SourceNode,
    Stage,
    StageInput,
    StageOutput,
    StageSpec,
    StateNode,
    StateUpdate,
    UnionInput,
    UnionNode,
    node_parents,
)

MAX_NODES = 100_000
# Branches and stages a plan may expand to: a dataset used twice is walked twice (x.cogroup(x)
# done n times is 2**n branches), and planning runs on the scheduler's loop.
MAX_EXPANSION = 100_000
COGROUP_SHUFFLE = Aggregator(kind="group")  # a cogroup's shuffled side: values grouped map-side


def plan_job(logical: LogicalPlan, unpersisted: Container[str] = ()) -> JobPlan:
    """Stages in dependency order (every stage after the stages it reads), the result stage last.

    Consecutive narrow nodes are fused into one stage's pipeline; each shuffle ends the stage that
    writes it and starts the stage that reads it. Persist nodes of `unpersisted` datasets are
    passed through.
    """
    nodes = logical.nodes
    if not nodes:
        raise PlanError("the plan has no nodes")
    if len(nodes) > MAX_NODES:
        raise PlanError(f"the plan has {len(nodes)} nodes, more than {MAX_NODES}")
    for index, node in enumerate(nodes):
        for parent in node_parents(node):
            if parent >= index:
                raise PlanError(f"node {index} refers to node {parent}, which does not come before it")
    try:
        stages = _Planner(nodes, list(logical.broadcasts), unpersisted).plan(len(nodes) - 1)
    except RecursionError:  # unions and cogroups nested inside one stage are walked recursively
        raise PlanError("the plan nests unions or cogroups too deeply to plan") from None
    return JobPlan(stages=stages)


def node_partitions(nodes: list[PlanNode]) -> list[int]:
    """How many partitions each node's records are in."""
    counts: list[int] = []
    for node in nodes:
        if isinstance(node, SourceNode):
            counts.append(node.source.partitions)
        elif isinstance(node, ShuffleNode | CoGroupNode | HeldNode):
            counts.append(node.partitions)
        elif isinstance(node, UnionNode):
            counts.append(sum(counts[p] for p in node.parents))
        else:
            counts.append(counts[node.parent])
    return counts


@dataclass
class _StageBuild:
    """One stage while it is planned: the node its pipeline ends at, its output, the stages
    writing the shuffles it reads (planned after it is walked), and its spec once walked."""

    root: int
    output: StageOutput
    feeders: list[_StageBuild] = field(default_factory=list)
    reads: dict[tuple[object, int], ShuffleRead] = field(default_factory=dict)  # (shuffle, offset) -> its read here
    spec: StageSpec | None = None


class _Planner:
    def __init__(self, nodes: list[PlanNode], broadcasts: list[str], unpersisted: Container[str] = ()) -> None:
        self.nodes = nodes
        self.broadcasts = broadcasts
        self.unpersisted = unpersisted
        self.partitions = node_partitions(nodes)
        for index, count in enumerate(self.partitions):
            if count > MAX_PARTITIONS:
                raise PlanError(f"node {index} has {count} partitions, more than {MAX_PARTITIONS}")
        self.walked = 0  # pipelines walked: branches and stages
        self.used_shuffle_ids: set[int] = set()
        self.fresh_ids = len(nodes)  # ids for shuffles that are not a node's own: past every node index

    def plan(self, root: int) -> list[Stage]:
        """The stages of the job whose result is node `root`, each after the stages it reads.
        Walked with explicit stacks, not recursion, so a long chain of shuffles plans."""
        result = _StageBuild(root, ResultWrite())
        unwalked = [result]
        while unwalked:
            build = unwalked.pop()
            self._walk(build)
            unwalked.extend(build.feeders)
        stages: list[Stage] = []
        ids: dict[int, int] = {}  # id(build) -> its stage id
        todo: list[tuple[_StageBuild, bool]] = [(result, False)]
        while todo:  # post-order: the feeders of a stage, in order, then the stage
            build, feeders_done = todo.pop()
            if feeders_done:
                assert build.spec is not None
                ids[id(build)] = len(stages)
                stages.append(Stage(stage_id=len(stages), spec=build.spec, parents=[ids[id(f)] for f in build.feeders]))
            else:
                todo.append((build, True))
                todo.extend((feeder, False) for feeder in reversed(build.feeders))
        return stages

    def _walk(self, build: _StageBuild) -> None:
        """The stage's spec: its pipeline's input tree, ops and keyed-state step."""
        stage_input, ops, state = self._pipeline(build.root, 0, build, top=True)
        partitions = self.partitions[build.root]
        if partitions < 1:
            raise PlanError(f"the stage ending at node {build.root} needs at least one partition")
        build.spec = StageSpec(partitions=partitions, input=stage_input, ops=ops, output=build.output, state=state,
                               broadcasts=list(self.broadcasts))

    def _pipeline(self, index: int, offset: int, build: _StageBuild, top: bool = False
                  ) -> tuple[StageInput, list[str], StateUpdate | None]:
        """The input of the pipeline ending at node `index`, its ops in order, and its keyed-state
        step. `offset`: where the pipeline's partitions start among the stage's."""
        self.walked += 1
        if self.walked > MAX_EXPANSION:
            raise PlanError(f"the plan expands to more than {MAX_EXPANSION} stages and branches (a dataset used on "
                            "both sides of many nested unions or cogroups is walked once per use)")
        ops: list[str] = []
        state: StateUpdate | None = None
        node = self.nodes[index]
        while isinstance(node, NarrowNode | StateNode) or (isinstance(node, PersistNode) and node.dataset_id in self.unpersisted):
            if isinstance(node, PersistNode):
                pass  # unpersisted: its records flow through
            elif isinstance(node, StateNode):
                parent = self.nodes[node.parent]
                if not isinstance(parent, ShuffleNode) or parent.aggregator.kind != "group":
                    raise PlanError(f"keyed state (node {index}) must come right after a grouping shuffle")
                if not top:
                    raise PlanError(f"keyed state (node {index}) cannot feed a union, a cogroup or a persisted dataset")
                state = StateUpdate(fn=node.fn, state_id=node.state_id, kind=node.kind)
            else:
                ops.append(node.fn)
            index = node.parent
            node = self.nodes[index]
        ops.reverse()
        stage_input: StageInput
        if isinstance(node, SourceNode):
            stage_input = node.source
        elif isinstance(node, ShuffleNode):
            stage_input = self._read(("node", index), index, node.parent, node.partitions, node.aggregator, offset, build,
                                     node.partitioner)
        elif isinstance(node, PersistNode):
            stage_input = PersistedInput(node.dataset_id, self.partitions[index], self._branch(node.parent, offset, build))
        elif isinstance(node, HeldNode):
            stage_input = PersistedInput(node.dataset_id, node.partitions)
        elif isinstance(node, UnionNode):
            branches = []
            for union_parent in node.parents:
                branches.append(self._branch(union_parent, offset, build))
                offset += self.partitions[union_parent]
            stage_input = UnionInput(branches=branches)
        else:
            assert isinstance(node, CoGroupNode)
            stage_input = self._cogroup(index, node, offset, build)
        return stage_input, ops, state

    def _branch(self, index: int, offset: int, build: _StageBuild) -> Branch:
        if self.partitions[index] < 1:
            raise PlanError(f"node {index} feeds a union or cogroup but has no partitions")
        branch_input, ops, _ = self._pipeline(index, offset, build)
        return Branch(input=branch_input, ops=ops, partitions=self.partitions[index])

    def _cogroup(self, index: int, node: CoGroupNode, offset: int, build: _StageBuild) -> CoGroupInput:
        if len(node.shuffled) != len(node.parents):
            raise PlanError(f"cogroup (node {index}) has {len(node.parents)} parents but {len(node.shuffled)} shuffle flags")
        branches = []
        for side, (parent, shuffled) in enumerate(zip(node.parents, node.shuffled, strict=True)):
            if shuffled:
                read = self._read(("cogroup", index, side), None, parent, node.partitions, COGROUP_SHUFFLE, offset, build)
                branches.append(Branch(input=read, ops=[], partitions=node.partitions, grouped=True))
                continue
            if self.partitions[parent] != node.partitions:
                raise PlanError(f"cogroup (node {index}) reads node {parent} partition to partition, but it has "
                                f"{self.partitions[parent]} partitions, not {node.partitions}")
            branches.append(self._branch(parent, offset, build))
        return CoGroupInput(branches=branches)

    def _read(self, shuffle: object, node_index: int | None, feeder: int, partitions: int, aggregator: Aggregator,
              offset: int, build: _StageBuild, partitioner: RangePartitioner | None = None) -> ShuffleRead:
        """This stage's read of a shuffle of node `feeder`'s records; its map stage is planned
        after this one is walked. A shuffle node's first use is named by the node's index."""
        known = build.reads.get((shuffle, offset))
        if known is not None:
            return known
        if node_index is not None and node_index not in self.used_shuffle_ids:
            shuffle_id = node_index
        else:
            shuffle_id = self.fresh_ids
            self.fresh_ids += 1
        self.used_shuffle_ids.add(shuffle_id)
        write = ShuffleWrite(shuffle_id=shuffle_id, partitions=partitions, aggregator=aggregator, partitioner=partitioner)
        build.feeders.append(_StageBuild(feeder, write))
        read = ShuffleRead(shuffle_id=shuffle_id, map_partitions=self.partitions[feeder], aggregator=aggregator)
        build.reads[(shuffle, offset)] = read
        return read
