"""Streams reading Redis Streams on a real cluster: every entry written is delivered exactly once,
in order within its partition, through a killed executor and a killed and restarted Redis; and
a backlog's lag falls to 0 as it drains."""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

import pytest

from squall import LocalCluster, sources
from tests.conftest import fast_settings
from tests.polling import wait_until
from tests.redis_server import RedisServer

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]

PARTITIONS = 2
INTERVAL = 0.05


class Writer:
    """A producer thread: XADDs numbered entries {"p": partition, "n": i} round robin over the
    partitions' keys until stopped; pause() holds it between two entries."""

    def __init__(self, redis_server: RedisServer, key: str = "events") -> None:
        self.client = redis_server.client()
        self.key = key
        self.written = [0] * PARTITIONS
        self.running = threading.Event()
        self.running.set()
        self.paused = threading.Event()  # set by the thread while it holds
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        i = 0
        while not self.stopping.is_set():
            if not self.running.is_set():
                self.paused.set()
                self.running.wait()
                self.paused.clear()
                continue
            p = i % PARTITIONS
            self.client.xadd(f"{self.key}:{p}", {"p": str(p), "n": str(self.written[p])})
            self.written[p] += 1
            i += 1
            self.stopping.wait(0.002)  # a steady trickle

    def pause(self) -> None:
        self.running.clear()
        wait_until(self.paused.is_set, timeout=10, what="the writer to hold")

    def resume(self, redis_server: RedisServer) -> None:
        self.client = redis_server.client()
        self.running.set()

    def stop(self) -> int:
        self.stopping.set()
        self.running.set()
        self.thread.join(timeout=10)
        return sum(self.written)


def start_collecting(ctx: Any, redis_server: RedisServer, got: list[tuple[int, list[dict[str, str]]]], **options: Any) -> Any:
    source = sources.redis_stream(redis_server.url, "events", partitions=PARTITIONS, **options)
    return ctx.stream(source, batch_interval=INTERVAL, group_size=2).foreach_batch(
        lambda batch, records: got.append((batch, records))).start()


def delivered(got: list[tuple[int, list[dict[str, str]]]]) -> int:
    return sum(len(records) for _, records in list(got))


def check_exactly_once(got: list[tuple[int, list[dict[str, str]]]], written: list[int]) -> None:
    assert [b for b, _ in got] == list(range(len(got))), "a batch was lost, repeated or reordered"
    for p in range(PARTITIONS):
        numbers = [int(r["n"]) for _, records in got for r in records if r["p"] == str(p)]
        assert numbers == list(range(written[p])), f"partition {p}: entries lost, repeated or reordered"


def run_and_check(ctx: Any, redis_server: RedisServer, disturb: Any) -> None:
    got: list[tuple[int, list[dict[str, str]]]] = []
    writer = Writer(redis_server)
    stream = start_collecting(ctx, redis_server, got, start="beginning")  # the writer began before the stream
    try:
        wait_until(lambda: delivered(got) >= 100, timeout=30, what="100 entries delivered")
        disturb(writer)
        seen = delivered(got)
        wait_until(lambda: delivered(got) >= seen + 100, timeout=60, what="100 more entries delivered")
        total = writer.stop()
        wait_until(lambda: delivered(got) >= total, timeout=30, what="every entry written delivered")
    finally:
        writer.stop()
        stream.stop(timeout=30)
    check_exactly_once(got, writer.written)


def test_every_entry_written_while_the_stream_runs_is_delivered_once_in_order(ctx, redis_server: RedisServer) -> None:  # type: ignore[no-untyped-def]
    run_and_check(ctx, redis_server, lambda writer: None)


def test_a_killed_executor_loses_and_repeats_no_entry(redis_server: RedisServer) -> None:
    with LocalCluster(executors=3, settings=fast_settings()) as cluster, cluster.connect() as ctx:
        def kill_one(writer: Writer) -> None:
            name = next(n for n in cluster.executor_names() if cluster.processes[n].poll() is None)
            os.kill(cluster.pids[name], signal.SIGKILL)

        run_and_check(ctx, redis_server, kill_one)
        assert "replaying" in cluster.log_text("scheduler")


def test_a_killed_and_restarted_redis_loses_and_repeats_no_entry(cluster: LocalCluster, redis_server: RedisServer) -> None:
    def unreachable_warnings() -> int:
        return sum(cluster.log_text(n).count("redis_unreachable") for n in cluster.executor_names())

    def kill_and_restart_redis(writer: Writer) -> None:
        writer.pause()  # a producer retrying an XADD whose answer was lost could write it twice itself
        before = unreachable_warnings()
        redis_server.stop()  # SIGKILL
        wait_until(lambda: unreachable_warnings() > before, timeout=30, what="a task to find Redis gone")
        redis_server.start()
        writer.resume(redis_server)

    with cluster.connect() as ctx:
        run_and_check(ctx, redis_server, kill_and_restart_redis)
    assert any("redis_reconnected" in cluster.log_text(n) for n in cluster.executor_names())


def test_a_backlogs_lag_falls_to_0_as_it_drains(ctx, redis_server: RedisServer) -> None:  # type: ignore[no-untyped-def]
    r = redis_server.client()
    for i in range(400):
        r.xadd(f"events:{i % PARTITIONS}", {"p": str(i % PARTITIONS), "n": str(i // PARTITIONS)})
    got: list[tuple[int, list[dict[str, str]]]] = []
    stream = start_collecting(ctx, redis_server, got, start="beginning", max_records_per_batch=5)
    try:
        first = wait_until(lambda: (stream.progress() or {}).get("source_lag"), timeout=30, what="a lag reported")
        assert 0 < first < 400
        wait_until(lambda: stream.metrics().get("source_lag") == 0 and delivered(got) == 400, timeout=60,
                   what="the backlog drained and the lag 0")
        assert (stream.progress() or {}).get("source_lag") == 0

        def scheduler_sees() -> object:
            return next((row["source_lag"] for row in ctx.snapshot()["streams"] if row["run"] == stream.stream_id), None)

        wait_until(lambda: scheduler_sees() == 0, timeout=10, what="the scheduler's snapshot showing the lag 0")
        assert max(len(records) for _, records in got) <= 5 * PARTITIONS
    finally:
        stream.stop(timeout=30)
    check_exactly_once(got, [200, 200])
