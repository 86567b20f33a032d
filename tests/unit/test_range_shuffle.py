"""Range-partitioned shuffles (sort_by's): the plan structs, the planner, the executor's routing,
and the pure steps around them (the key sample, the bounds, the sort within a partition)."""

from __future__ import annotations

import functools
import random

import msgspec
import pytest
from squall.common.partitioning import partition_of
from squall.common.plan import (
    Aggregator,
    CollectionSource,
    LogicalPlan,
    RangePartitioner,
    ShuffleNode,
    ShuffleWrite,
    SourceNode,
    StageSpec,
    code_key,
)
from squall.common.serialization import dumps_block, dumps_function, loads_block
from squall.services.executor.tasks import CodeCache, RecordError, run_task
from squall.services.scheduler.planner import plan_job

from squall import ops
from squall.dataset import _range_bounds

GROUP = Aggregator(kind="group")
CODE: dict[str, bytes] = {}


def key(fn) -> str:  # type: ignore[no-untyped-def]
    blob = dumps_function(fn)
    CODE[code_key(blob)] = blob
    return code_key(blob)


def ranged(bounds: list, descending: bool = False) -> RangePartitioner:  # type: ignore[type-arg]
    return RangePartitioner(bounds=dumps_block(bounds), descending=descending)


def shuffle_out(records: list, partitions: int, partitioner: RangePartitioner | None) -> list[list]:  # type: ignore[type-arg]
    """Run one map task over `records` (already (key, value) pairs): each reduce partition's pairs."""
    spec = StageSpec(
        partitions=1,
        input=CollectionSource(slices=[dumps_block(records)]),
        ops=[],
        output=ShuffleWrite(shuffle_id=1, partitions=partitions, aggregator=GROUP, partitioner=partitioner),
    )
    out = run_task(spec, 0, [], CodeCache(CODE))
    return [loads_block(block) for block in out.blocks]


def test_hash_shuffles_encode_as_they_did_before_range_partitioners():
    class OldShuffleWrite(msgspec.Struct, tag="shuffle_write", frozen=True):  # the struct without the field
        shuffle_id: int
        partitions: int
        aggregator: Aggregator

    class OldShuffleNode(msgspec.Struct, tag="shuffle", frozen=True):
        parent: int
        partitions: int
        aggregator: Aggregator

    node = msgspec.msgpack.encode(ShuffleNode(parent=0, partitions=3, aggregator=GROUP))
    assert node == msgspec.msgpack.encode(OldShuffleNode(parent=0, partitions=3, aggregator=GROUP))
    new = msgspec.msgpack.encode(ShuffleWrite(shuffle_id=2, partitions=3, aggregator=GROUP))
    assert new == msgspec.msgpack.encode(OldShuffleWrite(shuffle_id=2, partitions=3, aggregator=GROUP))
    assert msgspec.msgpack.decode(new, type=ShuffleWrite).partitioner is None
    with_range = ShuffleWrite(shuffle_id=2, partitions=3, aggregator=GROUP, partitioner=ranged([5, 9]))
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(with_range), type=ShuffleWrite) == with_range


def test_the_planner_carries_the_partitioner_to_the_map_stage():
    source = SourceNode(source=CollectionSource(slices=[dumps_block([])]))
    partitioner = ranged([1, 2])
    plan = plan_job(
        LogicalPlan(nodes=[source, ShuffleNode(parent=0, partitions=3, aggregator=GROUP, partitioner=partitioner)])
    )
    assert plan.stages[0].spec.output.partitioner == partitioner  # type: ignore[union-attr]
    hashed = plan_job(LogicalPlan(nodes=[source, ShuffleNode(parent=0, partitions=3, aggregator=GROUP)]))
    assert hashed.stages[0].spec.output.partitioner is None  # type: ignore[union-attr]
    assert hashed.stages[0].spec.key() != plan.stages[0].spec.key()


def test_hash_shuffles_still_place_keys_by_partition_of():
    records = [(k, 1) for k in [0, 1, 2, 3, "a", "b", (1, "x"), None]]
    out = shuffle_out(records, 3, None)
    for partition, pairs in enumerate(out):
        assert all(partition_of(k, 3) == partition for k, _ in pairs)
    assert sorted(map(repr, (k for pairs in out for k, _ in pairs))) == sorted(repr(k) for k, _ in records)


@pytest.mark.parametrize("descending", [False, True])
def test_range_shuffle_puts_each_key_between_its_bounds(descending):  # type: ignore[no-untyped-def]
    records = [(k, f"r{k}") for k in range(-3, 15)]
    out = shuffle_out(records, 3, ranged([4, 9], descending))
    parts = [sorted(k for k, _ in pairs) for pairs in out]
    low, middle, high = list(range(-3, 5)), list(range(5, 10)), list(range(10, 15))  # a key equal to a bound goes below it
    assert parts == ([high, middle, low] if descending else [low, middle, high])
    assert all(values == [f"r{k}"] for pairs in out for k, values in pairs)


def test_range_shuffle_with_no_bounds_keeps_everything_in_one_partition():
    out = shuffle_out([(3, "a"), (1, "b"), (3, "c")], 4, ranged([]))
    assert out[0] == [(3, ["a", "c"]), (1, ["b"])] and out[1:] == [[], [], []]


def test_keys_that_do_not_compare_with_the_bounds_are_a_record_error():
    with pytest.raises(RecordError, match=r"sort keys must compare.*'x' \(str\).*\(int\)"):
        shuffle_out([(1, 1), ("x", 2)], 2, ranged([5]))


def test_sample_is_bounded_uniform_and_the_same_every_time():
    records = list(range(10_000))
    sample = ops.sample_keys_op(lambda r: -r, 50, iter(records))
    assert len(sample) == 50 and len(set(sample)) == 50
    assert all(-9999 <= k <= 0 for k in sample)
    assert min(sample) < -5000 < max(sample)  # from the whole partition, not its start
    assert sample == ops.sample_keys_op(lambda r: -r, 50, iter(records))
    assert ops.sample_keys_op(str, 5, iter([1, 2])) == ["1", "2"]


def test_bounds_cut_the_sample_into_equal_parts():
    sample = list(range(100))
    random.Random(1).shuffle(sample)
    assert _range_bounds(sample, 4) == [25, 50, 75]
    assert _range_bounds(sample, 1) == []
    assert _range_bounds([], 5) == []
    assert _range_bounds([7], 3) == [7, 7]  # fewer keys than partitions: ranges may be empty
    with pytest.raises(TypeError, match="sort_by keys must compare with each other"):
        _range_bounds([1, "a"], 2)


def test_sort_within_a_partition_and_its_errors():
    groups = [(3, ["c1", "c2"]), (1, ["a"]), (2, ["b"])]
    assert list(ops.sorted_groups_op(False, iter(groups))) == ["a", "b", "c1", "c2"]
    assert list(ops.sorted_groups_op(True, iter(groups))) == ["c1", "c2", "b", "a"]
    with pytest.raises(TypeError, match="sort_by keys must compare with each other"):
        list(ops.sorted_groups_op(False, iter([(1, ["x"]), ("a", ["y"])])))
    pairs = ops.sort_key_op(lambda r: [r], iter([1]))
    with pytest.raises(TypeError, match="sort_by keys must be hashable, got list"):
        next(pairs)


def test_pair_operators_name_the_record_that_is_not_a_pair():
    assert list(ops.map_values_op(str, iter([(1, 2), ["k", 3]]))) == [(1, "2"), ("k", "3")]
    assert list(ops.flat_map_values_op(range, iter([("a", 2), ("b", 0)]))) == [("a", 0), ("a", 1)]
    assert list(ops.keys_op(iter([(1, 2), (3, 4)]))) == [1, 3]
    assert list(ops.values_op(iter([(1, 2), (3, 4)]))) == [2, 4]
    for op, name in [(functools.partial(ops.map_values_op, str), "map_values"), (ops.keys_op, "keys"), (ops.values_op, "values"),
                     (functools.partial(ops.flat_map_values_op, list), "flat_map_values")]:
        with pytest.raises(TypeError, match=rf"^{name}\(\) needs \(key, value\) pairs, got int: 7$"):
            list(op(iter([7])))
    assert list(ops.skipping_map_values_op(lambda v: 1 / v, iter([(1, 0), 5, (2, 4)]))) == [(2, 0.25)]


def test_take_and_sum_adapters():
    assert ops.take_op(3, iter(range(10**9))) == [0, 1, 2]  # stops reading after n
    assert ops.take_op(5, iter([1])) == [1]
    assert ops.sum_op(iter([])) == [0]
    assert ops.sum_op(iter([1.5, 2])) == [3.5]
