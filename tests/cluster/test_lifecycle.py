"""A local cluster's services live and die with their driver, and a Context outlives failed jobs."""

from __future__ import annotations

import json
import operator
import os
import selectors
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import squall
from squall import LocalCluster
from tests.cluster.helpers import Background, pid_running
from tests.conftest import fast_settings, service_processes
from tests.polling import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(60)]

ROOT = str(Path(__file__).resolve().parents[2])

# A driver process owning a 2-executor cluster. argv[1] says how it creates it and what it does
# after printing {"pids": ..., "workdir": ...} on stdout: block forever, or exit at once.
DRIVER = r"""
import json, signal, sys, threading
from squall import LocalCluster, Settings

mode = sys.argv[1]
settings = Settings(heartbeat_interval=0.05, heartbeat_misses=6)

def report(cluster, **extra):
    print(json.dumps({"pids": cluster.pids, "workdir": str(cluster.workdir), **extra}), flush=True)

if mode == "block":
    cluster = LocalCluster(executors=2, settings=settings)
    report(cluster)
    threading.Event().wait()
elif mode == "with-block":
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
    with LocalCluster(executors=2, settings=settings) as cluster:
        report(cluster)
        threading.Event().wait()
elif mode == "thread-block":
    box = []
    creator = threading.Thread(target=lambda: box.append(LocalCluster(executors=2, settings=settings)))
    creator.start()
    creator.join()
    cluster = box[0]
    with cluster.connect() as ctx:  # the cluster outlives the thread that started it
        count = ctx.range(10).map(lambda x: (x % 2, x)).reduce_by_key(lambda a, b: a + b).count()
    report(cluster, count=count)
    threading.Event().wait()
elif mode == "exit":
    cluster = LocalCluster(executors=2, settings=settings)
    report(cluster)
else:
    raise SystemExit(f"unknown mode {mode}")
"""


class Driver:
    def __init__(self, mode: str, new_session: bool = False) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", DRIVER, mode],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=new_session,
        )
        self.report = self._read_report(timeout=30)
        self.pids: dict[str, int] = self.report["pids"]
        self.workdir = Path(self.report["workdir"])

    def _read_report(self, timeout: float) -> dict:
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)  # type: ignore[arg-type]
        try:
            if not sel.select(timeout):
                self.proc.kill()
                raise AssertionError(f"driver printed nothing within {timeout:g}s")
        finally:
            sel.close()
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        if not line:
            self.proc.wait(5)
            raise AssertionError(f"driver exited with {self.proc.returncode}: {self.proc.stderr.read()}")  # type: ignore[union-attr]
        return json.loads(line)

    def running_services(self) -> list[int]:
        return [pid for pid in self.pids.values() if pid_running(pid)]

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for pid in self.running_services():  # only if a test failed: do not leave orphans behind
            os.kill(pid, signal.SIGKILL)
        self.proc.stdout.close()  # type: ignore[union-attr]
        self.proc.stderr.close()  # type: ignore[union-attr]
        shutil.rmtree(self.workdir, ignore_errors=True)


def all_gone(driver: Driver) -> bool:
    return not driver.running_services() and not service_processes(driver.proc.pid)


# --- LocalCluster in this process ----------------------------------------------------------------


def test_close_leaves_no_service_process() -> None:
    cluster = LocalCluster(executors=2, settings=fast_settings())
    mine = set(cluster.pids.values())
    assert len(mine) == 4
    assert mine <= {pid for pid, _ in service_processes(os.getpid())}
    with cluster.connect() as ctx:
        assert ctx.range(10).count() == 10
    cluster.close()
    # close() waits for its processes, so they are gone (reaped, not zombies) when it returns
    assert not [pid for pid in mine if pid_running(pid)]
    assert not mine & {pid for pid, _ in service_processes(os.getpid())}
    assert all(p.returncode is not None for p in cluster.processes.values())
    assert not cluster.workdir.exists()
    cluster.close()  # idempotent
    with pytest.raises(squall.ConnectionError):
        squall.connect(cluster.address, fast_settings(connect_timeout=0.3))


def test_leaving_a_with_block_by_exception_closes_the_cluster() -> None:
    with pytest.raises(RuntimeError, match="user code failed"):
        with LocalCluster(executors=1, settings=fast_settings()) as cluster:
            mine = set(cluster.pids.values())
            raise RuntimeError("user code failed")
    assert not [pid for pid in mine if pid_running(pid)]
    assert not mine & {pid for pid, _ in service_processes(os.getpid())}


def test_sigterm_stops_an_executor_that_is_running_a_long_task(tmp_path: Path) -> None:
    with LocalCluster(executors=1, settings=fast_settings(scheduler_silence_timeout=2.0)) as cluster:
        ctx = cluster.connect()  # not closed here: the background job may still use it

        def long_task(x):  # type: ignore[no-untyped-def]
            (tmp_path / "started").touch()
            time.sleep(8)
            return x

        Background(ctx.range(1, partitions=1).map(long_task).collect)
        wait_until((tmp_path / "started").exists, timeout=10, what="the task to start")
        executor = cluster.processes["executor-0"]
        executor.send_signal(signal.SIGTERM)
        # Runner.close() allows the runner 2 s to finish; after that the process must go
        wait_until(lambda: executor.poll() is not None, timeout=4.0, what="the executor to exit on SIGTERM")


# --- driver processes ----------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killed_driver_takes_its_cluster_with_it(sig: int) -> None:
    driver = Driver("block")
    try:
        assert sorted(driver.pids) == ["executor-0", "executor-1", "scheduler", "shuffle_meta"]
        assert len(driver.running_services()) == 4
        assert len(service_processes(driver.proc.pid)) == 4
        driver.proc.send_signal(sig)
        assert driver.proc.wait(10) == -sig
        wait_until(lambda: all_gone(driver), timeout=5, what="the dead driver's services to exit")
    finally:
        driver.cleanup()


def test_cluster_started_off_the_main_thread_survives_that_thread_and_dies_with_the_driver() -> None:
    # No PDEATHSIG here (it would fire when the creating thread ends): the services' watch on
    # their parent pid must stop them instead.
    driver = Driver("thread-block")
    try:
        assert driver.report["count"] == 2
        assert len(driver.running_services()) == 4
        driver.proc.kill()
        driver.proc.wait(10)
        wait_until(lambda: all_gone(driver), timeout=5, what="services to notice their parent is gone")
    finally:
        driver.cleanup()


@pytest.mark.parametrize("target", ["driver", "process group"])
def test_ctrl_c_closes_the_cluster(target: str) -> None:
    driver = Driver("with-block", new_session=(target == "process group"))
    try:
        assert len(driver.running_services()) == 4
        if target == "driver":
            driver.proc.send_signal(signal.SIGINT)
        else:
            os.killpg(driver.proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        driver.proc.wait(15)
        assert "KeyboardInterrupt" in driver.proc.stderr.read()  # type: ignore[union-attr]
        # close() ran (not just PDEATHSIG): it waited for every service and removed the work dir
        assert all_gone(driver)
        assert not driver.workdir.exists()
    finally:
        driver.cleanup()


def test_driver_exiting_normally_closes_its_cluster_at_exit() -> None:
    driver = Driver("exit")
    try:
        assert driver.proc.wait(15) == 0
        assert all_gone(driver)  # atexit closed it: processes reaped and work dir removed
        assert not driver.workdir.exists()
    finally:
        driver.cleanup()


# --- a Context across jobs -----------------------------------------------------------------------


def test_context_runs_jobs_after_failed_jobs(ctx) -> None:  # type: ignore[no-untyped-def]
    def explode(x):  # type: ignore[no-untyped-def]
        raise ZeroDivisionError("boom")

    for _ in range(3):
        with pytest.raises(squall.TaskError):
            ctx.range(8, partitions=4).map(explode).collect()
        with pytest.raises(squall.TaskError):
            ctx.range(8, partitions=4).reduce_by_key(operator.add).collect()  # not pairs
        with pytest.raises(ValueError):
            ctx.range(0, partitions=2).reduce(operator.add)
        result = ctx.range(100, partitions=4).map(lambda x: (x % 10, x)).reduce_by_key(operator.add, 3).collect()
        assert dict(result) == {k: sum(range(k, 100, 10)) for k in range(10)}
    assert ctx.status().running_jobs == 0


def test_several_drivers_run_jobs_concurrently(cluster) -> None:  # type: ignore[no-untyped-def]
    def driver(seed: int) -> list[bool]:
        with cluster.connect() as ctx:
            oks = []
            for i in range(5):
                n = 50 + seed * 10 + i
                got = ctx.range(n).map(lambda x, s=seed: (x % (s + 2), 1)).reduce_by_key(operator.add).collect()
                oks.append(dict(got) == {k: len(range(k, n, seed + 2)) for k in range(min(n, seed + 2))})
            return oks

    calls = [Background(lambda s=s: driver(s)) for s in range(3)]
    assert all(call.join(30) for call in calls), "a concurrent driver hung"
    for call in calls:
        assert call.outcome == [True] * 5, call.outcome


def test_closing_one_context_does_not_disturb_another(cluster) -> None:  # type: ignore[no-untyped-def]
    first = cluster.connect()
    second = cluster.connect()
    assert first.range(5).collect() == [0, 1, 2, 3, 4]
    first.close()
    assert second.range(5).map(lambda x: -x).collect() == [0, -1, -2, -3, -4]
    second.close()
