"""squall.services.scheduler.planner: splitting a logical plan into stages at shuffle boundaries."""

from __future__ import annotations

import pytest
from squall.common.plan import (
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
    StageSpec,
)
from squall.services.scheduler.planner import plan_job

ADD = Aggregator(kind="reduce", fn="add")
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
    nodes = [rng(2), NarrowNode(parent=0, fn="f1"), NarrowNode(parent=1, fn="f2"), NarrowNode(parent=2, fn="f3")]
    job = plan_job(LogicalPlan(nodes=nodes))
    assert len(job.stages) == 1
    assert job.stages[0].spec.ops == ["f1", "f2", "f3"]


def test_plan_splits_at_a_shuffle():
    nodes = [
        rng(4),
        NarrowNode(parent=0, fn="pre1"),
        NarrowNode(parent=1, fn="pre2"),
        ShuffleNode(parent=2, partitions=3, aggregator=ADD),
        NarrowNode(parent=3, fn="post"),
    ]
    job = plan_job(LogicalPlan(nodes=nodes))
    assert [s.stage_id for s in job.stages] == [0, 1]
    mapper, reducer = job.stages
    assert mapper.parents == [] and reducer.parents == [0]
    assert mapper.spec.partitions == 4
    assert mapper.spec.ops == ["pre1", "pre2"]
    assert mapper.spec.output == ShuffleWrite(shuffle_id=3, partitions=3, aggregator=ADD)
    assert reducer.spec.partitions == 3
    assert reducer.spec.input == ShuffleRead(shuffle_id=3, map_partitions=4, aggregator=ADD)
    assert reducer.spec.ops == ["post"]
    assert reducer.spec.output == ResultWrite()
    assert job.result_stage is reducer


def test_map_partition_counts_are_carried_into_each_shuffle_read():
    nodes = [
        rng(5),
        ShuffleNode(parent=0, partitions=3, aggregator=GROUP),
        NarrowNode(parent=1, fn="mid"),
        ShuffleNode(parent=2, partitions=7, aggregator=ADD),
    ]
    job = plan_job(LogicalPlan(nodes=nodes))
    assert [s.spec.partitions for s in job.stages] == [5, 3, 7]
    assert [s.parents for s in job.stages] == [[], [0], [1]]
    s1, s2 = job.stages[1].spec, job.stages[2].spec
    assert s1.input == ShuffleRead(shuffle_id=1, map_partitions=5, aggregator=GROUP)
    assert s1.ops == ["mid"]
    assert s1.output == ShuffleWrite(shuffle_id=3, partitions=7, aggregator=ADD)
    assert s2.input == ShuffleRead(shuffle_id=3, map_partitions=3, aggregator=ADD)
    assert s2.ops == []


def test_shuffle_directly_after_shuffle_gives_an_empty_pipeline():
    nodes = [rng(2), ShuffleNode(parent=0, partitions=2, aggregator=GROUP), ShuffleNode(parent=1, partitions=2, aggregator=GROUP)]
    job = plan_job(LogicalPlan(nodes=nodes))
    assert len(job.stages) == 3
    assert all(s.spec.ops == [] for s in job.stages)


def test_only_the_lineage_of_the_last_node_is_planned():
    nodes = [rng(2), NarrowNode(parent=0, fn="unused"), NarrowNode(parent=0, fn="used")]
    job = plan_job(LogicalPlan(nodes=nodes))
    assert job.stages[0].spec.ops == ["used"]


def test_collection_source_partitions():
    job = plan_job(LogicalPlan(nodes=[SourceNode(source=CollectionSource(slices=[b"a", b"b"]))]))
    assert job.stages[0].spec.partitions == 2


def test_empty_plan_is_rejected():
    with pytest.raises(PlanError, match="no nodes"):
        plan_job(LogicalPlan(nodes=[]))


@pytest.mark.parametrize(
    "nodes",
    [
        [rng(2), NarrowNode(parent=2, fn="f"), NarrowNode(parent=1, fn="g")],  # forward reference
        [rng(2), NarrowNode(parent=1, fn="f")],  # refers to itself
        [NarrowNode(parent=0, fn="f")],  # no source before it
        [rng(2), ShuffleNode(parent=5, partitions=2, aggregator=GROUP)],
    ],
)
def test_forward_or_self_parent_reference_is_rejected(nodes):
    with pytest.raises(PlanError, match="does not come before it"):
        plan_job(LogicalPlan(nodes=nodes))


def test_source_without_partitions_is_rejected():
    with pytest.raises(PlanError, match="at least one partition"):
        plan_job(LogicalPlan(nodes=[SourceNode(source=CollectionSource(slices=[]))]))


def _two_stage(fn: str = "f") -> LogicalPlan:
    return LogicalPlan(nodes=[rng(4), NarrowNode(parent=0, fn=fn), ShuffleNode(parent=1, partitions=2, aggregator=ADD)])


def test_identical_plans_give_identical_stage_keys():
    a, b = plan_job(_two_stage()), plan_job(_two_stage())
    assert [s.spec.key() for s in a.stages] == [s.spec.key() for s in b.stages]
    keys = [s.spec.key() for s in a.stages]
    assert len(set(keys)) == 2 and all(len(k) == 32 for k in keys)


def test_different_code_gives_different_stage_keys():
    a, b = plan_job(_two_stage("f")), plan_job(_two_stage("g"))
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


def test_logical_plan_code_keys_name_every_op_and_aggregator_function():
    nodes = [
        rng(2),
        NarrowNode(parent=0, fn="f"),
        ShuffleNode(parent=1, partitions=2, aggregator=ADD),
        NarrowNode(parent=2, fn="g"),
        ShuffleNode(parent=3, partitions=2, aggregator=GROUP),  # no function
        NarrowNode(parent=4, fn="f"),
    ]
    assert LogicalPlan(nodes=nodes).code_keys() == {"f", "g", "add"}
    assert LogicalPlan(nodes=[rng(1)]).code_keys() == set()


def test_stage_code_keys_and_reads_shuffle():
    nodes = [rng(2), NarrowNode(parent=0, fn="pre"), ShuffleNode(parent=1, partitions=2, aggregator=ADD), NarrowNode(parent=2, fn="post")]
    mapper, reducer = plan_job(LogicalPlan(nodes=nodes)).stages
    assert mapper.spec.code_keys() == ["pre", "add"]  # its ops, then the map-side combiner
    assert reducer.spec.code_keys() == ["post", "add"]
    assert not mapper.spec.reads_shuffle and reducer.spec.reads_shuffle
    grouped = StageSpec(partitions=1, input=ShuffleRead(shuffle_id=0, map_partitions=1, aggregator=GROUP), ops=[], output=ResultWrite())
    assert grouped.code_keys() == [] and grouped.reads_shuffle


def test_plans_of_every_code_key_union_cover_all_stage_code():
    nodes = [rng(3), NarrowNode(parent=0, fn="a"), ShuffleNode(parent=1, partitions=2, aggregator=ADD), NarrowNode(parent=2, fn="b")]
    logical = LogicalPlan(nodes=nodes)
    stage_keys = {k for s in plan_job(logical).stages for k in s.spec.code_keys()}
    assert stage_keys == logical.code_keys()
