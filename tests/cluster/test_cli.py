"""The `squall` command: --help everywhere, `squall local` and `squall demo` end to end."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import service_processes
from tests.polling import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(90)]

SQUALL = [sys.executable, "-m", "squall"]


@pytest.mark.parametrize("command", [[], ["scheduler"], ["executor"], ["shuffle-meta"], ["local"], ["demo"], ["status"], ["top"]])
def test_every_command_has_help(command: list[str]) -> None:
    out = subprocess.run([*SQUALL, *command, "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: squall")


def test_local_prints_its_address_and_leaves_nothing_behind() -> None:
    proc = subprocess.Popen([*SQUALL, "local", "--executors", "2", "--seconds", "1"], stdout=subprocess.PIPE, text=True)
    try:
        banner = proc.stdout.readline()  # type: ignore[union-attr]
        assert re.search(r"scheduler at tcp://127\.0\.0\.1:\d+, 2 executors", banner), banner
        assert len(service_processes(proc.pid)) == 4  # scheduler, shuffle_meta, 2 executors
        rest = proc.communicate(timeout=30)[0]
        assert proc.returncode == 0
        assert re.search(r"dashboard: http://127\.0\.0\.1:\d+/", rest), rest
    finally:
        proc.kill()
    wait_until(lambda: not service_processes(proc.pid), timeout=5, what="the local cluster's services to exit")


def test_the_stream_demo_prints_live_metrics_and_correct_windows() -> None:
    proc = subprocess.run([*SQUALL, "demo", "--seconds", "3", "--rate", "2000", "--window", "1"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "every window matches plain Python: yes" in proc.stdout
    assert re.search(r"^dashboard: http://127\.0\.0\.1:\d+/$", proc.stdout, re.M), proc.stdout
    live = re.findall(r"^ +\d+\.\d +\d+ +([\d,]+) +[\d,.]+ ", proc.stdout, re.M)
    assert len(live) >= 2  # a live line per second
    assert 1000 <= int(live[-1].replace(",", "")) <= 2100  # input events a second: the rate is the total of the partitions


def test_demo_prints_a_correct_word_count() -> None:
    proc = subprocess.run([*SQUALL, "demo", "--groups", "--batches", "8", "--lines", "50", "--group-size", "4"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "matches a plain-Python Counter: yes" in proc.stdout
    assert re.search(r"Drizzle, groups of 4 +\d+\.\d+ +\d+\.\d+ +\d+\.\d+ +2", proc.stdout), proc.stdout
