"""A progress bar on stderr while a driver waits for a batch run (Connection.run_jobs, and so
collect, count, reduce and the other actions).

Shown only when the wait passes SHOW_AFTER seconds, stderr is a terminal and the progress_bar
setting is on: one line per stage, tasks done of total, from the run's entry in the scheduler's
snapshot (docs/observability.md), polled every POLL_EVERY seconds. It lives in a thread of its
own with a socket of its own: the driver's connection, its mailboxes and its threads are never
touched, a snapshot that fails or comes late is passed over, and the bar is erased when the run
ends. A run that ends within SHOW_AFTER costs one thread that sleeps and exits.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Mapping
from types import TracebackType
from typing import IO, Any

import msgspec
import zmq
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from squall.common import transport
from squall.common.protocol import GetSnapshot, Snapshot
from squall.common.settings import Settings
from squall.health import reply

SHOW_AFTER = 1.0  # seconds a run must take before its bar appears
POLL_EVERY = 0.5  # seconds between snapshots
STOP_SLICE = 0.05  # the longest the thread waits without looking whether the run has ended


def run_progress(snapshot: Mapping[str, Any], run_id: str) -> tuple[tuple[int, int], list[tuple[int, int, int]]] | None:
    """The run's (jobs done, jobs) and its stages as (stage, tasks done, tasks) from a snapshot,
    or None when the run is not in flight there (not dispatched yet, or over)."""
    for run in snapshot.get("runs", []):
        if run.get("run") == run_id:
            stages = [(int(s.get("stage", 0)), int(s.get("done", 0)), int(s.get("tasks", 0))) for s in run.get("stages", [])]
            return (int(run.get("jobs_done", 0)), int(run.get("jobs", 0))), stages
    return None


def is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


class RunProgressBar:
    """Around a wait for run `run_id` on the scheduler at `address`: `with RunProgressBar(...):`.
    Does nothing unless settings.progress_bar is on and `stream` (default sys.stderr) is a terminal."""

    def __init__(self, address: str, settings: Settings, run_id: str, stream: IO[str] | None = None) -> None:
        self.address = address
        self.settings = settings
        self.run_id = run_id
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = settings.progress_bar and is_terminal(self.stream)
        self._ended = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> RunProgressBar:
        if self.enabled:
            self._thread = threading.Thread(target=self._show, name=f"squall-progress-{self.run_id}", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._ended.set()
        if self._thread is not None:
            # It notices within STOP_SLICE and erases the bar; a thread stuck elsewhere is a
            # daemon and must not hold the driver up.
            self._thread.join(timeout=1.0)

    def _show(self) -> None:
        if self._ended.wait(SHOW_AFTER):
            return
        try:
            self._poll()
        except Exception:  # noqa: BLE001 - a progress bar never breaks the job it shows
            pass

    def _poll(self) -> None:
        """Until the run ends: a snapshot every POLL_EVERY seconds, drawn once the run is in it."""
        sock = transport.new_socket(zmq.Context.instance(), zmq.DEALER, self.settings)
        bar: _Bar | None = None
        try:
            sock.connect(self.address)
            while not self._ended.is_set():
                polled = time.monotonic()
                found = run_progress(self._snapshot(sock, polled + POLL_EVERY), self.run_id)
                if found is not None and not self._ended.is_set():
                    bar = bar or _Bar(self.stream, self.run_id)
                    bar.update(*found)
                self._ended.wait(max(0.0, polled + POLL_EVERY - time.monotonic()))
        finally:
            try:
                if bar is not None:
                    bar.close()
            finally:
                sock.close(0)

    def _snapshot(self, sock: zmq.SyncSocket, deadline: float) -> Mapping[str, Any]:
        """The scheduler's snapshot, or {} if none comes before `deadline` or the run ends first
        (an answer that comes late is taken by the next poll: any snapshot will do)."""
        transport.send(sock, GetSnapshot())
        while not self._ended.is_set() and (now := time.monotonic()) < deadline:
            msg = reply(sock, self.settings, min(deadline, now + STOP_SLICE), Snapshot)
            if isinstance(msg, Snapshot):
                decoded = msgspec.json.decode(msg.json)
                return decoded if isinstance(decoded, dict) else {}
        return {}


class _Bar:
    """The rich Progress itself: a line per stage (and one for jobs when the run has several),
    erased when closed. It draws only when updated (no refresh thread), and leaves sys.stdout and
    sys.stderr as they are."""

    def __init__(self, stream: IO[str], run_id: str) -> None:
        self.run_id = run_id
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[unit]}"), TimeElapsedColumn(),
            console=Console(file=stream), transient=True, auto_refresh=False, redirect_stdout=False, redirect_stderr=False,
        )
        self.rows: dict[str, TaskID] = {}
        self.progress.start()

    def update(self, jobs: tuple[int, int], stages: list[tuple[int, int, int]]) -> None:
        done, total = jobs
        if total > 1:
            self._row(f"run {self.run_id} jobs", done, total, "jobs")
        for stage, tasks_done, tasks in stages:
            self._row(f"run {self.run_id} stage {stage}", tasks_done, tasks, "tasks")
        self.progress.refresh()

    def _row(self, description: str, done: int, total: int, unit: str) -> None:
        if description not in self.rows:
            self.rows[description] = self.progress.add_task(description, total=total, unit=unit)
        self.progress.update(self.rows[description], completed=done, total=total)

    def close(self) -> None:
        self.progress.stop()
