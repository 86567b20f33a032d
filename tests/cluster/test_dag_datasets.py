"""Unions, cogroups and joins on a real cluster, against plain Python, in BSP and Drizzle modes;
co-partitioned sides read without a shuffle; and an executor killed in the middle of a join."""

from __future__ import annotations

import operator
import os
import signal
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from squall.common.plan import CoGroupInput, ShuffleWrite
from squall.services.scheduler.planner import plan_job

import squall
from squall import LocalCluster
from tests.cluster.helpers import Background, executor_pid
from tests.conftest import fast_settings
from tests.polling import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(90)]

MODES = {
    "bsp": dict(preschedule=False),
    "drizzle": dict(preschedule=True, group_size=1),
    "drizzle-group-3": dict(preschedule=True, group_size=3),
}


@pytest.fixture(scope="module")
def mctx(cluster: LocalCluster) -> Iterator[squall.Context]:
    """One connection for the module (the hypothesis test runs many examples on it)."""
    with cluster.connect() as context:
        yield context


def run(ctx: squall.Context, mode: str, *datasets: squall.Dataset) -> list[Any]:
    return ctx.run_jobs(list(datasets), **MODES[mode])  # type: ignore[arg-type]


def python_cogroup(*sides: list[tuple[Any, Any]]) -> dict[Any, tuple[list[Any], ...]]:
    groups: dict[Any, tuple[list[Any], ...]] = defaultdict(lambda: tuple([] for _ in sides))
    for index, side in enumerate(sides):
        for key, value in side:
            groups[key][index].append(value)
    return dict(groups)


def python_join(left: list[tuple[Any, Any]], right: list[tuple[Any, Any]], how: str) -> list[tuple[Any, Any]]:
    out = []
    for key, (lefts, rights) in python_cogroup(left, right).items():
        if lefts and rights:
            out += [(key, (a, b)) for a in lefts for b in rights]
        elif lefts and how == "left":
            out += [(key, (a, None)) for a in lefts]
        elif rights and how == "right":
            out += [(key, (None, b)) for b in rights]
    return out


def canonical(cogrouped: list[tuple[Any, tuple[list[Any], ...]]]) -> dict[Any, tuple[list[Any], ...]]:
    result = {key: tuple(sorted(values) for values in lists) for key, lists in cogrouped}
    assert len(result) == len(cogrouped), "a key came out of the cogroup more than once"
    return result


def new_shuffles(ds: squall.Dataset) -> list[int]:
    """The shuffles a dataset's job writes."""
    return [s.spec.output.shuffle_id for s in plan_job(ds.plan()).stages if isinstance(s.spec.output, ShuffleWrite)]


@pytest.mark.parametrize("mode", list(MODES))
def test_union_gives_each_datasets_partitions_in_turn(mctx, mode: str) -> None:  # type: ignore[no-untyped-def]
    numbers = mctx.range(10, partitions=3).map(lambda x: x * 10)
    words = mctx.parallelize(["a", "b", "c"], partitions=2)
    sums = mctx.range(30, partitions=4).map(lambda x: (x % 4, x)).reduce_by_key(operator.add, 2)
    union = numbers.union(words, sums)
    assert union.partitions == 3 + 2 + 2
    got, alone_numbers, alone_words, alone_sums = run(mctx, mode, union, numbers, words, sums)
    assert got == alone_numbers + alone_words + alone_sums  # partitions a's, then b's, then c's
    assert alone_numbers == [x * 10 for x in range(10)] and alone_words == ["a", "b", "c"]
    assert sorted(alone_sums) == sorted({k: sum(x for x in range(30) if x % 4 == k) for k in range(4)}.items())
    counted = union.map(lambda r: (type(r).__name__, 1)).reduce_by_key(operator.add, 2)
    assert dict(run(mctx, mode, counted)[0]) == {"int": 10, "str": 3, "tuple": 4}


@pytest.mark.parametrize("mode", list(MODES))
def test_cogroup_of_three_matches_python(mctx, mode: str) -> None:  # type: ignore[no-untyped-def]
    a = [(x % 5, x) for x in range(20)]
    b = [(k, str(k)) for k in (1, 3, 3, 7)]
    c = [(x % 3, -x) for x in range(9)]
    ds = mctx.parallelize(a, 3).cogroup(mctx.parallelize(b, 2), mctx.range(9, partitions=2).map(lambda x: (x % 3, -x)), partitions=4)
    assert ds.partitions == 4
    (got,) = run(mctx, mode, ds)
    assert canonical(got) == {k: tuple(sorted(v) for v in lists) for k, lists in python_cogroup(a, b, c).items()}


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("how", ["inner", "left", "right"])
def test_join_matches_python(mctx, mode: str, how: str) -> None:  # type: ignore[no-untyped-def]
    left = [(x % 6, x) for x in range(15)]
    right = [(k, f"v{k}") for k in (0, 2, 2, 4, 8)]
    ds = mctx.parallelize(left, 3).join(mctx.parallelize(right, 2), how=how)
    (got,) = run(mctx, mode, ds)
    assert sorted(got, key=repr) == sorted(python_join(left, right, how), key=repr)


@pytest.mark.parametrize("mode", list(MODES))
def test_a_join_of_co_partitioned_reduce_by_keys_shuffles_nothing_again(mctx, mode: str) -> None:  # type: ignore[no-untyped-def]
    counts = mctx.range(100, partitions=4).map(lambda x: (x % 7, 1)).reduce_by_key(operator.add, 3)
    sums = mctx.range(50, partitions=2).map(lambda x: (x % 5, x)).reduce_by_key(operator.add, 3)
    joined = counts.join(sums)
    assert (counts.hash_partitions, sums.hash_partitions, joined.hash_partitions) == (3, 3, 3)
    assert len(new_shuffles(joined)) == 2  # the two reduce_by_keys' own: no shuffle of the join's
    stages = plan_job(joined.plan()).stages
    assert len(stages) == 3 and isinstance(stages[-1].spec.input, CoGroupInput)
    (got,) = run(mctx, mode, joined)
    count_of = {k: sum(1 for x in range(100) if x % 7 == k) for k in range(7)}
    sum_of = {k: sum(x for x in range(50) if x % 5 == k) for k in range(5)}
    assert sorted(got) == sorted((k, (count_of[k], sum_of[k])) for k in range(5))


@pytest.mark.parametrize("mode", list(MODES))
def test_a_join_after_a_join_and_a_diamond(mctx, mode: str) -> None:  # type: ignore[no-untyped-def]
    base = mctx.range(40, partitions=4).map(lambda x: (x % 8, x))
    sums = base.reduce_by_key(operator.add, 2)
    firsts = base.reduce_by_key(min, 2)
    names = mctx.parallelize([(k, f"n{k}") for k in range(0, 8, 2)], 2)
    twice = sums.join(firsts).join(names, how="left")  # the first join is read one-to-one; names shuffled
    diamond = sums.join(sums.filter(lambda kv: kv[0] % 2 == 1), how="left")  # one dataset on both sides
    assert len(new_shuffles(diamond)) == 1  # sums' own, read on both sides
    got_twice, got_diamond = run(mctx, mode, twice, diamond)
    sum_of = {k: sum(x for x in range(40) if x % 8 == k) for k in range(8)}
    assert sorted(got_twice) == sorted((k, ((sum_of[k], k), f"n{k}" if k % 2 == 0 else None)) for k in range(8))
    assert sorted(got_diamond) == sorted((k, (sum_of[k], sum_of[k] if k % 2 else None)) for k in range(8))


def test_partitioning_is_kept_or_lost_as_the_keys_are(mctx) -> None:  # type: ignore[no-untyped-def]
    sums = mctx.range(10).map(lambda x: (x % 3, x)).reduce_by_key(operator.add, 4)
    assert sums.hash_partitions == 4 and sums.filter(bool).hash_partitions == 4
    assert sums.flat_map_values(lambda v: [v, v]).hash_partitions == 4 and sums.map_values(str).hash_partitions == 4
    assert sums.group_by_key(2).hash_partitions == 2 and sums.cogroup(sums).hash_partitions == 4
    by_range = sums.sort_by(lambda kv: kv[0], partitions=4)  # partitioned by key range, not hash
    for lost in (sums.map(lambda kv: kv), sums.flat_map(lambda kv: [kv]), sums.map_partitions(list), sums.union(sums),
                 sums.keys(), sums.distinct(), by_range):
        assert lost.hash_partitions is None
    assert mctx.range(10).hash_partitions is None
    assert sorted(sums.flat_map_values(lambda v: [v, -v]).collect()) == sorted(
        (k, s) for k in range(3) for v in [sum(x for x in range(10) if x % 3 == k)] for s in (v, -v))
    # a side partitioned otherwise is shuffled into the result's partitions
    assert len(new_shuffles(sums.join(sums, partitions=3))) == len(new_shuffles(sums)) * 2 + 2


def test_bad_arguments_raise_where_they_are_written(mctx) -> None:  # type: ignore[no-untyped-def]
    ds = mctx.range(4).map(lambda x: (x, x))
    with pytest.raises(ValueError, match="how must be one of 'inner', 'left', 'right'"):
        ds.join(ds, how="outer")
    with pytest.raises(TypeError, match="union takes datasets, got list"):
        ds.union([1, 2])
    with pytest.raises(TypeError, match="cogroup takes datasets"):
        ds.cogroup(ds, "x")
    with pytest.raises(TypeError, match="join takes datasets, got dict"):
        ds.join({1: 2})
    for bad in (0, -1, 2.5, "3"):
        with pytest.raises(ValueError, match="partitions must be a positive integer"):
            ds.cogroup(ds, partitions=bad)
    big = mctx.range(10, partitions=600_000)
    with pytest.raises(ValueError, match="a union of 1200000 partitions is more than 1000000"):
        big.union(big)
    with mctx.__class__(mctx.address, mctx.settings) as other:
        with pytest.raises(ValueError, match="same context"):
            ds.union(other.range(3))
    with pytest.raises(squall.TaskError, match="needs \\(key, value\\) pairs"):
        mctx.range(4).cogroup(ds).collect()


keys = st.one_of(st.integers(min_value=-4, max_value=4), st.text(alphabet="ab", max_size=2))
pairs = st.lists(st.tuples(keys, st.integers(min_value=-50, max_value=50)), max_size=25)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(left=pairs, right=pairs, how=st.sampled_from(["inner", "left", "right"]),
       sides=st.tuples(st.integers(1, 4), st.integers(1, 4)), partitions=st.none() | st.integers(1, 5),
       partitioned=st.booleans())
def test_join_is_plain_pythons_join(mctx, left, right, how, sides, partitions, partitioned) -> None:  # type: ignore[no-untyped-def]
    a = mctx.parallelize(left, sides[0])
    b = mctx.parallelize(right, sides[1])
    if partitioned:  # sides partitioned alike: read one-to-one when the join keeps their 3 partitions
        a, b = a.reduce_by_key(operator.add, 3), b.reduce_by_key(operator.add, 3)
        left, right = summed(left), summed(right)
    got = a.join(b, how=how, partitions=partitions).collect()
    assert sorted(got, key=repr) == sorted(python_join(left, right, how), key=repr)


def summed(pairs: list[tuple[Any, int]]) -> list[tuple[Any, int]]:
    return [(key, sum(lists[0])) for key, lists in python_cogroup(pairs).items()]


def test_an_executor_killed_mid_join_loses_nothing(tmp_path: Path) -> None:
    """Drizzle: an executor SIGKILLed while it runs a map task of a join; the job is replayed on the
    survivors and gives exactly the failure-free answer."""

    def slow_pair(x: int) -> tuple[int, int]:
        (tmp_path / f"map-{executor_pid()}").touch()
        time.sleep(0.2)
        return (x % 5, x)

    with LocalCluster(executors=4, settings=fast_settings(preschedule=True)) as cluster, cluster.connect() as ctx:
        victim = cluster.pids["executor-1"]
        left = ctx.range(16, partitions=4).map(slow_pair).reduce_by_key(operator.add, 3)
        right = ctx.range(10, partitions=2).map(lambda x: (x % 7, x * x))
        job = Background(left.join(right, how="left").collect)
        wait_until(lambda: (tmp_path / f"map-{victim}").exists(), timeout=10, what="executor-1 running a map task")
        os.kill(victim, signal.SIGKILL)
        assert job.join(timeout=30), "the join hung after its executor died"
        sum_of = {k: sum(x for x in range(16) if x % 5 == k) for k in range(5)}
        squares = [(x % 7, x * x) for x in range(10)]
        assert sorted(job.outcome) == sorted(python_join(list(sum_of.items()), squares, "left"))
        assert "replaying" in cluster.log_text("scheduler")
