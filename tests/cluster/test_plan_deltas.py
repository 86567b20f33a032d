"""Plan deltas on a real cluster: a driver sends each plan node once, so the submission of an
iterative job stays the same size however long its lineage grows (and grows with it when deltas
are off); a job naming nodes the scheduler has dropped is sent again whole, with exact results;
after a scheduler restart the driver sends its nodes and code again. Datasets' lineage graphs
(persist in place, unpersist, nodes shared between sides) on a real connection."""

from __future__ import annotations

import itertools
import os
import signal

import pytest
from squall.common.plan import NarrowNode, PersistNode, UnionNode

import squall
from squall import LocalCluster
from tests.conftest import fast_settings

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]

ITERATIONS = 200
START = list(range(10))


def inc(x: int) -> int:
    return x + 1


def expected_sums(iterations: int) -> list[int]:
    return [sum(START) + len(START) * k for k in range(1, iterations + 1)]


def chained_sums(ctx: squall.Context, iterations: int, persist: bool = False) -> tuple[list[int], list[list[int]]]:
    """Iteration k adds one to every record of iteration k - 1 and sums them, so its lineage is k
    maps long: each sum, and the bytes of the SubmitJobs messages its run sent."""
    ds = ctx.parallelize(START, 2)
    sums: list[int] = []
    sizes: list[list[int]] = []
    for _ in range(iterations):
        ds = ds.map(inc)
        if persist:
            ds.persist()
        sums.append(ds.sum())
        assert ctx.last_run is not None
        sizes.append(list(ctx.last_run.submitted_bytes))
    return sums, sizes


def test_with_deltas_a_jobs_submission_stays_the_same_size_as_its_lineage_grows(cluster: LocalCluster) -> None:
    with cluster.connect() as ctx:
        assert ctx.settings.plan_deltas
        sums, sizes = chained_sums(ctx, ITERATIONS)
    assert sums == expected_sums(ITERATIONS)
    assert all(len(sent) == 1 for sent in sizes), "no job had to be sent again"
    later = [sent[0] for sent in sizes[1:]]  # the first carries the source's records and the code
    assert max(later) - min(later) <= 8, f"submissions grew with the lineage: {later[:3]} ... {later[-3:]}"

    with squall.connect(cluster.address, cluster.settings.replace(plan_deltas=False)) as ctx:
        whole_sums, whole_sizes = chained_sums(ctx, ITERATIONS)
    assert whole_sums == expected_sums(ITERATIONS)
    whole = [sent[0] for sent in whole_sizes[1:]]
    assert all(b > a for a, b in itertools.pairwise(whole)), "whole plans grow by a node every iteration"
    assert whole[-1] > 20 * later[-1]


def test_persisted_iterations_send_only_their_new_nodes(cluster: LocalCluster) -> None:
    with cluster.connect() as ctx:
        sums, sizes = chained_sums(ctx, 30, persist=True)
    assert sums == expected_sums(30)
    later = [sent[0] for sent in sizes[1:]]
    assert max(later) - min(later) <= 8


def test_a_job_naming_nodes_the_scheduler_dropped_is_sent_again_whole_and_gives_exact_results() -> None:
    # The scheduler keeps 4 nodes; the driver believes it keeps many, so its deltas name nodes
    # long gone: those jobs fail with plan_cache_miss and are sent again, whole, by the driver.
    settings = fast_settings(plan_cache_nodes=4)
    with LocalCluster(executors=2, settings=settings) as cluster, \
            squall.connect(cluster.address, settings.replace(plan_cache_nodes=100_000)) as ctx:
        sums, sizes = chained_sums(ctx, 30)
        # Several jobs of one run, each naming nodes of a lineage the scheduler mostly dropped:
        chain = ctx.parallelize(range(20), 2)
        for _ in range(10):
            chain = chain.map(inc)
        assert chain.sum() == sum(range(20)) + 20 * 10
        jobs = [chain.map(inc)]
        for _ in range(2):
            jobs.append(jobs[-1].map(inc))
        results = ctx.run_jobs(jobs, group_size=3)
        assert ctx.last_run is not None
        resent = ctx.last_run.submitted_bytes
    assert sums == expected_sums(30)
    assert any(len(sent) == 2 for sent in sizes), "some job was sent again whole"
    assert all(len(sent) <= 2 for sent in sizes), "a job is sent again at most once"
    assert [sorted(result) for result in results] == [[x + 11 + k for x in range(20)] for k in range(3)]
    assert len(resent) == 4, "the run, then each of its jobs again whole"


def test_rounds_of_persisted_datasets_need_no_more_nodes_than_a_round_adds() -> None:
    # Each round's job reads the round before from the executors' blocks: the scheduler walks its
    # plan down to that dataset only, so a cache of a few nodes never misses the long lineage.
    settings = fast_settings(plan_cache_nodes=8)
    with LocalCluster(executors=2, settings=settings) as cluster, \
            squall.connect(cluster.address, settings.replace(plan_cache_nodes=100_000)) as ctx:
        sums, sizes = chained_sums(ctx, 40, persist=True)
    assert sums == expected_sums(40)
    assert all(len(sent) == 1 for sent in sizes), "no job named a node the scheduler had dropped"


def test_after_a_scheduler_restart_the_driver_sends_its_plan_nodes_and_code_again() -> None:
    with LocalCluster(executors=2, settings=fast_settings()) as cluster, cluster.connect() as ctx:
        ds = ctx.parallelize(START, 2)
        for _ in range(5):
            ds = ds.map(inc)
        assert ds.sum() == expected_sums(5)[-1]
        os.kill(cluster.pids["scheduler"], signal.SIGKILL)
        cluster.processes["scheduler"].wait(timeout=5)
        cluster.restart_service("scheduler")
        cluster.wait_for_executors(2, timeout=30)
        ctx.client.ping()  # the driver hears of the new scheduler: what it had sent is gone
        # A union adds no code: without its lineage the new scheduler could not plan it.
        assert sorted(ds.union(ds).collect()) == sorted([x + 5 for x in START] * 2)
        assert ctx.last_run is not None and len(ctx.last_run.submitted_bytes) == 1, "sent whole at once, not after a miss"
        assert ds.map(inc).sum() == expected_sums(6)[-1]
        assert len(ctx.last_run.submitted_bytes) == 1


# --- lineage graphs on a real connection (no job runs) --------------------------------------


def test_persist_marks_the_dataset_in_place_and_unpersist_takes_its_mark_off(ctx: squall.Context) -> None:
    base = ctx.range(10, partitions=2).map(inc)
    before = base.nodes
    assert base.persist() is base and base.is_persisted
    marked = base.nodes
    assert marked[:-1] == before and isinstance(marked[-1], PersistNode)
    assert base.persist().nodes == marked, "persisting again changes nothing"
    derived = base.map(inc)  # made while persisted: reads the persisted dataset
    assert derived.nodes[-2] == marked[-1]
    assert base.unpersist() is base and not base.is_persisted
    assert base.nodes == before
    assert derived.nodes[:-1] == marked, "a dataset made while it was persisted keeps the mark"
    assert base.map(inc).nodes[:-1] == before


def test_a_dataset_on_both_sides_is_one_node_list_entry_and_deltas_carry_only_new_nodes(ctx: squall.Context) -> None:
    left = ctx.range(10, partitions=2).map(inc)
    twin = ctx.range(10, partitions=2).map(inc)  # built apart, the same operations: the same nodes
    assert twin.vertex.id == left.vertex.id
    union = left.union(twin)
    assert len(union.nodes) == 3 and union.nodes[-1] == UnionNode(parents=[1, 1])

    sending: set[str] = set()
    first = left.delta(set(), sending)
    assert [d.id for d in first.nodes] == [left.vertex.parents[0].id, left.vertex.id] and first.root == left.vertex.id
    then = union.map(inc).delta(set(), sending)  # the same submission: left's nodes are on their way
    assert [type(d.node) for d in then.nodes] == [UnionNode, NarrowNode]
    assert union.delta(sending, set()).nodes == [], "nothing new: the root is named by id"
