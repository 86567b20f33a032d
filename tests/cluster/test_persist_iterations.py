"""Persisted datasets on a real cluster: a persisted dataset's functions run once for many jobs;
chains of persisted datasets (iterations) give plain Python's answers; a small memory budget
evicts and still gives exact results; an executor killed mid-iteration loses nothing and only
its partitions are computed again; unpersist frees the executors' memory.

Calls are counted through files the test owns: each call of a counted function leaves one named
after the partition and the executor that ran it."""

from __future__ import annotations

import operator
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from squall.common import task_partition

import squall
from squall import LocalCluster
from squall.health import tracked
from tests.cluster.helpers import Background, executor_pid
from tests.conftest import fast_settings
from tests.polling import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]


def counted(calls: Path, tag: str) -> Callable[[Iterator[Any]], list[Any]]:
    """A map_partitions function that leaves a file per call: <tag>-<partition>-<executor pid>-<random>."""

    def fn(records: Iterator[Any]) -> list[Any]:
        rows = list(records)
        (calls / f"{tag}-{task_partition.current()}-{executor_pid()}-{uuid.uuid4().hex}").touch()
        return rows

    return fn


def calls_of(calls: Path, tag: str) -> Counter[str]:
    """Partition -> how many times the tagged function ran on it."""
    return Counter(p.name.split("-")[1] for p in calls.iterdir() if p.name.startswith(f"{tag}-"))


def pids_of(calls: Path, tag: str) -> dict[str, set[int]]:
    found: dict[str, set[int]] = {}
    for p in calls.iterdir():
        if p.name.startswith(f"{tag}-"):
            found.setdefault(p.name.split("-")[1], set()).add(int(p.name.split("-")[2]))
    return found


@pytest.fixture()
def calls(tmp_path: Path) -> Path:
    path = tmp_path / "calls"
    path.mkdir()
    return path


MODES: dict[str, dict[str, Any]] = {"drizzle": dict(preschedule=True, group_size=1), "bsp": dict(preschedule=False)}


@pytest.mark.parametrize("mode", sorted(MODES))
def test_a_persisted_datasets_functions_run_once_for_several_jobs(cluster: LocalCluster, calls: Path, mode: str) -> None:
    with squall.connect(cluster.address, cluster.settings.replace(**MODES[mode])) as ctx:
        ds = ctx.range(40, partitions=4).map_partitions(counted(calls, "base")).persist()
        assert ds.is_persisted and ds.persist() is ds and ds.cache() is ds
        assert ds.collect() == list(range(40))
        assert ds.map(lambda x: x + 1).sum() == sum(range(1, 41))
        assert ds.filter(lambda x: x % 2 == 0).count() == 20
        assert sorted(ds.map(lambda x: (x % 3, x)).reduce_by_key(operator.add, 2).collect()) == [
            (k, sum(x for x in range(40) if x % 3 == k)) for k in range(3)]
        assert calls_of(calls, "base") == Counter({"0": 1, "1": 1, "2": 1, "3": 1})
        ds.unpersist()
        assert not ds.is_persisted
        assert ds.count() == 40
        assert calls_of(calls, "base") == Counter({"0": 2, "1": 2, "2": 2, "3": 2}), "unpersisted: computed again"


def python_ranks(links: dict[int, list[int]], iterations: int) -> dict[int, float]:
    ranks = {node: 1.0 for node in links}
    for _ in range(iterations):
        contribs: dict[int, float] = {}
        for node, targets in links.items():
            for target in targets:
                contribs[target] = contribs.get(target, 0.0) + ranks[node] / len(targets)
        ranks = {node: 0.15 + 0.85 * c for node, c in contribs.items()}
    return ranks


def spread(pair: tuple[int, tuple[list[int], float]]) -> list[tuple[int, float]]:
    targets, rank = pair[1]
    return [(target, rank / len(targets)) for target in targets]


def pagerank(ctx: squall.Context, edges: list[tuple[int, int]], iterations: int, calls: Path | None = None
             ) -> dict[int, float]:
    links = ctx.parallelize(edges, partitions=4).group_by_key(4).persist()
    ranks = links.map_values(lambda _: 1.0).persist()
    for i in range(iterations):
        step = links.join(ranks).flat_map(spread).reduce_by_key(operator.add, 4).map_values(lambda c: 0.15 + 0.85 * c)
        if calls is not None:
            step = step.map_partitions(counted(calls, f"it{i}"))
        previous, ranks = ranks, step.persist()
        ranks.count()
        previous.unpersist()
    return dict(ranks.collect())


def graph(nodes: int = 30) -> list[tuple[int, int]]:
    return sorted({(n, (n * 7 + k) % nodes) for n in range(nodes) for k in (1, 3, 11)})


def test_a_chain_of_persisted_iterations_matches_python_and_computes_each_iteration_once(ctx: squall.Context, calls: Path) -> None:
    edges = graph()
    ranks = pagerank(ctx, edges, 12, calls)
    links: dict[int, list[int]] = {}
    for a, b in edges:
        links.setdefault(a, []).append(b)
    expected = python_ranks(links, 12)
    assert ranks.keys() == expected.keys()
    assert all(abs(ranks[k] - expected[k]) < 1e-9 for k in expected)
    for i in range(12):  # no iteration computed again by a later one: each ran once per partition
        assert all(n == 1 for n in calls_of(calls, f"it{i}").values()), f"iteration {i} ran again: {calls_of(calls, f'it{i}')}"


def test_a_small_budget_evicts_and_still_gives_exact_results(calls: Path) -> None:
    budget = 4096
    with LocalCluster(executors=2, settings=fast_settings(persist_memory=budget)) as cluster, cluster.connect() as ctx:
        datasets = [ctx.range(i * 1000, (i + 1) * 1000, partitions=4).map_partitions(counted(calls, f"d{i}")).persist()
                    for i in range(4)]
        for _ in range(2):
            for i, ds in enumerate(datasets):
                assert ds.sum() == sum(range(i * 1000, (i + 1) * 1000))
        both = datasets[0].union(datasets[3]).map(lambda x: x % 10).distinct().collect()
        assert sorted(both) == list(range(10))
        for info in ctx.status().executors:
            assert tracked(info.data_address, cluster.settings).sizes["persisted_bytes"] <= budget
        assert sum(sum(calls_of(calls, f"d{i}").values()) for i in range(4)) > 16, "nothing was evicted: the budget is too large"


def test_an_executor_killed_mid_iteration_loses_nothing_and_only_its_partitions_are_computed_again(calls: Path) -> None:
    with LocalCluster(executors=4, settings=fast_settings(preschedule=True)) as cluster, cluster.connect() as ctx:
        victim = cluster.pids["executor-1"]
        base = ctx.range(80, partitions=8).map(lambda x: (x % 8, x)).map_partitions(counted(calls, "base")).persist()
        assert base.count() == 80
        first = pids_of(calls, "base")
        assert sum(calls_of(calls, "base").values()) == 8
        on_victim = {part for part, pids in first.items() if victim in pids}
        assert on_victim, "the victim held no partition: the test proves nothing"

        def slow(pair: tuple[int, int]) -> tuple[int, int]:
            (calls / f"slow-{pair[1]}-{executor_pid()}-{uuid.uuid4().hex}").touch()
            time.sleep(0.05)
            return pair

        job = Background(base.map(slow).reduce_by_key(operator.add, 4).collect)
        wait_until(lambda: any(p.name.startswith("slow-") and p.name.split("-")[2] == str(victim) for p in calls.iterdir()),
                   timeout=20, what="the victim reading its persisted partitions")
        os.kill(victim, signal.SIGKILL)
        assert job.join(timeout=60), "the iteration hung after its executor died"
        assert sorted(job.outcome) == sorted((k, sum(x for x in range(80) if x % 8 == k)) for k in range(8))
        again = calls_of(calls, "base")
        recomputed = {part for part, n in again.items() if n > 1}
        assert recomputed == on_victim, f"computed again: {sorted(recomputed)}, the victim held {sorted(on_victim)}"
        assert all(n == 2 for part, n in again.items() if part in on_victim)


def test_unpersist_frees_the_executors_memory(cluster: LocalCluster, ctx: squall.Context) -> None:
    def held() -> int:
        return sum(tracked(e.data_address, cluster.settings).sizes["persisted_bytes"] for e in ctx.status().executors)

    before = held()
    ds = ctx.range(20_000, partitions=4).map(lambda x: (x, str(x))).persist()
    assert ds.count() == 20_000
    assert held() > before + 100_000
    ds.unpersist()
    wait_until(lambda: held() <= before, timeout=10, what="the executors dropping the unpersisted blocks")
