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


def test_the_workdir_of_a_killed_squall_local_is_removed_by_the_next_local_cluster(cluster) -> None:  # type: ignore[no-untyped-def]
    proc = subprocess.Popen([sys.executable, "-m", "squall", "local", "--executors", "1"], stdout=subprocess.PIPE, text=True)
    try:
        banner = proc.stdout.readline()  # type: ignore[union-attr]
        assert "scheduler at" in banner, banner
        leftover = workdir_of(proc.pid)
        assert leftover.name.startswith("squall-local-") and leftover.is_dir()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        wait_until(lambda: not service_processes(proc.pid), timeout=10, what="the killed cluster's services to die with it")
        assert leftover.is_dir()  # nothing could remove it at the kill
    finally:
        proc.kill()
        proc.wait(timeout=10)
    with LocalCluster(executors=1, settings=fast_settings()) as fresh:
        assert not leftover.exists()
        assert fresh.workdir.is_dir()
        assert cluster.workdir.is_dir()  # a live cluster's directory is never touched
    assert not fresh.workdir.exists()
