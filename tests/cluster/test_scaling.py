"""Scaling a stateful stream on real processes: an executor told to leave (SIGTERM, or `squall
decommission`) hands its state over and exits 0 with nothing replayed; executors that join take
state partitions over by checkpoint; the output equals plain Python, exactly once, throughout."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from squall import LocalCluster
from squall.health import tracked
from tests.cluster.test_recovery import check_exactly_once, logs, start_sum_stream
from tests.conftest import fast_settings
from tests.polling import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(90)]



def partitions_held(cluster: LocalCluster, ctx) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """Keyed state partitions each executor holds (its own count, GetTracked)."""
    return {e.executor_id: tracked(e.data_address, cluster.settings).sizes["keyed.next_batch"] for e in ctx.status().executors}


def test_an_executor_sent_sigterm_hands_its_state_over_and_exits_0_with_nothing_replayed() -> None:
    with LocalCluster(executors=3, settings=fast_settings()) as cluster, cluster.connect() as ctx:
        got: list = []
        stream = start_sum_stream(ctx, got)
        try:
            wait_until(lambda: len(got) >= 10, timeout=30, what="ten batches")
            leaving = cluster.processes["executor-1"]
            leaving.send_signal(signal.SIGTERM)
            code = wait_until(lambda: leaving.poll() is not None, timeout=20, what="the executor to leave") and leaving.returncode
            assert code == 0
            assert [e.executor_id for e in ctx.status().executors] == ["executor-0", "executor-2"]
            seen = len(got)
            wait_until(lambda: len(got) >= seen + 10, timeout=30, what="ten batches after it left")
            assert partitions_held(cluster, ctx) == {"executor-0": 2, "executor-2": 2}
            stream.stop(timeout=20)
            check_exactly_once(got)
        except Exception as exc:
            raise AssertionError(f"{exc}\n{logs(cluster)}") from exc
        scheduler = cluster.log_text("scheduler")
        assert "executor_decommissioned" in scheduler
        assert "replaying" not in scheduler and "executor_lost" not in scheduler
        assert "state_restored" in cluster.log_text("executor-0") + cluster.log_text("executor-2")


def test_squall_decommission_asks_the_scheduler_and_waits_until_the_executor_left() -> None:
    with LocalCluster(executors=3, settings=fast_settings()) as cluster, cluster.connect() as ctx:
        got: list = []
        stream = start_sum_stream(ctx, got)
        try:
            wait_until(lambda: len(got) >= 5, timeout=30, what="five batches")
            env = {**cluster.settings.to_env()}
            cli = subprocess.run([sys.executable, "-m", "squall", "decommission", "--executor", "executor-2",
                                  "--scheduler", cluster.address, "--timeout", "30"], capture_output=True, text=True, timeout=60, env=env)
            assert cli.returncode == 0, cli.stderr
            assert "has left" in cli.stdout
            assert wait_until(lambda: cluster.processes["executor-2"].poll() is not None, timeout=10, what="its process to exit")
            assert cluster.processes["executor-2"].returncode == 0
            refused = subprocess.run([sys.executable, "-m", "squall", "decommission", "--executor", "executor-9",
                                      "--scheduler", cluster.address], capture_output=True, text=True, timeout=60, env=env)
            assert refused.returncode == 1 and "no executor 'executor-9'" in refused.stderr
            seen = len(got)
            wait_until(lambda: len(got) >= seen + 5, timeout=30, what="five batches after it left")
            stream.stop(timeout=20)
            check_exactly_once(got)
        except Exception as exc:
            raise AssertionError(f"{exc}\n{logs(cluster)}") from exc
        assert "replaying" not in cluster.log_text("scheduler")


def test_executors_joining_take_state_partitions_by_checkpoint_and_the_output_stays_exact() -> None:
    with LocalCluster(executors=2, settings=fast_settings()) as cluster, cluster.connect() as ctx:
        got: list = []
        stream = start_sum_stream(ctx, got)
        try:
            wait_until(lambda: len(got) >= 5, timeout=30, what="five batches")
            cluster.start_executor("executor-2")
            cluster.start_executor("executor-3")
            wait_until(lambda: all("state_restored" in cluster.log_text(n) for n in ("executor-2", "executor-3")), timeout=30,
                       what="both newcomers to take a partition over")
            seen = len(got)
            wait_until(lambda: len(got) >= seen + 10, timeout=30, what="ten batches after the rebalance")
            assert partitions_held(cluster, ctx) == {f"executor-{i}": 1 for i in range(4)}  # four partitions, spread
            stream.stop(timeout=20)
            check_exactly_once(got)
        except Exception as exc:
            raise AssertionError(f"{exc}\n{logs(cluster)}") from exc
        scheduler = cluster.log_text("scheduler")
        assert "state_rebalancing" in scheduler and "replaying" not in scheduler
