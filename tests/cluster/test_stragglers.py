"""Stragglers on real processes: while one executor is slowed (stopped most of every 50 ms), late
micro-batches are copied onto the others, and every job's result reaches the driver once, equal
to plain Python, whichever attempt finished first. With results sent straight to the driver,
nothing is copied: the scheduler hears of a job's end only with its group's reports."""

from __future__ import annotations

import json
import operator
import time

import pytest

from squall import LocalCluster
from squall.chaos.slow import Slowdown
from tests.conftest import fast_settings

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(150)]

JOBS = 20


def expected(b: int) -> list[tuple[int, int]]:
    sums: dict[int, int] = {}
    for x in range(b * 100, (b + 1) * 100):
        sums[x % 5] = sums.get(x % 5, 0) + x
    return sorted(sums.items())


def scheduler_events(cluster: LocalCluster, name: str) -> list[dict]:  # type: ignore[type-arg]
    lines = [json.loads(line) for line in cluster.log_text("scheduler").splitlines() if line.startswith("{")]
    return [e for e in lines if e.get("event") == name]


def test_a_speculated_micro_batch_is_answered_once_with_exact_results() -> None:
    # A multiplier of 1: a job slower than the median is late, so copies are made even though
    # most jobs have a task on the slowed executor (the median is theirs). Results relayed by the
    # scheduler: it copies only jobs whose end it hears of as it happens.
    settings = fast_settings(log_format="json", speculation_multiplier=1.0, direct_results=False)
    with LocalCluster(executors=3, settings=settings) as cluster, cluster.connect() as ctx:
        victim = sorted(cluster.executor_names())[0]
        slowdown = Slowdown(cluster.pids[victim], factor=5.0, duration=120.0)
        try:
            deadline = time.monotonic() + 90
            rounds = 0
            # Rounds of micro-batches until the scheduler has copied one (polled with a deadline):
            # the first rounds give it the recent durations that say what "late" is.
            while not scheduler_events(cluster, "speculating") or rounds < 2:
                assert time.monotonic() < deadline, "no late micro-batch was copied in 90 s"
                batches = [ctx.range(b * 100, (b + 1) * 100, partitions=3).map(lambda x: (x % 5, x))
                           .reduce_by_key(operator.add, 3) for b in range(JOBS)]
                results = list(ctx.iter_jobs(batches, group_size=2))
                assert len(results) == JOBS  # one answer per job, none twice
                assert [sorted(r) for r in results] == [expected(b) for b in range(JOBS)]
                rounds += 1
        finally:
            slowdown.stop()
        copied = scheduler_events(cluster, "speculating")
        settled = scheduler_events(cluster, "speculation_won") + scheduler_events(cluster, "speculation_lost")
        assert copied and settled, "copies were made, and one attempt of a copied job answered"
        assert {e["job"] for e in settled} <= {e["job"] for e in copied}
        assert len({e["job"] for e in settled}) == len(settled), "a copied job answered twice"


def test_runs_whose_results_go_straight_to_the_driver_are_never_copied() -> None:
    settings = fast_settings(log_format="json", speculation_multiplier=1.0)
    assert settings.direct_results
    with LocalCluster(executors=3, settings=settings) as cluster, cluster.connect() as ctx:
        victim = sorted(cluster.executor_names())[0]
        slowdown = Slowdown(cluster.pids[victim], factor=5.0, duration=60.0)
        try:
            for _ in range(3):
                batches = [ctx.range(b * 100, (b + 1) * 100, partitions=3).map(lambda x: (x % 5, x))
                           .reduce_by_key(operator.add, 3) for b in range(JOBS)]
                assert [sorted(r) for r in ctx.iter_jobs(batches, group_size=2)] == [expected(b) for b in range(JOBS)]
        finally:
            slowdown.stop()
        assert not scheduler_events(cluster, "speculating")
