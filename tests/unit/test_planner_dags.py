"""squall.services.scheduler.planner on plans with several parents: unions, cogroups, joins, and
co-partitioned sides read without a shuffle; and squall.common.stage_inputs, which reads the trees."""

from __future__ import annotations

import msgspec
import pytest
from squall.common.plan import (
    Aggregator,
    Branch,
    CoGroupInput,
    CoGroupNode,
    CollectionSource,
    GeneratorSource,
    LogicalPlan,
    NarrowNode,
    PlanError,
    RangePartitioner,
    RangeSource,
    ShuffleNode,
    ShuffleRead,
    ShuffleWrite,
    SourceNode,
    StageSpec,
    StateNode,
    UnionInput,
    UnionNode,
)
from squall.common.stage_inputs import shuffle_readers, task_shuffles
from squall.services.scheduler.planner import plan_job

ADD = Aggregator(kind="reduce", fn="add")
GROUP = Aggregator(kind="group")


def rng(partitions: int, stop: int = 100) -> SourceNode:
    return SourceNode(source=RangeSource(start=0, stop=stop, step=1, partitions=partitions))


def shuffles_written(job) -> list[int]:  # type: ignore[no-untyped-def]
    return [s.spec.output.shuffle_id for s in job.stages if isinstance(s.spec.output, ShuffleWrite)]


def test_a_union_of_chains_with_different_sources_is_one_stage_without_a_shuffle():
    collection = SourceNode(source=CollectionSource(slices=[b"x", b"y", b"z"]))
    nodes = [rng(2), NarrowNode(parent=0, fn="f"), collection, NarrowNode(parent=2, fn="g"), UnionNode(parents=[1, 3]),
             NarrowNode(parent=4, fn="after")]
    job = plan_job(LogicalPlan(nodes=nodes))
    assert len(job.stages) == 1
    stage = job.result_stage
    assert stage.parents == [] and stage.spec.partitions == 5
    assert stage.spec.input == UnionInput(branches=[
        Branch(input=rng(2).source, ops=["f"], partitions=2),
        Branch(input=collection.source, ops=["g"], partitions=3),
    ])
    assert stage.spec.ops == ["after"]
    assert stage.spec.code_keys() == ["after", "f", "g"] and not stage.spec.reads_shuffle
    assert [task_shuffles(stage.spec.input, p) for p in range(5)] == [[]] * 5


def test_a_union_of_shuffled_datasets_reads_each_shuffle_at_its_offset():
    nodes = [rng(4), ShuffleNode(parent=0, partitions=2, aggregator=ADD), rng(3), ShuffleNode(parent=2, partitions=3, aggregator=GROUP),
             UnionNode(parents=[1, 3])]
    job = plan_job(LogicalPlan(nodes=nodes))
    assert [s.parents for s in job.stages] == [[], [], [0, 1]]
    union = job.result_stage.spec
    assert union.partitions == 5 and union.reads_shuffle
    first, second = ShuffleRead(shuffle_id=1, map_partitions=4, aggregator=ADD), ShuffleRead(shuffle_id=3, map_partitions=3, aggregator=GROUP)
    assert [task_shuffles(union.input, p) for p in range(5)] == [[(first, 0)], [(first, 1)], [(second, 0)], [(second, 1)], [(second, 2)]]
    assert shuffle_readers(union) == {1: [0, 1], 3: [2, 3, 4]}  # where mappers push each reduce partition


def test_a_cogroup_of_three_shuffles_every_side_that_is_not_partitioned_like_it():
    nodes = [rng(2), NarrowNode(parent=0, fn="a"), rng(3), rng(4), NarrowNode(parent=3, fn="c"),
             CoGroupNode(parents=[1, 2, 4], partitions=5, shuffled=[True, True, True])]
    job = plan_job(LogicalPlan(nodes=nodes))
    assert len(job.stages) == 4
    *maps, cogroup = job.stages
    assert cogroup.parents == [0, 1, 2] and cogroup.spec.partitions == 5
    assert [m.spec.partitions for m in maps] == [2, 3, 4]
    assert [m.spec.ops for m in maps] == [["a"], [], ["c"]]
    ids = shuffles_written(job)
    assert len(set(ids)) == 3 and all(i >= len(nodes) for i in ids)  # shuffles of no node: ids past every node
    assert all(m.spec.output == ShuffleWrite(shuffle_id=i, partitions=5, aggregator=GROUP) for m, i in zip(maps, ids, strict=True))
    assert cogroup.spec.input == CoGroupInput(branches=[
        Branch(input=ShuffleRead(shuffle_id=i, map_partitions=m.spec.partitions, aggregator=GROUP), ops=[], partitions=5, grouped=True)
        for m, i in zip(maps, ids, strict=True)
    ])
    assert [len(task_shuffles(cogroup.spec.input, p)) for p in range(5)] == [3] * 5  # every task reads all three


def co_partitioned_join(partitions: int = 3) -> list:  # type: ignore[type-arg]
    """What `a.reduce_by_key(f, n).join(b.reduce_by_key(f, n))` submits: both sides one-to-one."""
    return [
        rng(4), NarrowNode(parent=0, fn="pair"), ShuffleNode(parent=1, partitions=3, aggregator=ADD),
        rng(2), NarrowNode(parent=3, fn="pair"), ShuffleNode(parent=4, partitions=3, aggregator=ADD),
        CoGroupNode(parents=[2, 5], partitions=partitions, shuffled=[False, False]), NarrowNode(parent=6, fn="join"),
    ]


def test_a_join_of_two_reduce_by_keys_with_the_same_partitions_runs_no_new_shuffle():
    job = plan_job(LogicalPlan(nodes=co_partitioned_join()))
    assert len(job.stages) == 3  # the two reduce_by_keys' map stages, and the stage that reduces and joins
    assert shuffles_written(job) == [2, 5]  # only the reduce_by_keys' own shuffles
    join = job.result_stage
    assert join.parents == [0, 1] and join.spec.partitions == 3 and join.spec.ops == ["join"]
    assert join.spec.input == CoGroupInput(branches=[
        Branch(input=ShuffleRead(shuffle_id=2, map_partitions=4, aggregator=ADD), ops=[], partitions=3),
        Branch(input=ShuffleRead(shuffle_id=5, map_partitions=2, aggregator=ADD), ops=[], partitions=3),
    ])
    assert shuffle_readers(join.spec) == {2: [0, 1, 2], 5: [0, 1, 2]}
    assert join.spec.code_keys() == ["join", "add", "add"]


def test_a_side_read_one_to_one_must_have_the_cogroups_partition_count():
    with pytest.raises(PlanError, match="partition to partition"):
        plan_job(LogicalPlan(nodes=co_partitioned_join(partitions=4)))


def test_a_join_after_a_join_stays_in_one_stage_when_partitioned_alike():
    nodes = co_partitioned_join()
    nodes += [rng(5), ShuffleNode(parent=8, partitions=3, aggregator=GROUP), NarrowNode(parent=9, fn="keep"),
              CoGroupNode(parents=[7, 10], partitions=3, shuffled=[False, False]), NarrowNode(parent=11, fn="join")]
    job = plan_job(LogicalPlan(nodes=nodes))
    assert len(job.stages) == 4 and shuffles_written(job) == [2, 5, 9]
    outer = job.result_stage
    assert outer.parents == [0, 1, 2]
    inner, third = outer.spec.input.branches  # type: ignore[union-attr]
    assert isinstance(inner.input, CoGroupInput) and inner.ops == ["join"]
    assert third == Branch(input=ShuffleRead(shuffle_id=9, map_partitions=5, aggregator=GROUP), ops=["keep"], partitions=3)
    assert [r.shuffle_id for r, _ in task_shuffles(outer.spec.input, 1)] == [2, 5, 9]


def test_a_join_after_a_join_into_other_partitions_shuffles_the_first_joins_output():
    nodes = co_partitioned_join()
    nodes += [rng(5), CoGroupNode(parents=[7, 8], partitions=2, shuffled=[True, True])]
    job = plan_job(LogicalPlan(nodes=nodes))
    assert [s.parents for s in job.stages] == [[], [], [0, 1], [], [2, 3]]
    first_join = job.stages[2]
    assert isinstance(first_join.spec.input, CoGroupInput) and isinstance(first_join.spec.output, ShuffleWrite)


def test_a_diamond_reads_a_dataset_on_both_sides_of_a_cogroup_once():
    # x = reduce_by_key(...); x.join(x.filter(...)): one map stage, one shuffle read twice by each task
    nodes = [rng(4), ShuffleNode(parent=0, partitions=2, aggregator=ADD), NarrowNode(parent=1, fn="filter"),
             CoGroupNode(parents=[1, 2], partitions=2, shuffled=[False, False])]
    job = plan_job(LogicalPlan(nodes=nodes))
    assert len(job.stages) == 2 and job.result_stage.parents == [0]
    read = ShuffleRead(shuffle_id=1, map_partitions=4, aggregator=ADD)
    assert job.result_stage.spec.input == CoGroupInput(branches=[
        Branch(input=read, ops=[], partitions=2), Branch(input=read, ops=["filter"], partitions=2)])
    assert task_shuffles(job.result_stage.spec.input, 1) == [(read, 1)]


def test_a_diamond_with_both_sides_shuffled_runs_the_shared_pipeline_once_per_side():
    # x = source.map(pair); x.join(x.filter(...)): each side is shuffled from the same source
    nodes = [rng(3), NarrowNode(parent=0, fn="pair"), NarrowNode(parent=1, fn="filter"),
             CoGroupNode(parents=[1, 2], partitions=2, shuffled=[True, True])]
    job = plan_job(LogicalPlan(nodes=nodes))
    assert [s.spec.ops for s in job.stages] == [["pair"], ["pair", "filter"], []]
    assert len(set(shuffles_written(job))) == 2


def test_a_shuffle_read_at_two_places_of_a_union_is_written_once_per_place():
    # x.union(x) for a shuffled x: each reduce partition has one reader task, so x's map stage runs twice
    nodes = [rng(3), ShuffleNode(parent=0, partitions=2, aggregator=ADD), UnionNode(parents=[1, 1])]
    job = plan_job(LogicalPlan(nodes=nodes))
    assert len(job.stages) == 3 and job.result_stage.parents == [0, 1]
    assert shuffles_written(job) == [1, 3]
    assert shuffle_readers(job.result_stage.spec) == {1: [0, 1], 3: [2, 3]}


def test_a_shuffle_read_by_two_stages_is_written_once_per_reader():
    # y = x.reduce_by_key(n=2); y.join(z, partitions=3) shuffles y again, and y also feeds the union
    nodes = [rng(3), ShuffleNode(parent=0, partitions=2, aggregator=ADD), rng(2),
             CoGroupNode(parents=[1, 2], partitions=3, shuffled=[True, True]), UnionNode(parents=[3, 1])]
    job = plan_job(LogicalPlan(nodes=nodes))
    written = shuffles_written(job)
    assert len(written) == len(set(written)) == 4  # y twice (once per reader), and the cogroup's two sides
    readers: dict[int, int] = {}
    for stage in job.stages:
        for shuffle_id in shuffle_readers(stage.spec):
            assert shuffle_id not in readers, f"shuffle {shuffle_id} has two reader stages"
            readers[shuffle_id] = stage.stage_id
    assert sorted(readers) == sorted(written)
    assert all(max(s.parents, default=-1) < s.stage_id for s in job.stages)  # dependency order


def test_plans_with_unions_and_cogroups_cover_their_code_and_survive_the_wire():
    nodes = co_partitioned_join() + [rng(2), NarrowNode(parent=8, fn="u"), UnionNode(parents=[7, 9])]
    logical = LogicalPlan(nodes=nodes)
    job = plan_job(logical)
    assert {k for s in job.stages for k in s.spec.code_keys()} == logical.code_keys()
    for stage in job.stages:
        assert msgspec.msgpack.decode(msgspec.msgpack.encode(stage.spec), type=StageSpec) == stage.spec
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(logical), type=LogicalPlan) == logical


@pytest.mark.parametrize(
    ("nodes", "match"),
    [
        ([rng(2), UnionNode(parents=[0, 1])], "does not come before it"),
        ([rng(2), CoGroupNode(parents=[0], partitions=2, shuffled=[])], "shuffle flags"),
        ([rng(2), ShuffleNode(parent=0, partitions=2, aggregator=GROUP), StateNode(parent=1, fn="s", state_id="st"),
          UnionNode(parents=[2, 0])], "cannot feed a union"),
        ([rng(2), SourceNode(source=CollectionSource(slices=[])), UnionNode(parents=[0, 1])], "no partitions"),
    ],
)
def test_malformed_dags_are_rejected(nodes, match):  # type: ignore[no-untyped-def]
    with pytest.raises(PlanError, match=match):
        plan_job(LogicalPlan(nodes=nodes))


def test_pipeline_keys_tell_union_stages_apart_by_their_branches_not_their_batches():
    def union_of(fn: str, batch: int) -> StageSpec:
        generated = GeneratorSource(fn="gen", partitions=2, batch=batch)
        nodes = [SourceNode(source=generated), NarrowNode(parent=0, fn=fn), rng(1), UnionNode(parents=[1, 2])]
        return plan_job(LogicalPlan(nodes=nodes)).result_stage.spec

    assert union_of("f", 0).pipeline_key() == union_of("f", 1).pipeline_key()
    assert union_of("f", 0).key() != union_of("f", 1).key()
    assert union_of("f", 0).pipeline_key() != union_of("g", 0).pipeline_key()


def test_a_long_iteration_of_shuffled_joins_plans():
    # x = x.join(other, partitions=2) a thousand times, each shuffling both sides: stages a thousand deep
    nodes: list = [rng(2), rng(3)]
    for _ in range(1000):
        nodes.append(CoGroupNode(parents=[len(nodes) - 1, 1], partitions=2, shuffled=[True, True]))
        nodes.append(NarrowNode(parent=len(nodes) - 1, fn="join"))
    job = plan_job(LogicalPlan(nodes=nodes))
    assert len(job.stages) == 1 + 2 * 1000  # the first source's, and per join its other side's and its own
    assert all(max(s.parents, default=-1) < s.stage_id for s in job.stages)
    assert len(job.result_stage.parents) == 2


def test_a_range_partitioned_shuffle_keeps_its_partitioner_and_a_cogroup_shuffles_it_by_hash():
    by_range = RangePartitioner(bounds=b"bounds", descending=True)
    nodes = [rng(3), ShuffleNode(parent=0, partitions=2, aggregator=GROUP, partitioner=by_range), rng(2),
             CoGroupNode(parents=[1, 2], partitions=2, shuffled=[True, True])]
    job = plan_job(LogicalPlan(nodes=nodes))
    writes = {s.spec.output.shuffle_id: s.spec.output for s in job.stages if isinstance(s.spec.output, ShuffleWrite)}
    assert writes[1].partitioner == by_range  # sort_by's own shuffle
    assert [w.partitioner for i, w in sorted(writes.items()) if i != 1] == [None, None]  # the cogroup's, by hash


def test_a_plan_that_expands_without_bound_is_refused_quickly():
    # x = x.cogroup(x) forty times, every side read one-to-one: 2**40 branches if walked out
    nodes: list = [rng(2), ShuffleNode(parent=0, partitions=2, aggregator=ADD)]
    for _ in range(40):
        nodes.append(CoGroupNode(parents=[len(nodes) - 1, len(nodes) - 1], partitions=2, shuffled=[False, False]))
    with pytest.raises(PlanError, match="expands to more than"):
        plan_job(LogicalPlan(nodes=nodes))


def test_a_union_of_too_many_partitions_is_refused():
    nodes: list = [rng(600_000), rng(600_000), UnionNode(parents=[0, 1])]
    with pytest.raises(PlanError, match="node 2 has 1200000 partitions"):
        plan_job(LogicalPlan(nodes=nodes))
