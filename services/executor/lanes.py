"""A lane: one thread running tasks one at a time, off the I/O loop (runner.py has two).

The latency lane is the runner thread of old: latency tasks too long to run inline on the loop.
The batch lane runs every batch task (never inline), at a lower OS priority (settings.batch_nice,
set by the thread on itself: Linux niceness is per thread), and its tasks can be suspended,
resumed or killed at their safe points (safe_points.py). Outcomes go to a deque the loop reads
when a byte on the wakeup pipe tells it to; so does the note that a task parked itself again at
the end of a slice. Threads are daemons holding no ZeroMQ socket, so the executor can always
shut down, even in the middle of a long task.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from squall.common import transport
from squall.common.protocol import TaskDescriptor
from squall.services.executor.instructions import RunTask
from squall.services.executor.reports import Failure
from squall.services.executor.safe_points import StopSignal, TaskSignal
from squall.services.executor.tasks import StateTables, TaskOutput

TaskKey = tuple[str, int, int]
Execute = Callable[[RunTask, StateTables, StopSignal], TaskOutput | Failure]
Done = deque[tuple[int, TaskDescriptor, TaskOutput | Failure]]  # (generation, task, outcome)

SUSPENSIONS_KEPT = 4096  # suspension latencies kept for the percentiles (the newest)

_Work = tuple[int, RunTask, StateTables, StopSignal]


class Stoppable(Protocol):
    def stop(self, now: float) -> None: ...


S = TypeVar("S", bound=Stoppable)


class LatestTask(Generic[S]):
    """What a lane (thread or process) knows of the task it was given last: its key and signal,
    through which the loop stops, suspends, resumes or kills it."""

    current: tuple[TaskKey, S] | None = None

    def signal(self, key: TaskKey) -> S | None:
        """The signal of the task submitted under `key`, if it is the lane's latest."""
        current = self.current
        return current[1] if current is not None and current[0] == key else None

    def abandon(self, now: float) -> None:
        """Whatever the lane runs is written off: stop it (a suspended task wakes up to raise)."""
        current = self.current
        if current is not None:
            current[1].stop(now)


class Lane(LatestTask[StopSignal]):
    def __init__(self, name: str, execute: Execute, done: Done, wakeup: transport.Wakeup, log: Any,
                 suspendable: bool = False, nice: int = 0) -> None:
        self.log = log
        self.suspendable = suspendable
        self.nice = nice
        self.suspension_seconds: deque[float] = deque(maxlen=SUSPENSIONS_KEPT)  # request -> parked, appended by the thread
        self.sliced: deque[tuple[int, TaskKey]] = deque()  # tasks parked again after a slice: (generation, key)
        self._execute = execute
        self._done = done
        self._wakeup = wakeup
        self._queue: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def submit(self, generation: int, run: RunTask, tables: StateTables) -> None:
        key = run.task.key
        signal = StopSignal() if not self.suspendable else \
            TaskSignal(self.suspension_seconds.append, lambda: self._slice_over(generation, key))
        self.current = (key, signal)
        self._queue.put((generation, run, tables, signal))

    def close(self) -> None:
        """Stop the thread after its current task (stopped: a parked one must not stay parked)."""
        self.abandon(time.monotonic())
        self._queue.put(None)
        self._thread.join(timeout=0.5)

    def _slice_over(self, generation: int, key: TaskKey) -> None:
        self.sliced.append((generation, key))
        self._wakeup.signal()

    def _lower_priority(self) -> None:
        """Linux niceness is per thread: this thread's, so other executors' latency tasks go first
        on a busy machine. Best effort (refused in some containers)."""
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.nice)
        except (OSError, AttributeError) as exc:
            self.log.info("batch_nice_refused", nice=self.nice, error=repr(exc))

    def _work(self) -> None:
        if self.nice:
            self._lower_priority()
        while True:
            item = self._queue.get()
            if item is None:
                return
            generation, run, tables, signal = item
            outcome = self._execute(run, tables, signal)
            task = run.task
            if signal.stopped and isinstance(outcome, Failure) and outcome.error_type == "Cancelled":
                self.log.info("task_stopped", job=task.job_id, stage=task.stage_id, partition=task.partition,
                              after=round(time.monotonic() - signal.requested_at, 4))
            self._done.append((generation, task, outcome))
            self._wakeup.signal()
