"""squall/progress_bar.py: which run's figures it reads from a snapshot, and when it stays silent
(the bar itself, on a terminal, is tested against a cluster in tests/cluster/test_status_cli.py)."""

from __future__ import annotations

import io
import os
import re

from squall.common.settings import Settings

from squall.progress_bar import RunProgressBar, _Bar, is_terminal, run_progress

SNAPSHOT = {
    "runs": [
        {"run": "s-1", "kind": "stream", "priority": "latency", "jobs": 10, "jobs_done": 4, "started": 0.0,
         "stages": [{"stage": 0, "tasks": 4, "done": 4}]},
        {"run": "s-2", "kind": "jobs", "priority": "batch", "jobs": 1, "jobs_done": 0, "started": 0.0,
         "stages": [{"stage": 0, "tasks": 8, "done": 5}, {"stage": 1, "tasks": 2, "done": 0}]},
    ]
}


def drain(primary: int) -> bytes:
    """What has been written to a pseudo-terminal so far (its reader's end, read until empty)."""
    os.set_blocking(primary, False)
    written = bytearray()
    while True:
        try:
            chunk = os.read(primary, 65536)
        except BlockingIOError:
            return bytes(written)
        if not chunk:
            return bytes(written)
        written += chunk


def test_the_run_s_jobs_and_stages_are_read_from_the_snapshot() -> None:
    assert run_progress(SNAPSHOT, "s-2") == ((0, 1), [(0, 5, 8), (1, 0, 2)])
    assert run_progress(SNAPSHOT, "s-1") == ((4, 10), [(0, 4, 4)])


def test_a_run_not_in_flight_has_no_progress() -> None:
    assert run_progress(SNAPSHOT, "s-3") is None
    assert run_progress({}, "s-2") is None


def test_silent_when_stderr_is_not_a_terminal_or_the_setting_is_off() -> None:
    assert not RunProgressBar("tcp://127.0.0.1:1", Settings(), "s-1", stream=io.StringIO()).enabled
    primary, secondary = os.openpty()
    try:
        with os.fdopen(secondary, "w", closefd=False) as terminal:
            assert is_terminal(terminal)
            assert RunProgressBar("tcp://127.0.0.1:1", Settings(), "s-1", stream=terminal).enabled
            assert not RunProgressBar("tcp://127.0.0.1:1", Settings(progress_bar=False), "s-1", stream=terminal).enabled
    finally:
        os.close(primary)
        os.close(secondary)


def test_a_run_that_ends_at_once_leaves_no_thread_and_writes_nothing() -> None:
    primary, secondary = os.openpty()
    try:
        with os.fdopen(secondary, "w", closefd=False) as terminal:
            bar = RunProgressBar("tcp://127.0.0.1:1", Settings(plaintext=True), "s-1", stream=terminal)
            with bar:
                assert bar._thread is not None and bar._thread.is_alive()
            assert not bar._thread.is_alive()
        assert drain(primary) == b""
    finally:
        os.close(primary)
        os.close(secondary)


def test_the_bar_draws_a_line_per_stage_on_a_terminal() -> None:
    primary, secondary = os.openpty()
    try:
        with os.fdopen(secondary, "w", closefd=False) as terminal:
            bar = _Bar(terminal, "s-2")
            bar.update((1, 3), [(0, 8, 8), (1, 5, 8)])
            bar.close()
        written = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", drain(primary).decode(errors="replace"))  # no ANSI sequences
    finally:
        os.close(primary)
        os.close(secondary)
    assert "run s-2 jobs" in written and "1/3 jobs" in written
    assert "run s-2 stage 0" in written and "8/8 tasks" in written
    assert "run s-2 stage 1" in written and "5/8 tasks" in written
