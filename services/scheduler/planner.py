"""Split a logical plan into stages at shuffle boundaries. Pure: never loads user code."""

from __future__ import annotations

from squall.common.plan import (
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
    StateNode,
    StateUpdate,
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

    # Walk from the result node back to the source, cutting at each shuffle. Each segment is one
    # stage: its narrow ops (collected backwards) and the shuffle node that starts it, if any.
    segments: list[tuple[list[str], int, StateUpdate | None]] = []  # (ops reversed, input node, state step)
    index = len(nodes) - 1
    while True:
        ops: list[str] = []
        state: StateUpdate | None = None
        node = nodes[index]
        while isinstance(node, NarrowNode | StateNode):
            if isinstance(node, StateNode):
                if not isinstance(nodes[node.parent], ShuffleNode) or nodes[node.parent].aggregator.kind != "group":  # type: ignore[union-attr]
                    raise PlanError(f"keyed state (node {index}) must come right after a grouping shuffle")
                state = StateUpdate(fn=node.fn, state_id=node.state_id, kind=node.kind)
            else:
                ops.append(node.fn)
            index = node.parent
            node = nodes[index]
        segments.append((ops, index, state))
        if isinstance(node, SourceNode):
            break
        assert isinstance(node, ShuffleNode)
        index = node.parent

    # Emit stages from the source forwards: stage k reads what stage k-1 wrote.
    stages: list[Stage] = []
    segments.reverse()
    for position, (ops, input_index, state) in enumerate(segments):
        node = nodes[input_index]
        stage_input: StageInput
        if isinstance(node, SourceNode):
            stage_input, partitions = node.source, node.source.partitions
        else:
            assert isinstance(node, ShuffleNode)
            stage_input = ShuffleRead(
                shuffle_id=input_index,
                map_partitions=stages[-1].spec.partitions,
                aggregator=node.aggregator,
            )
            partitions = node.partitions
        if partitions < 1:
            raise PlanError(f"stage {len(stages)} needs at least one partition")
        output: StageOutput = ResultWrite()
        if position + 1 < len(segments):
            shuffle_index = segments[position + 1][1]
            shuffle = nodes[shuffle_index]
            assert isinstance(shuffle, ShuffleNode)
            output = ShuffleWrite(shuffle_id=shuffle_index, partitions=shuffle.partitions, aggregator=shuffle.aggregator,
                                  partitioner=shuffle.partitioner)
        spec = StageSpec(
            partitions=partitions,
            input=stage_input,
            ops=list(reversed(ops)),
            output=output,
            state=state,
            broadcasts=list(logical.broadcasts),
        )
        parents = [len(stages) - 1] if stages else []
        stages.append(Stage(stage_id=len(stages), spec=spec, parents=parents))
    return JobPlan(stages=stages)
