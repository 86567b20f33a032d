"""Latency and batch work together on real processes: a stateful stream beside a batch job whose
tasks the stream's tasks preempt, under each preemption mode; and an executor killed while it
holds a suspended batch task. Outputs are checked against plain Python, exactly once."""

from __future__ import annotations

import functools
import operator
import os
import signal
import threading
import time
from collections import Counter
from typing import Any

import pytest

from squall import LocalCluster
from squall.health import tracked
from tests.cluster.test_recovery import check_exactly_once, logs, start_sum_stream
from tests.conftest import fast_settings
from tests.polling import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]

NUMBERS, MAP_PARTITIONS = 1_000_000, 8  # map tasks of about half a second each


def busy(x: int) -> int:
    """A little CPU per record, so each map task runs long enough to be preempted many times."""
    for _ in range(20):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
    return x


def batch_job(ctx: Any) -> dict[int, int]:
    pairs = ctx.range(NUMBERS, partitions=MAP_PARTITIONS).map(busy).map(lambda x: (x % 97, 1))
    return dict(pairs.reduce_by_key(operator.add, partitions=4).collect())  # priority "batch", the default


@functools.cache
def expected_batch_job() -> dict[int, int]:
    return dict(Counter(busy(x) % 97 for x in range(NUMBERS)))


def counters(cluster: LocalCluster, ctx: Any) -> Counter[str]:
    total: Counter[str] = Counter()
    for info in ctx.status().executors:
        total.update(tracked(info.data_address, cluster.settings).counters)
    return total


class BatchJob:
    """The batch job on a thread of the test, its result or error kept."""

    def __init__(self, ctx: Any) -> None:
        self.result: dict[int, int] | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(ctx,), daemon=True)
        self.thread.start()

    def _run(self, ctx: Any) -> None:
        try:
            self.result = batch_job(ctx)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def join(self, timeout: float) -> dict[int, int]:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the batch job did not finish"
        assert self.error is None, repr(self.error)
        assert self.result is not None
        return self.result


@pytest.mark.parametrize("mode", ["suspend", "kill", "none"])
def test_a_stream_and_a_batch_job_together_are_both_exact(mode: str) -> None:
    expected = expected_batch_job()
    with LocalCluster(executors=4, settings=fast_settings(preemption=mode)) as cluster, cluster.connect() as ctx:
        got: list = []
        stream = start_sum_stream(ctx, got)
        wait_until(lambda: len(got) >= 5, timeout=30, what="the stream's first batches")
        job = BatchJob(ctx)
        try:
            assert job.join(timeout=90) == expected
            seen = len(got)
            wait_until(lambda: len(got) >= seen + 5, timeout=30, what="batches after the batch job")
            stream.stop(timeout=20)
            check_exactly_once(got)
            done = counters(cluster, ctx)
        except Exception as exc:
            raise AssertionError(f"{exc}\n{logs(cluster)}") from exc
    if mode == "suspend":
        assert done["suspensions"] > 0 and done["resumes"] > 0 and done["kills"] == 0
    elif mode == "kill":
        assert done["kills"] > 0 and done["thrown_away_seconds"] > 0 and done["suspensions"] == 0
    else:
        assert done["suspensions"] == 0 and done["kills"] == 0


def test_an_executor_killed_while_it_holds_a_suspended_task_loses_nothing() -> None:
    expected = expected_batch_job()
    # A long starvation bound keeps a task suspended while stream tasks keep coming.
    settings = fast_settings(checkpoint_every_groups=2, batch_max_suspension=5.0)
    with LocalCluster(executors=4, settings=settings) as cluster, cluster.connect() as ctx:
        got: list = []
        stream = start_sum_stream(ctx, got)
        wait_until(lambda: len(got) >= 5, timeout=30, what="the stream's first batches")
        job = BatchJob(ctx)
        try:
            holder = wait_until(
                lambda: next((e.executor_id for e in ctx.status().executors if e.suspended_tasks), None),
                timeout=30, interval=0.002, what="an executor holding a suspended batch task")
            os.kill(cluster.pids[holder], signal.SIGKILL)
            killed_at = time.monotonic()
            assert job.join(timeout=90) == expected
            seen = len(got)
            wait_until(lambda: len(got) >= seen + 10, timeout=30, what="batches after the kill")
            stream.stop(timeout=20)
            check_exactly_once(got)
        except Exception as exc:
            raise AssertionError(f"{exc}\n{logs(cluster)}") from exc
        assert holder not in {e.executor_id for e in ctx.status().executors}
        assert time.monotonic() - killed_at < 90
