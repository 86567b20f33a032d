"""Safe points: where a running task can be stopped, killed or suspended, and how.

A task's pipeline is a chain of iterators; records are checked as they enter it and as they leave
it (`checked`). The check is ONE attribute read per record (`signal.pending`); everything else is
on the slow path (`TaskSignal.safe_point`), taken only when the loop has asked for something:

- stop (its run was cancelled): raise TaskCancelled;
- kill (preemption "kill"): raise TaskPreempted; the task runs again later from its start;
- suspend (preemption "suspend"): park the thread here until the loop resumes it, for good or
  for a slice, after which it parks itself again and tells the loop.

Why a parked thread and not a generator the loop stops pulling from: a suspended task is a
stackful coroutine. The safe point may be deep inside a user's operator that reads its whole
input first (sorted(), a group-by, a reduce into a dict): that frame is in the middle of a call,
not at a yield, and only a thread of its own can keep such a stack aside and resume it where it
stood. Python generators are stackless (a yield suspends one frame, not its callers), so
suspending at a yield would only work for pipelines made of generators all the way down.

Both threads (the loop asking, the task answering) take a lock on the slow path only, so the
loop's requests and the task's parking cannot cross (e.g. a resume lost between the check and the
wait). `parked` is set by the task when it parks and cleared by the loop when it resumes it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any


class TaskCancelled(BaseException):
    """The task's run was cancelled; raised at the task's next safe point. A BaseException, so a
    user function's `except Exception` (or bad_records="skip") cannot swallow it."""


class TaskPreempted(BaseException):
    """The task was killed for latency work (preemption "kill"); raised at its next safe point.
    A BaseException for the same reason as TaskCancelled."""


class StopSignal:
    """What the loop may ask of a latency task: to stop. Setting it needs no lock (two plain
    attribute writes, and the task only ever raises on them)."""

    __slots__ = ("pending", "stopped", "requested_at")

    def __init__(self) -> None:
        self.pending = False  # something asked: the one attribute read per record
        self.stopped = False
        self.requested_at = 0.0  # monotonic time of the latest request, for the executor's log

    def stop(self, now: float) -> None:
        self.requested_at = now
        self.stopped = self.pending = True

    def safe_point(self) -> None:
        if self.stopped:
            raise TaskCancelled("the run was cancelled")


class TaskSignal(StopSignal):
    """What the loop may ask of a batch task: to stop, to die, to park, to go on."""

    __slots__ = ("killed", "parked", "_suspend", "_slice_end", "_resume", "_lock", "on_parked", "on_slice_over")

    def __init__(self, on_parked: Callable[[float], None] | None = None, on_slice_over: Callable[[], None] | None = None) -> None:
        super().__init__()
        self.killed = False
        self.parked = threading.Event()  # the task is parked (set by the task, cleared by the loop)
        self._suspend = False
        self._slice_end = 0.0  # running a slice until then (monotonic), 0 when not
        self._resume = threading.Event()
        self._lock = threading.Lock()
        self.on_parked = on_parked  # called with the seconds from a suspend request to parking
        self.on_slice_over = on_slice_over  # called when the task parks itself after a slice

    # --- the loop's side ------------------------------------------------------------------------

    def stop(self, now: float) -> None:
        with self._lock:
            self.stopped = self.pending = True
            self.requested_at = now
            self._resume.set()  # a parked task wakes up to raise

    def kill(self, now: float) -> None:
        with self._lock:
            self.killed = self.pending = True
            self.requested_at = now
            self._resume.set()

    def suspend(self, now: float) -> None:
        with self._lock:
            self._suspend = self.pending = True
            self._slice_end = 0.0
            self.requested_at = now
            self._resume.clear()

    def resume(self, now: float, slice_seconds: float = 0.0) -> None:
        """Go on: for good, or for `slice_seconds` and then park again."""
        with self._lock:
            self._suspend = False
            self._slice_end = now + slice_seconds if slice_seconds > 0 else 0.0
            self.pending = self._slice_end > 0 or self.stopped or self.killed
            self.parked.clear()
            self._resume.set()

    # --- the task's side ------------------------------------------------------------------------

    def safe_point(self) -> None:
        """The slow path of a check: raise, park, or go on."""
        woken = False
        while True:
            with self._lock:
                if self.stopped:
                    raise TaskCancelled("the run was cancelled")
                if self.killed:
                    raise TaskPreempted("the task was preempted by latency work")
                sliced = False
                if self._slice_end:
                    # A slice goes at least one record on, even when the OS ran this (niced)
                    # thread too late to start it before its end: the batch task always moves.
                    if woken or time.monotonic() < self._slice_end:
                        return
                    self._slice_end, self._suspend, sliced = 0.0, True, True
                    self._resume.clear()
                if not self._suspend:
                    self.pending = False
                    return
                waited = time.monotonic() - self.requested_at
                self.parked.set()
            if sliced:
                if self.on_slice_over is not None:
                    self.on_slice_over()
            elif self.on_parked is not None:
                self.on_parked(waited)
            self._resume.wait()  # the GIL is released while parked
            woken = True


NEVER = StopSignal()  # the signal of a task nothing can stop (an inline one): its checks cost one read


def checked(records: Iterable[Any], signal: StopSignal) -> Iterator[Any]:
    """The records, with a safe point between two of them. A record that one long call (user
    code, C code) takes is finished first: the check comes when it returns."""
    for record in records:
        if signal.pending:
            signal.safe_point()
        yield record
    if signal.pending:
        signal.safe_point()
