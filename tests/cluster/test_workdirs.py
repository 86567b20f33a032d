"""A `squall local` killed with SIGKILL leaves its work directory behind; the next local cluster
removes it, and leaves a live cluster's alone."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from squall import LocalCluster
from tests.conftest import fast_settings, service_processes
from tests.polling import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(90)]


def workdir_of(pid: int) -> Path:
    """The work directory of the local cluster driven by `pid`, from its services' --ready-file."""
    for _, cmd in service_processes(pid):
        found = re.search(r"--ready-file (\S+)", cmd)
        if found:
            return Path(found.group(1)).parent
    raise AssertionError(f"no service of {pid} names a ready file")


def start_local(started: list[subprocess.Popen[str]]) -> tuple[subprocess.Popen[str], Path]:
    """A running `squall local` (added to `started`, for the test to stop) and its work directory."""
    proc = subprocess.Popen([sys.executable, "-m", "squall", "local", "--executors", "1"], stdout=subprocess.PIPE, text=True)
    started.append(proc)
    banner = proc.stdout.readline()  # type: ignore[union-attr]
    assert "scheduler at" in banner, banner
    return proc, workdir_of(proc.pid)


def test_the_workdir_of_a_killed_squall_local_is_removed_by_the_next_local_cluster(cluster) -> None:  # type: ignore[no-untyped-def]
    started: list[subprocess.Popen[str]] = []
    try:
        killed, leftover = start_local(started)
        live, live_workdir = start_local(started)
        assert leftover.name.startswith("squall-local-") and leftover.is_dir()
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=10)
        wait_until(lambda: not service_processes(killed.pid), timeout=10, what="the killed cluster's services to die with it")
        assert leftover.is_dir()  # nothing could remove it at the kill
        with LocalCluster(executors=1, settings=fast_settings()) as fresh:
            assert not leftover.exists()
            assert fresh.workdir.is_dir()
            assert live_workdir.is_dir() and cluster.workdir.is_dir()  # live clusters' directories are never touched
        assert not fresh.workdir.exists()
        live.send_signal(signal.SIGTERM)
        assert live.wait(timeout=30) == 0
        assert not live_workdir.exists()  # a cluster that stops removes its own
    finally:
        for proc in started:
            proc.kill()
            proc.wait(timeout=10)
