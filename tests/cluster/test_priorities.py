"""Priorities from the user API to the scheduler: what each call sends by default and when told,
a wrong value refused before anything is sent (on a live scheduler server, real sockets), and
batch and latency work giving exact results side by side on a real LocalCluster."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
import zmq
from squall.common import transport
from squall.common.core import Received
from squall.common.protocol import SubmitJobs
from squall.services.scheduler.server import SchedulerServer

import squall
from squall import sources
from squall.errors import JobError
from squall.stream import StreamError
from tests.cluster.live_server import Recorder, RecordingLog, serve_while
from tests.conftest import fast_settings
from tests.polling import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(60)]


def submitted(record: Recorder) -> list[str]:
    """The priority of every SubmitJobs the scheduler was handed, in order."""
    return [e.msg.priority for e, _ in list(record.calls) if isinstance(e, Received) and isinstance(e.msg, SubmitJobs)]


def on_live_scheduler(drive: Callable[[squall.Context, Recorder], None]) -> None:
    """Run `drive(ctx, record)` against a scheduler server in this process, with no executors: it
    refuses every run (no_executors), after recording what was submitted."""
    zctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    base = fast_settings()
    meta = transport.new_socket(zctx, zmq.ROUTER, base)  # plays shuffle_meta
    settings = base.replace(scheduler_bind="tcp://127.0.0.1:*", shuffle_meta_address=transport.bind(meta, "tcp://127.0.0.1:*"))
    server = SchedulerServer(settings, RecordingLog())
    record = Recorder(server.state)

    def run() -> None:
        with squall.connect(server.endpoint, settings) as ctx:
            drive(ctx, record)

    try:
        serve_while(server, run)
    finally:
        meta.close(0)
        zctx.term()


def test_actions_are_batch_work_and_runs_and_streams_latency_work_unless_told() -> None:
    def drive(ctx: squall.Context, record: Recorder) -> None:
        ds = ctx.range(10, partitions=2)
        calls: list[tuple[Callable[[], Any], type[Exception]]] = [
            (lambda: ds.collect(), JobError),
            (lambda: ds.count(), JobError),
            (lambda: ds.reduce(lambda a, b: a + b), JobError),
            (lambda: ctx.run_jobs([ds]), JobError),
            (lambda: list(ctx.iter_jobs([ds])), JobError),
            (lambda: ctx.stream(sources.generator(lambda p, b: [b], partitions=1), 0.02, 1).start().await_termination(20), StreamError),
            (lambda: ds.collect(priority="latency"), JobError),
            (lambda: ctx.run_jobs([ds], priority="batch"), JobError),
            (lambda: list(ctx.iter_jobs([ds], priority="batch")), JobError),
            (lambda: ctx.stream(sources.generator(lambda p, b: [b], partitions=1), 0.02, 1, priority="batch").start().await_termination(20),
             StreamError),
        ]
        for call, refused in calls:
            with pytest.raises(refused):
                call()
        wait_until(lambda: len(submitted(record)) >= len(calls), what="every submission at the scheduler")
        assert submitted(record) == ["batch"] * 3 + ["latency"] * 3 + ["latency", "batch", "batch", "batch"]

    on_live_scheduler(drive)


def test_a_priority_other_than_latency_or_batch_is_refused_at_the_call_before_anything_is_sent() -> None:
    def drive(ctx: squall.Context, record: Recorder) -> None:
        ds = ctx.range(10, partitions=2)
        source = sources.generator(lambda p, b: [b], partitions=1)
        calls: list[Callable[[], Any]] = [
            lambda: ds.collect(priority="urgent"),  # type: ignore[arg-type]
            lambda: ds.count(priority="Batch"),  # type: ignore[arg-type]
            lambda: ds.reduce(lambda a, b: a + b, priority=None),  # type: ignore[arg-type]
            lambda: ctx.run_jobs([ds], priority="high"),  # type: ignore[arg-type]
            lambda: ctx.iter_jobs([ds], priority=1),  # type: ignore[arg-type]  # the call raises, not the iteration
            lambda: ctx.stream(source, 0.02, 1, priority="low"),  # type: ignore[arg-type]
        ]
        for call in calls:
            with pytest.raises(ValueError, match='priority must be "latency" or "batch"'):
                call()
        with pytest.raises(JobError):
            ds.collect()  # a valid run after them: the only submission
        wait_until(lambda: submitted(record), what="the valid submission at the scheduler")
        assert submitted(record) == ["batch"]

    on_live_scheduler(drive)


def test_batch_and_latency_work_side_by_side_on_a_real_cluster_give_exact_results(ctx) -> None:  # type: ignore[no-untyped-def]
    got: dict[str, list[tuple[int, list[Any]]]] = {"latency": [], "batch": []}
    lock = threading.Lock()

    def sink_of(name: str) -> Callable[[int, list[Any]], None]:
        def sink(batch: int, records: list[Any]) -> None:
            with lock:
                got[name].append((batch, sorted(records)))
        return sink

    def source() -> Any:
        return sources.generator(lambda p, b: [(b, p, i) for i in range(3)], partitions=2)

    defaulted = ctx.stream(source(), batch_interval=0.02, group_size=2).foreach_batch(sink_of("latency")).start()
    told = ctx.stream(source(), batch_interval=0.02, group_size=2, priority="batch").foreach_batch(sink_of("batch")).start()
    ds = ctx.range(1000, partitions=4).map(lambda x: (x % 7, x)).reduce_by_key(lambda a, b: a + b)
    expected = sorted({k: sum(x for x in range(1000) if x % 7 == k) for k in range(7)}.items())
    assert sorted(ds.collect()) == expected  # batch, defaulted
    assert sorted(ds.collect(priority="latency")) == expected
    assert ds.count() == 7 and ds.count(priority="latency") == 7
    assert ctx.range(100).reduce(lambda a, b: a + b) == 4950
    assert ctx.run_jobs([ctx.range(5, partitions=1)], priority="batch") == [[0, 1, 2, 3, 4]]
    wait_until(lambda: min(len(got["latency"]), len(got["batch"])) >= 4, timeout=20, what="4 batches of each stream")
    defaulted.stop(timeout=20)
    told.stop(timeout=20)
    for name in ("latency", "batch"):
        assert [b for b, _ in got[name]] == list(range(len(got[name]))), name  # in order, none lost, none twice
        assert all(records == sorted((b, p, i) for p in range(2) for i in range(3)) for b, records in got[name]), name
    loads = [(e.latency_tasks, e.batch_tasks, e.suspended_tasks) for e in ctx.status().executors]
    assert len(loads) == 4 and all(n >= 0 for load in loads for n in load)


def test_a_thread_waiting_for_one_run_does_not_hold_up_another_threads_results(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """One connection, two threads: while one waits for a long batch action, short jobs from the
    other come back as fast as alone. (The waiting thread reads the socket for both; the other
    used to get its results only when it next won the socket, some 20-80 ms later.) The
    heartbeats are the default's: the tests' fast ones make the scheduler write to the driver
    so often that the socket changed hands anyway."""
    defaults = squall.Settings()
    settings = fast_settings(heartbeat_interval=defaults.heartbeat_interval, heartbeat_misses=defaults.heartbeat_misses)
    with squall.LocalCluster(executors=2, settings=settings) as cluster, cluster.connect() as ctx:
        _short_jobs_beside_a_waiting_thread(ctx, tmp_path)


def _short_jobs_beside_a_waiting_thread(ctx: Any, tmp_path: Any) -> None:
    import statistics
    import time

    release = tmp_path / "release"

    def hold(x: int) -> int:  # the long action's one task: runs until the test releases it
        deadline = time.monotonic() + 30
        while not release.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        return x

    def round_trips() -> list[float]:
        took = []
        for _ in range(15):
            started = time.perf_counter()
            assert ctx.range(4, partitions=2).collect(priority="latency") == [0, 1, 2, 3]
            took.append(time.perf_counter() - started)
        return took

    alone = statistics.median(round_trips())
    held: list[Any] = []
    waiter = threading.Thread(target=lambda: held.append(ctx.range(1, partitions=1).map(hold).collect()), daemon=True)
    waiter.start()
    wait_until(lambda: any(e.batch_tasks for e in ctx.status().executors), timeout=10, what="the long action's task running")
    beside = statistics.median(round_trips())
    release.touch()
    waiter.join(timeout=20)
    assert held == [[0]]
    assert beside <= 2 * alone + 0.005, f"a short job took {beside * 1000:.1f} ms (median) beside a waiting thread, {alone * 1000:.1f} ms alone"
