"""A cancelled run stops running: a driver interrupted (Ctrl-C), closing its context, or killed
frees the executors for the next driver within a bound, and other runs go on untouched.

The long job's tasks are many short records of busy work (2 ms each, about 20 s per task), so
before cancellation stopped running tasks a tiny job queued behind them waited those 20 s.
"""

from __future__ import annotations

import operator
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
from squall.common import transport

from squall import LocalCluster
from tests.cluster.helpers import Background
from tests.conftest import fast_settings
from tests.polling import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(90)]

ROOT = str(Path(__file__).resolve().parents[2])
EXECUTORS = 2
RECORD_SECONDS = 0.002
RECORDS_PER_TASK = 10_000  # 20 s of busy work per task
# From the cancel (or the driver's death) to the next driver's tiny job being done. Measured at
# well under a second on loopback; generous, for a loaded machine, and far below the 20 s a
# long task takes.
BOUND = 5.0

# A driver running the long job on the cluster at argv[1], then, per argv[3]: "interrupt" (a
# Ctrl-C it survives, like a REPL), "close" (closes its context with the run in flight) or
# "kill" (waits to be killed). Each long task writes a marker file into argv[2] when it starts.
# With "stream" it runs a stream instead, and waits to be killed.
DRIVER = r"""
import os, sys, time
import squall
from squall import Settings

address, markers, mode = sys.argv[1:4]
RECORD_SECONDS, RECORDS = float(sys.argv[4]), int(sys.argv[5])

def busy(records):
    for x in records:
        if x % RECORDS == 0:  # the task's first record: say it started
            open(os.path.join(markers, f"started-{x // RECORDS}"), "w").close()
        began = time.perf_counter()
        while time.perf_counter() - began < RECORD_SECONDS:
            pass
        yield x

ctx = squall.connect(address, Settings.from_env())
if mode == "stream":  # a stream whose groups hold 50 batches of 0.1 s, each noting when it starts
    import threading
    from squall import sources

    def batch(p, b):
        open(os.path.join(markers, f"batch-{b}-{p}"), "w").close()
        return [(b % 3, 1)]

    stream = ctx.stream(sources.generator(batch, partitions=2), batch_interval=0.1, group_size=50)
    stream.update_state_by_key(lambda values, total: (total or 0) + sum(values), partitions=2).start()
    print("submitting", flush=True)
    threading.Event().wait()
long_job = ctx.range(0, RECORDS * 2, partitions=2).map_partitions(busy)
results = ctx.iter_jobs([long_job])
print("submitting", flush=True)
if mode == "close":
    import threading
    threading.Thread(target=lambda: next(results, None), daemon=True).start()  # waits for the result
    sys.stdin.readline()  # the test says when
    ctx.close()
    print("closed", flush=True)
    sys.stdin.readline()
    raise SystemExit(0)
try:
    next(results)
    print("finished", flush=True)
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.stdin.readline()  # stays alive, connected, until the test is done with it
"""


class Driver:
    """The long job's driver, in its own process."""

    def __init__(self, cluster: LocalCluster, markers: Path, mode: str) -> None:
        self.markers = markers
        self.proc = subprocess.Popen(
            [sys.executable, "-c", DRIVER, cluster.address, str(markers), mode, str(RECORD_SECONDS), str(RECORDS_PER_TASK)],
            cwd=ROOT, env={**os.environ, **cluster.settings.to_env()},
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        assert self.line(30) == "submitting"

    def line(self, timeout: float) -> str:
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)  # type: ignore[arg-type]
        try:
            if not sel.select(timeout):
                raise AssertionError(f"the driver printed nothing within {timeout:g}s")
        finally:
            sel.close()
        line = self.proc.stdout.readline().strip()  # type: ignore[union-attr]
        if not line:
            self.proc.wait(5)
            raise AssertionError(f"the driver exited with {self.proc.returncode}: {self.proc.stderr.read()}")  # type: ignore[union-attr]
        return line

    def wait_running(self) -> None:
        """Until both long tasks run, one on each executor."""
        wait_until(lambda: len(list(self.markers.glob("started-*"))) == EXECUTORS, timeout=30, what="the long tasks to start")

    def tell(self) -> None:
        self.proc.stdin.write("\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            stream.close()  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def shared() -> Iterator[LocalCluster]:
    """A cluster of two one-slot executors, shared by the drivers of these tests."""
    with LocalCluster(executors=EXECUTORS, settings=fast_settings()) as cluster:
        yield cluster


def tiny_job(cluster: LocalCluster) -> Background:
    """Another driver's tiny job, queued behind whatever the executors run now."""

    def run() -> list[int]:
        with cluster.connect() as ctx:
            return ctx.range(4, partitions=EXECUTORS).map(lambda x: x + 1).collect()

    return Background(run)


def heartbeat_timeout(cluster: LocalCluster) -> float:
    """How long the scheduler's socket waits for a silent peer's ZeroMQ heartbeats (seconds)."""
    sock = transport.new_socket(zmq.Context.instance(), zmq.ROUTER, cluster.settings)
    try:
        return float(sock.getsockopt(zmq.HEARTBEAT_TIMEOUT)) / 1000
    finally:
        sock.close(0)


def executors_idle(cluster: LocalCluster) -> None:
    """No test leaves work behind for the next: a tiny job goes through at once."""
    call = tiny_job(cluster)
    assert call.join(BOUND), "the executors are still busy"
    assert call.outcome == [1, 2, 3, 4]


@pytest.mark.parametrize("mode", ["interrupt", "close", "kill", "freeze"])
def test_a_cancelled_or_dead_drivers_tasks_stop_and_the_next_drivers_job_runs_at_once(shared, tmp_path, mode) -> None:
    # A frozen driver (SIGSTOP: its heartbeats stop, its connection stays open) is given up on
    # after the heartbeat timeout; the others are noticed at once.
    bound = BOUND + (heartbeat_timeout(shared) if mode == "freeze" else 0.0)
    driver = Driver(shared, tmp_path, "kill" if mode == "freeze" else mode)
    try:
        driver.wait_running()
        waiting = tiny_job(shared)  # queued on both executors behind the long tasks
        assert not waiting.join(0.5), "the tiny job did not wait for the long tasks"
        began = time.monotonic()
        if mode == "interrupt":
            driver.proc.send_signal(signal.SIGINT)  # Ctrl-C
            assert driver.line(10) == "interrupted"
        elif mode == "close":
            driver.tell()
            assert driver.line(10) == "closed"
        elif mode == "freeze":
            driver.proc.send_signal(signal.SIGSTOP)
        else:
            driver.proc.kill()
        assert waiting.join(bound + 1), f"the tiny job still waits {time.monotonic() - began:.1f}s after the {mode}"
        took = waiting.finished_at - began  # type: ignore[operator]
        print(f"\n{mode}: the next driver's job was done {took:.3f}s after it")
        assert waiting.outcome == [1, 2, 3, 4]
        assert took < bound
        if mode in ("interrupt", "close"):
            assert driver.proc.poll() is None  # the driver lives on: the cancel did it, not its death
    finally:
        driver.cleanup()
    executors_idle(shared)


def test_other_drivers_runs_are_untouched_and_correct_when_a_driver_is_killed(shared, tmp_path) -> None:
    driver = Driver(shared, tmp_path, "kill")
    try:
        driver.wait_running()

        def batches() -> list[dict[int, int]]:  # three groups of two batches, with a shuffle each
            with shared.connect() as ctx:
                datasets = [ctx.range(100 * b, 100 * b + 300, partitions=3).map(lambda x: (x % 5, x)).reduce_by_key(operator.add, 2)
                            for b in range(6)]
                return [dict(r) for r in ctx.run_jobs(datasets, group_size=2)]

        other = Background(batches)
        assert not other.join(0.5)
        driver.proc.kill()
        assert other.join(BOUND + 5), "the other driver's run did not finish"
        expected = [{k: sum(x for x in range(100 * b, 100 * b + 300) if x % 5 == k) for k in range(5)} for b in range(6)]
        assert other.outcome == expected
    finally:
        driver.cleanup()
    executors_idle(shared)


@pytest.mark.parametrize("preschedule", [True, False], ids=["drizzle", "bsp"])
def test_leaving_one_run_early_stops_it_and_the_same_drivers_other_run_goes_on(shared, tmp_path, preschedule) -> None:
    markers = tmp_path

    def busy(records):  # type: ignore[no-untyped-def]
        for x in records:
            if x % RECORDS_PER_TASK == 0:
                (markers / f"started-{x // RECORDS_PER_TASK}").touch()
            began = time.perf_counter()
            while time.perf_counter() - began < RECORD_SECONDS:
                pass
            yield x

    with shared.connect() as ctx:
        quick = ctx.range(4, partitions=EXECUTORS)
        long_job = ctx.range(0, RECORDS_PER_TASK * 2, partitions=EXECUTORS).map_partitions(busy)
        first = ctx.iter_jobs([quick, long_job], group_size=2, preschedule=preschedule)
        assert sorted(next(first)) == [0, 1, 2, 3]
        wait_until(lambda: len(list(markers.glob("started-*"))) == EXECUTORS, timeout=30, what="the long tasks to start")
        square = ctx.range(10, partitions=EXECUTORS).map(lambda x: x * x)
        second = Background(lambda: ctx.run_jobs([square], preschedule=preschedule)[0])
        assert not second.join(0.5)
        began = time.monotonic()
        first.close()  # leaves the loop: the run is cancelled, its running tasks stopped
        assert second.join(BOUND), "the same driver's other run still waits"
        assert second.outcome == [x * x for x in range(10)]
        print(f"\nleaving the loop ({'drizzle' if preschedule else 'bsp'}): the other run was done {second.finished_at - began:.3f}s after it")  # type: ignore[operator]
    executors_idle(shared)


def test_a_killed_stream_drivers_pre_scheduled_batches_never_start(shared, tmp_path) -> None:
    driver = Driver(shared, tmp_path, "stream")
    try:
        wait_until(lambda: len(list(tmp_path.glob("batch-*"))) >= 6, timeout=30, what="the stream's first batches")
        driver.proc.kill()
        killed = time.time()
        # The group in flight holds batches for up to 5 s more. Watch for 2 s: none may start once
        # the scheduler has noticed (one due in the moment that takes may still start).
        watch_until = time.monotonic() + 2.0
        while time.monotonic() < watch_until:
            late = sorted(m.name for m in tmp_path.glob("batch-*") if m.stat().st_mtime > killed + 0.3)
            assert not late, f"batches started after the driver was killed: {late}"
            time.sleep(0.05)
    finally:
        driver.cleanup()
    executors_idle(shared)
