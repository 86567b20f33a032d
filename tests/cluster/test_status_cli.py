"""`squall status` and `squall top` as real subprocesses against a cluster running a stream, and
the driver's progress bar under a pseudo-terminal (and its silence on a pipe)."""

from __future__ import annotations

import json
import os
import re
import select
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from squall import LocalCluster, sources
from squall.stream import Stream
from tests.polling import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]

SQUALL = [sys.executable, "-m", "squall"]
ROOT = Path(__file__).resolve().parents[2]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


@pytest.fixture(scope="module")
def streaming(cluster: LocalCluster) -> Iterator[tuple[LocalCluster, Stream, dict[str, Any]]]:
    """The session's cluster with a stream running, and a snapshot taken once its batches show."""
    with cluster.connect() as ctx:
        stream = (ctx.stream(sources.rate(400, partitions=2), batch_interval=0.1)
                     .map(lambda event: (event[1] % 5, 1))
                     .foreach_batch(lambda batch, records: None)
                     .start())
        try:
            def batches_shown() -> dict[str, Any] | None:
                snapshot = ctx.snapshot()
                mine = [s for s in snapshot["streams"] if s["run"] == stream.stream_id]
                return snapshot if mine and mine[0]["batches"] >= 3 else None

            snapshot = wait_until(batches_shown, timeout=30, interval=0.1, what="the stream's batches in the snapshot")
            yield cluster, stream, snapshot
        finally:
            stream.stop()


def env_of(cluster: LocalCluster) -> dict[str, str]:
    return {**os.environ, **cluster.settings.to_env()}  # the cluster's keys, as SQUALL_CURVE_*


def squall(cluster: LocalCluster, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SQUALL, *args], capture_output=True, text=True, timeout=timeout, env=env_of(cluster), cwd=ROOT)


def test_status_shows_every_executor_and_the_stream(streaming: tuple[LocalCluster, Stream, dict[str, Any]]) -> None:
    cluster, stream, snapshot = streaming
    done = squall(cluster, "status", "--address", cluster.address)
    assert done.returncode == 0, done.stderr
    executors = [e["id"] for e in snapshot["executors"]]
    assert len(executors) == 4
    for executor_id in executors:
        assert executor_id in done.stdout
    assert stream.stream_id in done.stdout
    for title in ("Executors (4)", "Streams (", "Runs in flight", "Recent events"):
        assert title in done.stdout
    assert "dashboard:" in done.stdout and "metrics:" in done.stdout


def test_status_json_is_the_raw_snapshot(streaming: tuple[LocalCluster, Stream, dict[str, Any]]) -> None:
    cluster, _, snapshot = streaming
    done = squall(cluster, "status", "--address", cluster.address, "--json")
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert set(printed) >= {"time", "scheduler", "executors", "streams", "runs", "persisted", "events"}
    assert {e["id"] for e in printed["executors"]} == {e["id"] for e in snapshot["executors"]}
    assert printed["scheduler"]["address"] == snapshot["scheduler"]["address"]


def test_top_refreshes_then_exits_after_its_iterations(streaming: tuple[LocalCluster, Stream, dict[str, Any]]) -> None:
    cluster, _, snapshot = streaming
    started = time.monotonic()
    done = squall(cluster, "top", "--address", cluster.address, "--iterations", "2", "--interval", "0.2")
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 30
    for executor in snapshot["executors"]:
        assert executor["id"] in done.stdout
    assert "refreshing every 0.2 s" in done.stdout


def test_a_scheduler_that_does_not_answer_is_a_clear_error(cluster: LocalCluster) -> None:
    with socket.socket() as s:  # a port where nothing listens any more, as a stopped scheduler leaves it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for command in ("status", "top"):
        done = squall(cluster, command, "--address", f"tcp://127.0.0.1:{port}", "--timeout", "1")
        assert done.returncode == 1, (command, done.stdout, done.stderr)
        assert done.stderr.startswith("squall: error:") and f"127.0.0.1:{port}" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr


# A batch job of a few seconds: 8 tasks of 1.25 s on 4 single-slot executors.
DRIVER = textwrap.dedent("""
    import sys, time
    import squall

    def slow(x):
        time.sleep(1.25)
        return x

    with squall.connect(sys.argv[1]) as ctx:
        print("count", ctx.range(8, partitions=8).map(slow).count(), flush=True)
""")


def run_driver(cluster: LocalCluster, tmp_path: Path, stderr_terminal: bool) -> tuple[str, str]:
    """Run DRIVER against the cluster; its stdout and its stderr (through a pseudo-terminal when
    `stderr_terminal`, a pipe otherwise), ANSI sequences removed."""
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    env = {**env_of(cluster), "TERM": "xterm-256color", "COLUMNS": "120"}
    if not stderr_terminal:
        done = subprocess.run([sys.executable, str(script), cluster.address], capture_output=True, text=True, timeout=60, env=env)
        assert done.returncode == 0, done.stderr
        return done.stdout, done.stderr
    primary, secondary = os.openpty()
    try:
        proc = subprocess.Popen([sys.executable, str(script), cluster.address], stdout=subprocess.PIPE, stderr=secondary, env=env)
        os.close(secondary)
        secondary = -1
        written = bytearray()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ready, _, _ = select.select([primary], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(primary, 65536)
                except OSError:  # EIO: every holder of the terminal's other end has closed it
                    break
                if not chunk:
                    break
                written += chunk
            elif proc.poll() is not None:
                break
        stdout = proc.communicate(timeout=30)[0].decode()
        assert proc.returncode == 0, written.decode(errors="replace")
        return stdout, ANSI.sub("", written.decode(errors="replace"))
    finally:
        os.close(primary)
        if secondary >= 0:
            os.close(secondary)


def test_a_long_batch_job_shows_a_progress_bar_on_a_terminal(cluster: LocalCluster, tmp_path: Path) -> None:
    stdout, terminal = run_driver(cluster, tmp_path, stderr_terminal=True)
    assert "count 8" in stdout
    assert re.search(r"stage \d+ .*\b[0-8]/8 tasks", terminal), terminal


def test_no_progress_bar_on_a_pipe(cluster: LocalCluster, tmp_path: Path) -> None:
    stdout, stderr = run_driver(cluster, tmp_path, stderr_terminal=False)
    assert "count 8" in stdout
    assert "stage" not in stderr and "/8 tasks" not in stderr and "━" not in stderr, stderr


def test_threads_asking_the_scheduler_at_once_each_get_their_own_answer(cluster: LocalCluster) -> None:
    """A stream's pings, a user's snapshots and status on one context: no reply is taken by the
    wrong thread (a stream whose ping went unanswered would stop)."""
    with cluster.connect() as ctx:
        failures: list[BaseException] = []

        def ask(call: Any) -> None:
            try:
                for _ in range(60):
                    call()
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                failures.append(exc)

        threads = [threading.Thread(target=ask, args=(call,)) for call in (ctx.client.ping, ctx.snapshot, ctx.status)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not failures, failures
