"""Split a logical plan into stages at shuffle boundaries. Pure: never loads user code."""

from __future__ import annotations

from common.plan import (
    JobPlan,
    LogicalPlan,
    NarrowNode,
    PlanError,
    ResultWrite,
    ShuffleNode,
    ShuffleRead,
    ShuffleWrite,
    SourceNode,
    Stage,
    StageInput,
    StageOutput,
    StageSpec,
)

MAX_NODES = 100_000


def plan_job(logical: LogicalPlan) -> JobPlan:
    """Stages in dependency order, the result stage last.

    Consecutive narrow nodes are fused into one stage's pipeline; each shuffle ends the stage that
    writes it and starts the stage that reads it.
    """
    nodes = logical.nodes
    if not nodes:
        raise PlanError("the plan has no nodes")
    if len(nodes) > MAX_NODES:
        raise PlanError(f"the plan has {len(nodes)} nodes, more than {MAX_NODES}")
    for index, node in enumerate(nodes):
        if not isinstance(node, SourceNode) and node.parent >= index:
            raise PlanError(f"node {index} refers to node {node.parent}, which does not come before it")

    stages: list[Stage] = []

    def build(index: int, output: StageOutput) -> int:
        ops: list[bytes] = []
        parents: list[int] = []
        while True:
            node = nodes[index]
            if isinstance(node, NarrowNode):
                ops.append(node.fn)
                index = node.parent
                continue
            stage_input: StageInput
            if isinstance(node, SourceNode):
                stage_input = node.source
                partitions = node.source.partitions
            else:
                assert isinstance(node, ShuffleNode)
                write = ShuffleWrite(shuffle_id=index, partitions=node.partitions, aggregator=node.aggregator)
                parent_id = build(node.parent, write)
                parents.append(parent_id)
                stage_input = ShuffleRead(
                    shuffle_id=index,
                    map_partitions=stages[parent_id].spec.partitions,
                    aggregator=node.aggregator,
                )
                partitions = node.partitions
            break
        ops.reverse()
        if partitions < 1:
            raise PlanError("a stage needs at least one partition")
        spec = StageSpec(partitions=partitions, input=stage_input, ops=ops, output=output)
        stages.append(Stage(stage_id=len(stages), spec=spec, parents=parents))
        return len(stages) - 1

    build(len(nodes) - 1, ResultWrite())
    return JobPlan(stages=stages)
