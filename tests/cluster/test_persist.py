"""Persisted datasets on a real cluster: the executors that compute a persisted dataset keep its
partitions and the block directory lists them; a later job reads them instead of computing them
again (its records counted where they are made: in files, since tasks run in other processes),
in BSP and Drizzle modes, by batch and latency tasks; unpersist() drops them everywhere; past
the executors' budget, partitions are computed again and results stay right."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import squall
from squall import LocalCluster
from squall.health import tracked
from tests.conftest import fast_settings
from tests.polling import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(90)]

MODES = {"bsp": dict(preschedule=False), "drizzle": dict(preschedule=True, group_size=1)}
PARTITIONS = 4


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    """A cluster of this module's own: what it holds is what these tests persisted."""
    with LocalCluster(executors=3, settings=fast_settings()) as c:
        yield c


@pytest.fixture()
def ctx(cluster: LocalCluster) -> Iterator[squall.Context]:
    with cluster.connect() as context:
        yield context
    with cluster.connect() as probe:  # the driver gone, its persisted datasets go
        wait_until(lambda: held_and_listed(cluster, probe) == (0, 0), what="no block left on any executor or in the directory")


def counted(path: str, x: int) -> int:
    """x squared, with a line appended to `path` for each record computed."""
    with open(path, "a") as f:
        f.write("x\n")
    return x * x


def computed(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def held_and_listed(cluster: LocalCluster, ctx: squall.Context) -> tuple[int, int]:
    """Blocks held, over all executors, and blocks the directory (shuffle_meta) lists."""
    held = sum(tracked(e.data_address, cluster.settings).sizes["persisted_blocks"] for e in ctx.status().executors)
    return held, tracked(cluster.shuffle_meta_address, cluster.settings).sizes["persisted_blocks"]


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("priority", ["batch", "latency"])
def test_a_persisted_dataset_is_computed_once_then_read_from_the_executors_and_unpersisted(
        cluster: LocalCluster, ctx: squall.Context, tmp_path: Path, mode: str, priority: str) -> None:
    log = tmp_path / "computed"
    squares = ctx.parallelize(range(100), partitions=PARTITIONS).map(functools.partial(counted, str(log))).persist()

    def run(ds: squall.Dataset) -> Any:
        return ctx.run_jobs([ds], priority=priority, **MODES[mode])[0]  # type: ignore[arg-type]

    assert run(squares) == [x * x for x in range(100)]
    assert computed(log) == 100
    wait_until(lambda: held_and_listed(cluster, ctx) == (PARTITIONS, PARTITIONS), what="every partition held and listed in the directory")

    assert sorted(run(squares.map(lambda x: x + 1))) == sorted(x * x + 1 for x in range(100))
    assert sorted(run(squares.map(lambda x: (x % 3, 1)).reduce_by_key(lambda a, b: a + b))) == [(0, 34), (1, 66)]
    assert computed(log) == 100, "a later job computed the persisted dataset again instead of reading its blocks"

    squares.unpersist()
    wait_until(lambda: held_and_listed(cluster, ctx) == (0, 0), what="the blocks dropped on every executor and in the directory")
    assert run(squares) == [x * x for x in range(100)]
    assert computed(log) == 200  # no longer persisted: computed from its lineage


def pairs(path: str, x: int) -> tuple[int, int]:
    return x % 10, counted(path, x)


@pytest.mark.parametrize("mode", sorted(MODES))
def test_a_join_of_two_persisted_datasets_reads_a_block_of_each_and_computes_neither_again(
        ctx: squall.Context, tmp_path: Path, mode: str) -> None:
    """Both sides are hash-partitioned alike, so each join task reads a block of each: later jobs
    compute neither side again."""
    log = tmp_path / "computed"
    left = ctx.parallelize(range(60), partitions=3).map(functools.partial(pairs, str(log))).reduce_by_key(max, partitions=4).persist()
    right = ctx.parallelize(range(60, 100), partitions=3).map(functools.partial(pairs, str(log))).reduce_by_key(min, partitions=4).persist()
    joined = left.join(right)
    expected = sorted((k, (max(x * x for x in range(60) if x % 10 == k), min(x * x for x in range(60, 100) if x % 10 == k)))
                      for k in range(10))
    for _ in range(3):
        assert sorted(ctx.run_jobs([joined], **MODES[mode])[0]) == expected  # type: ignore[arg-type]
    assert computed(log) == 100  # each side computed by the first job only (the context's end drops them)


def test_partitions_past_the_budget_are_computed_again_and_the_results_stay_right(tmp_path: Path) -> None:
    """With room for about three of its eight blocks (150-270 bytes each) per executor, a dataset
    is kept only in part: a later job reads what is held, computes the rest again, and gets the
    same answer."""
    log = tmp_path / "computed"
    with LocalCluster(executors=2, settings=fast_settings(persist_memory=600)) as small, small.connect() as c:
        data = c.parallelize(range(400), partitions=8).map(functools.partial(counted, str(log))).persist()
        expected = [x * x for x in range(400)]
        assert c.run_jobs([data], preschedule=True, group_size=1)[0] == expected
        assert computed(log) == 400
        held = sum(tracked(e.data_address, small.settings).sizes["persisted_blocks"] for e in c.status().executors)
        assert 0 < held < 8
        for e in c.status().executors:
            assert tracked(e.data_address, small.settings).sizes["persisted_bytes"] <= 600
        assert c.run_jobs([data], preschedule=True, group_size=1)[0] == expected
        assert 400 < computed(log) < 800  # the partitions dropped were computed again; the others read
