"""services.scheduler.planner: splitting a logical plan into stages at shuffle boundaries."""

from __future__ import annotations

import pytest

from common.plan import (
    Aggregator,
    CollectionSource,
    LogicalPlan,
    NarrowNode,
    PlanError,
    RangeSource,
    ResultWrite,
    ShuffleNode,
    ShuffleRead,
    ShuffleWrite,
    SourceNode,
)
from services.scheduler.planner import plan_job

ADD = Aggregator(kind="reduce", fn=b"add")
GROUP = Aggregator(kind="group")


def rng(partitions: int) -> SourceNode:
    return SourceNode(source=RangeSource(start=0, stop=100, step=1, partitions=partitions))


def test_source_only_is_one_result_stage():
    job = plan_job(LogicalPlan(nodes=[rng(3)]))
    assert len(job.stages) == 1
    stage = job.result_stage
    assert stage.stage_id == 0 and stage.parents == []
    assert stage.spec.partitions == 3
    assert stage.spec.input == RangeSource(start=0, stop=100, step=1, partitions=3)
    assert stage.spec.ops == []
    assert stage.spec.output == ResultWrite()


def test_narrow_ops_are_fused_in_order():
    nodes = [rng(2), NarrowNode(parent=0, fn=b"f1"), NarrowNode(parent=1, fn=b"f2"), NarrowNode(parent=2, fn=b"f3")]
    job = plan_job(LogicalPlan(nodes=nodes))
    assert len(job.stages) == 1
    assert job.stages[0].spec.ops == [b"f1", b"f2", b"f3"]


def test_plan_splits_at_a_shuffle():
    nodes = [
        rng(4),
        NarrowNode(parent=0, fn=b"pre1"),
        NarrowNode(parent=1, fn=b"pre2"),
        ShuffleNode(parent=2, partitions=3, aggregator=ADD),
        NarrowNode(parent=3, fn=b"post"),
    ]
    job = plan_job(LogicalPlan(nodes=nodes))
    assert [s.stage_id for s in job.stages] == [0, 1]
    mapper, reducer = job.stages
    assert mapper.parents == [] and reducer.parents == [0]
    assert mapper.spec.partitions == 4
    assert mapper.spec.ops == [b"pre1", b"pre2"]
    assert mapper.spec.output == ShuffleWrite(shuffle_id=3, partitions=3, aggregator=ADD)
    assert reducer.spec.partitions == 3
    assert reducer.spec.input == ShuffleRead(shuffle_id=3, map_partitions=4, aggregator=ADD)
    assert reducer.spec.ops == [b"post"]
    assert reducer.spec.output == ResultWrite()
    assert job.result_stage is reducer


def test_map_partition_counts_are_carried_into_each_shuffle_read():
    nodes = [
        rng(5),
        ShuffleNode(parent=0, partitions=3, aggregator=GROUP),
        NarrowNode(parent=1, fn=b"mid"),
        ShuffleNode(parent=2, partitions=7, aggregator=ADD),
    ]
    job = plan_job(LogicalPlan(nodes=nodes))
    assert [s.spec.partitions for s in job.stages] == [5, 3, 7]
    assert [s.parents for s in job.stages] == [[], [0], [1]]
    s1, s2 = job.stages[1].spec, job.stages[2].spec
    assert s1.input == ShuffleRead(shuffle_id=1, map_partitions=5, aggregator=GROUP)
    assert s1.ops == [b"mid"]
    assert s1.output == ShuffleWrite(shuffle_id=3, partitions=7, aggregator=ADD)
    assert s2.input == ShuffleRead(shuffle_id=3, map_partitions=3, aggregator=ADD)
    assert s2.ops == []


def test_shuffle_directly_after_shuffle_gives_an_empty_pipeline():
    nodes = [rng(2), ShuffleNode(parent=0, partitions=2, aggregator=GROUP), ShuffleNode(parent=1, partitions=2, aggregator=GROUP)]
    job = plan_job(LogicalPlan(nodes=nodes))
    assert len(job.stages) == 3
    assert all(s.spec.ops == [] for s in job.stages)


def test_only_the_lineage_of_the_last_node_is_planned():
    nodes = [rng(2), NarrowNode(parent=0, fn=b"unused"), NarrowNode(parent=0, fn=b"used")]
    job = plan_job(LogicalPlan(nodes=nodes))
    assert job.stages[0].spec.ops == [b"used"]


def test_collection_source_partitions():
    job = plan_job(LogicalPlan(nodes=[SourceNode(source=CollectionSource(slices=[b"a", b"b"]))]))
    assert job.stages[0].spec.partitions == 2


def test_empty_plan_is_rejected():
    with pytest.raises(PlanError, match="no nodes"):
        plan_job(LogicalPlan(nodes=[]))


@pytest.mark.parametrize(
    "nodes",
    [
        [rng(2), NarrowNode(parent=2, fn=b"f"), NarrowNode(parent=1, fn=b"g")],  # forward reference
        [rng(2), NarrowNode(parent=1, fn=b"f")],  # refers to itself
        [NarrowNode(parent=0, fn=b"f")],  # no source before it
        [rng(2), ShuffleNode(parent=5, partitions=2, aggregator=GROUP)],
    ],
)
def test_forward_or_self_parent_reference_is_rejected(nodes):
    with pytest.raises(PlanError, match="does not come before it"):
        plan_job(LogicalPlan(nodes=nodes))


def test_source_without_partitions_is_rejected():
    with pytest.raises(PlanError, match="at least one partition"):
        plan_job(LogicalPlan(nodes=[SourceNode(source=CollectionSource(slices=[]))]))


def _two_stage(fn: bytes = b"f") -> LogicalPlan:
    return LogicalPlan(nodes=[rng(4), NarrowNode(parent=0, fn=fn), ShuffleNode(parent=1, partitions=2, aggregator=ADD)])


def test_identical_plans_give_identical_stage_keys():
    a, b = plan_job(_two_stage()), plan_job(_two_stage())
    assert [s.spec.key() for s in a.stages] == [s.spec.key() for s in b.stages]
    keys = [s.spec.key() for s in a.stages]
    assert len(set(keys)) == 2 and all(len(k) == 32 for k in keys)


def test_different_code_gives_different_stage_keys():
    a, b = plan_job(_two_stage(b"f")), plan_job(_two_stage(b"g"))
    assert a.stages[0].spec.key() != b.stages[0].spec.key()
    assert a.stages[1].spec.key() == b.stages[1].spec.key()  # the reduce stage did not change


def test_long_chain_of_shuffles_plans_or_raises_plan_error():
    nodes = [rng(2)]
    for _ in range(1500):
        nodes.append(ShuffleNode(parent=len(nodes) - 1, partitions=2, aggregator=GROUP))
    try:
        job = plan_job(LogicalPlan(nodes=nodes))
    except PlanError:
        return
    assert len(job.stages) == 1501
