"""Every Dataset operation against plain Python, on the shared 4-executor cluster."""

from __future__ import annotations

import operator
from collections import Counter

import pytest
from squall.common.partitioning import partition_of

import squall
from tests.cluster.helpers import grouped, reduced

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(60)]

add = operator.add


def as_dict(pairs):  # type: ignore[no-untyped-def]
    """Collected (key, value) pairs as a dict, failing on a key that appears twice."""
    d = dict(pairs)
    assert len(d) == len(pairs), f"duplicate keys in shuffle output: {sorted(map(repr, pairs))}"
    return d


# --- sources -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [(10,), (3, 17), (0, 20, 3), (20, 0, -3), (-5, 6, 2), (7, -8, -5), (5, 5), (10, 0), (0, 1)],
    ids=repr,
)
@pytest.mark.parametrize("partitions", [1, 3, 8])
def test_range_matches_python(ctx, args, partitions):  # type: ignore[no-untyped-def]
    ds = ctx.range(*args, partitions=partitions)
    assert ds.collect() == list(range(*args))
    assert ds.count() == len(range(*args))


def test_range_default_partitions_and_bad_arguments(ctx):  # type: ignore[no-untyped-def]
    ds = ctx.range(100)
    assert ds.partitions == 4  # one per executor slot
    assert ds.collect() == list(range(100))
    with pytest.raises(ValueError, match="step"):
        ctx.range(0, 10, 0)
    with pytest.raises(ValueError, match="partitions"):
        ctx.range(10, partitions=0)


@pytest.mark.parametrize("partitions", [1, 2, 5, 13])
def test_parallelize_preserves_order(ctx, partitions):  # type: ignore[no-untyped-def]
    data = [("a", 1), None, 3.5, "x", (1, (2, 3)), b"raw", [1, 2], {"k": "v"}, -1, 10**30]
    assert ctx.parallelize(data, partitions).collect() == data
    assert ctx.parallelize(iter(data), partitions).count() == len(data)
    assert ctx.parallelize([], partitions).collect() == []


# --- narrow transformations ----------------------------------------------------------------------


def test_map_flat_map_filter_chain_preserves_order(ctx):  # type: ignore[no-untyped-def]
    data = list(range(-20, 57))
    ds = (
        ctx.parallelize(data, 5)
        .map(lambda x: x * 3 - 1)
        .filter(lambda x: x % 4 != 0)
        .flat_map(lambda x: [x] * (abs(x) % 3))
        .map(str)
    )
    expected = [str(y) for x in data for y in [x * 3 - 1] if y % 4 != 0 for _ in range(abs(y) % 3)]
    assert ds.collect() == expected
    assert ds.count() == len(expected)


def test_flat_map_accepts_generators_and_empty_results(ctx):  # type: ignore[no-untyped-def]
    def explode(n):  # type: ignore[no-untyped-def]
        yield from range(n)

    assert ctx.range(6, partitions=4).flat_map(explode).collect() == [i for n in range(6) for i in range(n)]
    assert ctx.range(6, partitions=4).flat_map(lambda x: ()).collect() == []


def test_map_partitions_sees_whole_partitions(ctx):  # type: ignore[no-untyped-def]
    data = list(range(10))
    sums = ctx.parallelize(data, 3).map_partitions(lambda it: [sum(it)]).collect()
    assert sums == [sum(data[0:3]), sum(data[3:6]), sum(data[6:10])]

    def running_total(it):  # type: ignore[no-untyped-def]
        total = 0
        for x in it:
            total += x
            yield total

    assert ctx.range(1, 7, partitions=2).map_partitions(running_total).collect() == [1, 3, 6, 4, 9, 15]


def test_map_partitions_returning_none_is_a_task_error(ctx):  # type: ignore[no-untyped-def]
    with pytest.raises(squall.TaskError) as info:
        ctx.range(4, partitions=2).map_partitions(lambda it: None).collect()
    assert info.value.error_type == "TypeError"
    assert "returned None" in str(info.value)


def test_datasets_are_immutable(ctx):  # type: ignore[no-untyped-def]
    base = ctx.range(5, partitions=2)
    doubled = base.map(lambda x: 2 * x)
    assert base.collect() == [0, 1, 2, 3, 4]
    assert doubled.collect() == [0, 2, 4, 6, 8]


def test_non_callables_and_bad_partition_counts_fail_at_build_time(ctx):  # type: ignore[no-untyped-def]
    ds = ctx.range(5, partitions=2)
    with pytest.raises(TypeError):
        ds.map(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="partitions"):
        ds.map(lambda x: (x, x)).reduce_by_key(add, partitions=0)
    with pytest.raises(ValueError, match="partitions"):
        ds.map(lambda x: (x, x)).group_by_key(partitions=-1)


# --- shuffles ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("map_parts", "reduce_parts"), [(1, 1), (4, 1), (1, 4), (3, 7), (6, 2), (5, None)])
def test_reduce_by_key_matches_python(ctx, map_parts, reduce_parts):  # type: ignore[no-untyped-def]
    data = [(x % 11, x) for x in range(300)] + [(x % 3, -x) for x in range(50)]
    result = ctx.parallelize(data, map_parts).reduce_by_key(add, partitions=reduce_parts).collect()
    assert as_dict(result) == reduced(data)


def test_reduce_by_key_combines_map_side(ctx):  # type: ignore[no-untyped-def]
    """A reduce function that always raises shows where it first runs: with a map-side combine,
    keys repeated within one map partition are merged in the map stage (stage 0); keys that
    meet only across partitions are merged in the reduce stage (stage 1)."""

    def boom(a, b):  # type: ignore[no-untyped-def]
        raise RuntimeError("combined")

    repeated_within = [("k", 1), ("k", 2), ("j", 3), ("j", 4)]
    with pytest.raises(squall.TaskError) as info:
        ctx.parallelize(repeated_within, 2).reduce_by_key(boom, partitions=2).collect()
    assert info.value.stage_id == 0

    across_only = [("k", 1), ("j", 3), ("k", 2), ("j", 4)]
    with pytest.raises(squall.TaskError) as info:
        ctx.parallelize(across_only, 2).reduce_by_key(boom, partitions=2).collect()
    assert info.value.stage_id == 1


@pytest.mark.parametrize(("map_parts", "reduce_parts"), [(1, 1), (4, 3), (2, 6), (7, 1)])
def test_group_by_key_matches_python(ctx, map_parts, reduce_parts):  # type: ignore[no-untyped-def]
    data = [(f"k{x % 9}", x * x % 17) for x in range(120)]
    result = ctx.parallelize(data, map_parts).group_by_key(partitions=reduce_parts).collect()
    assert {k: sorted(vs) for k, vs in as_dict(result).items()} == grouped(data)
    assert all(isinstance(vs, list) for _, vs in result)


def test_shuffle_of_non_pairs_is_a_task_error(ctx):  # type: ignore[no-untyped-def]
    with pytest.raises(squall.TaskError) as info:
        ctx.range(10, partitions=2).reduce_by_key(add).collect()
    assert info.value.error_type == "RecordError"
    assert "(key, value)" in str(info.value)


def test_chain_with_two_shuffles(ctx):  # type: ignore[no-untyped-def]
    words = [f"w{(i * 7919) % 23}" for i in range(400)]
    # word count, then how many words have each count
    ds = (
        ctx.parallelize(words, 5)
        .map(lambda w: (w, 1))
        .reduce_by_key(add, partitions=3)
        .map(lambda kv: (kv[1], kv[0]))
        .group_by_key(partitions=2)
        .map(lambda kv: (kv[0], len(kv[1])))
    )
    expected = Counter(Counter(words).values())
    assert as_dict(ds.collect()) == dict(expected)
    assert ds.count() == len(expected)


def test_shuffle_directly_after_shuffle(ctx):  # type: ignore[no-untyped-def]
    data = [(x % 5, x) for x in range(100)]
    ds = ctx.parallelize(data, 3).reduce_by_key(add, partitions=4).group_by_key(partitions=2)
    assert {k: vs for k, vs in as_dict(ds.collect()).items()} == {k: [v] for k, v in reduced(data).items()}


def test_string_and_tuple_keys_partition_stably_across_processes(ctx):  # type: ignore[no-untyped-def]
    """Equal keys from different executor processes must meet in the same reduce partition
    (Python's own str hash is salted per process), and that partition is partition_of(key)."""
    keys = [f"key-{i}" for i in range(40)] + [("t", i % 3, f"s{i % 4}") for i in range(12)]
    keys += [None, True, 0, b"bytes", frozenset({1, 2}), ("nested", ("x", 1.5)), "", "é", -7]
    data = [(k, 1) for k in keys for _ in range(3)]
    n = 5
    ds = ctx.parallelize(data, 6).reduce_by_key(add, partitions=n)
    assert as_dict(ds.collect()) == reduced(data)
    per_partition = ds.map_partitions(lambda it: [[k for k, _ in it]]).collect()
    assert len(per_partition) == n
    for index, part_keys in enumerate(per_partition):
        for key in part_keys:
            assert partition_of(key, n) == index, key


def test_equal_int_and_float_keys_are_combined(ctx):  # type: ignore[no-untyped-def]
    """Keys equal in Python (-1 and -1.0, 2**62 and its float) meet in one reduce partition."""
    data = [(-1, 1), (-1.0, 1), (2**62, 1), (float(2**62), 1), (3, 1), (3.0, 1)]
    result = ctx.parallelize(data, 3).reduce_by_key(add, partitions=3).collect()
    assert sorted(v for _, v in result) == [2, 2, 2]


# --- actions -------------------------------------------------------------------------------------


def test_count(ctx):  # type: ignore[no-untyped-def]
    assert ctx.range(1000, partitions=7).count() == 1000
    assert ctx.range(1000, partitions=7).filter(lambda x: x % 3 == 0).count() == 334
    assert ctx.range(0, partitions=3).count() == 0
    assert ctx.parallelize([("a", 1), ("b", 2), ("a", 3)], 2).group_by_key(3).count() == 2


def test_reduce(ctx):  # type: ignore[no-untyped-def]
    assert ctx.range(1, 101, partitions=6).reduce(add) == 5050
    assert ctx.range(10, partitions=3).reduce(max) == 9
    # not commutative: partials must be combined in partition order
    letters = list("abcdefghijklmnopqrstuvwxyz")
    assert ctx.parallelize(letters, 7).reduce(add) == "".join(letters)
    # most partitions empty after the filter
    assert ctx.range(100, partitions=8).filter(lambda x: x == 42).reduce(add) == 42


def test_reduce_of_empty_dataset_raises_value_error(ctx):  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="empty"):
        ctx.range(0, partitions=3).reduce(add)
    with pytest.raises(ValueError, match="empty"):
        ctx.range(50, partitions=4).filter(lambda x: x < 0).reduce(add)
