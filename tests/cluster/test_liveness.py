"""Liveness on real processes: a task holding the GIL is never a death; a stopped process still is,
within the death budget; and an executor whose heartbeats stay silent while its process answers
is reported as hung, its work left alone."""

from __future__ import annotations

import json
import operator
import os
import signal
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from squall import LocalCluster, Settings
from tests.cluster.helpers import Background, executor_pid
from tests.conftest import TEST_PUBLIC_KEY, TEST_SECRET_KEY, fast_settings
from tests.polling import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(90)]


def default_settings(**overrides: object) -> Settings:
    """The shipped defaults (heartbeats every 0.1 s, 4 misses), with the test session's keys."""
    return Settings(curve_public_key=TEST_PUBLIC_KEY, curve_secret_key=TEST_SECRET_KEY).replace(**overrides)


def scheduler_events(cluster: LocalCluster, event: str) -> list[dict[str, Any]]:
    """The scheduler's JSON log records of one event, each with its wall-clock time as `at`."""
    found = []
    for line in cluster.log_text("scheduler").splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("event") == event:
                record["at"] = datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00")).timestamp()
                found.append(record)
    return found


def sort_five_million_floats(partition: int) -> float:
    """Sort 5 million floats in one C call, which holds the GIL throughout; returns its seconds."""
    import random

    numbers = [random.random() for _ in range(5_000_000)]
    started = time.perf_counter()
    numbers.sort()
    return time.perf_counter() - started


@pytest.mark.timeout(120)
@pytest.mark.parametrize("settings", [default_settings(log_format="json"), fast_settings(log_format="json")],
                         ids=["default", "fast"])
def test_a_task_holding_the_gil_past_the_death_budget_is_not_a_death(settings: Settings) -> None:
    with LocalCluster(executors=2, settings=settings) as cluster, cluster.connect() as ctx:
        held = ctx.range(2, partitions=2).map(sort_five_million_floats).collect()
        assert len(held) == 2
        assert min(held) > settings.death_timeout, f"the sorts held the GIL for {held}s only: nothing was tested"
        assert scheduler_events(cluster, "executor_lost") == []
        assert sorted(e.executor_id for e in ctx.status().executors) == ["executor-0", "executor-1"]


def marked_pids(directory: Path) -> set[int]:
    return {int(p.name.split("-", 1)[1]) for p in directory.glob("map-*")}


@pytest.mark.parametrize(
    "sig,settings",
    [
        (signal.SIGSTOP, default_settings(log_format="json")),
        (signal.SIGSTOP, fast_settings(log_format="json")),
        (signal.SIGKILL, default_settings(log_format="json")),
    ],
    ids=["stopped-default", "stopped-fast", "killed-default"],
)
def test_a_stopped_or_killed_executor_is_declared_dead_within_the_budget_and_its_work_replayed(
        sig: signal.Signals, settings: Settings, tmp_path: Path) -> None:
    def slow(x: int) -> tuple[int, int]:
        (tmp_path / f"map-{executor_pid()}").touch()
        time.sleep(0.3)  # sleeping releases the GIL: heartbeats go on
        return (x % 3, x)

    with LocalCluster(executors=3, settings=settings) as cluster, cluster.connect() as ctx:
        victim = cluster.pids["executor-1"]
        job = Background(ctx.range(18, partitions=6).map(slow).reduce_by_key(operator.add).collect)
        wait_until(lambda: victim in marked_pids(tmp_path), timeout=10, what="executor-1 running a map task")
        os.kill(victim, sig)
        signalled = time.time()
        try:
            assert job.join(timeout=20), "the job hung after its executor was lost"
            assert dict(job.outcome) == {k: sum(x for x in range(18) if x % 3 == k) for k in range(3)}, job.outcome
            lost = wait_until(lambda: scheduler_events(cluster, "executor_lost"), timeout=5, what="executor_lost logged")
            assert [e["executor"] for e in lost] == ["executor-1"]
            assert "its connection dropped" in lost[0]["reason"]
            assert [e["executor"] for e in scheduler_events(cluster, "replaying")] == ["executor-1"]
            detected = lost[0]["at"] - signalled
            print(f"\n{sig.name}: declared dead {detected:.3f}s after the signal (budget {settings.death_timeout:.2f}s)")
            if sig == signal.SIGSTOP:
                assert detected <= settings.death_timeout + 0.25, f"took {detected:.3f}s, budget {settings.death_timeout:.2f}s"
            else:
                assert detected <= 0.25, f"a killed process took {detected:.3f}s to notice"
        finally:
            if sig == signal.SIGSTOP:
                os.kill(victim, signal.SIGCONT)
        if sig == signal.SIGSTOP:  # it hears it was dropped at its next beat, and comes back as new
            wait_until(lambda: len(ctx.status().executors) == 3, timeout=10, what="the stopped executor registered again")
            assert sorted(ctx.range(9, partitions=3).collect()) == list(range(9))


def hold_the_gil(x: int) -> int:
    """Partition 0 blocks in a C call that keeps the GIL (ctypes.PyDLL does not release it), as
    a deadlocked extension or a huge numpy call would; no Python thread of its process runs."""
    import ctypes

    if x == 0:
        ctypes.PyDLL(None).sleep(3)
    return x


def test_an_executor_silent_past_the_hung_timeout_is_reported_hung_and_its_work_goes_on() -> None:
    settings = fast_settings(hung_timeout=0.5, log_format="json")
    with LocalCluster(executors=2, settings=settings) as cluster, cluster.connect() as ctx:
        # A latency task: it runs in the executor's own process (a batch task would hold the GIL of
        # the executor's batch process, not the executor's: see the next test).
        job = Background(lambda: ctx.range(2, partitions=2).map(hold_the_gil).collect(priority="latency"))

        def hung() -> list[Any]:
            return [e for e in ctx.status().executors if e.hung]

        stuck = wait_until(hung, timeout=10, interval=0.05, what="an executor reported hung in the status")
        assert len(stuck) == 1 and stuck[0].silent_for > settings.hung_timeout, stuck
        assert "batch 0 of run" in stuck[0].hung, stuck[0].hung
        logged = wait_until(lambda: scheduler_events(cluster, "executor_hung"), timeout=5, what="executor_hung logged")
        assert logged[0]["executor"] == stuck[0].executor_id and logged[0]["running"] == stuck[0].hung
        assert logged[0]["level"] == "warning" and "GIL" in logged[0]["note"]

        assert job.join(timeout=20), "the job never finished"
        assert job.outcome == [0, 1]
        wait_until(lambda: not hung(), timeout=5, what="the hung report cleared by its next beat")
        assert [e["executor"] for e in scheduler_events(cluster, "executor_beating_again")] == [stuck[0].executor_id]
        assert scheduler_events(cluster, "executor_lost") == []
        assert len(ctx.status().executors) == 2


def test_a_batch_task_holding_the_gil_leaves_its_executor_responsive() -> None:
    """Batch tasks run in the executor's batch process: one stuck in a C call that keeps the GIL
    stops neither the executor's loop nor its heartbeats (on a thread of the executor, it would)."""
    settings = fast_settings(hung_timeout=0.5, log_format="json")
    with LocalCluster(executors=2, settings=settings) as cluster, cluster.connect() as ctx:
        job = Background(ctx.range(2, partitions=2).map(hold_the_gil).collect)
        began = time.monotonic()
        while not job.join(timeout=0.1):
            assert [e.executor_id for e in ctx.status().executors if e.hung] == []
            assert time.monotonic() - began < 20, "the job never finished"
        assert job.outcome == [0, 1]
        assert time.monotonic() - began >= 3  # the GIL was held as long as the test needs
        assert scheduler_events(cluster, "executor_hung") == []


def test_an_executor_whose_loop_is_stuck_while_its_heartbeat_thread_beats_is_reported_hung(tmp_path: Path) -> None:
    stuck = tmp_path / "stuck"

    def quick_then_stuck(x: int) -> int:
        if x == 0 and stuck.exists():
            time.sleep(3)  # releases the GIL: the heartbeat thread beats on while the loop waits here
        return x

    # inline_task_max 50 ms: on a loaded machine a warm-up task can take over the default 2 ms,
    # and the stuck task would then run on a lane, leaving the loop free (nothing to report).
    settings = fast_settings(hung_timeout=0.5, log_format="json", inline_task_max=0.05)
    with LocalCluster(executors=1, settings=settings) as cluster, cluster.connect() as ctx:
        # Quick latency tasks: the executor learns to run this stage inline, on its loop thread
        # (batch tasks never run inline).
        for _ in range(2):
            assert ctx.range(2, partitions=2).map(quick_then_stuck).collect(priority="latency") == [0, 1]
        stuck.touch()
        job = Background(lambda: ctx.range(2, partitions=2).map(quick_then_stuck).collect(priority="latency"))
        (info,) = wait_until(lambda: [e for e in ctx.status().executors if e.hung], timeout=10, interval=0.05,
                             what="the executor reported hung in the status")
        assert "batch 0 of run" in info.hung and info.silent_for > settings.hung_timeout, info
        assert job.join(timeout=20) and job.outcome == [0, 1], job.outcome
        wait_until(lambda: not ctx.status().executors[0].hung, timeout=5, what="the hung report cleared")
        assert [e["executor"] for e in scheduler_events(cluster, "executor_hung")] == ["executor-0"]
        assert scheduler_events(cluster, "executor_lost") == []
