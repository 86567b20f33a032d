"""The runner thread: executes tasks one at a time, off the I/O loop.

The loop keeps heartbeats and block serving going while user code runs. Results come back
through a deque, and a byte on an inproc socket wakes the loop's poller.
"""

from __future__ import annotations

import queue
import threading
import traceback
from collections import deque
from typing import Any

import zmq

from common.plan import StageSpec
from common.protocol import TaskDescriptor
from common.serialization import SerializationError
from services.executor.state import Failure
from services.executor.tasks import CodeCache, TaskOutput, run_task

WAKE_ENDPOINT = "inproc://squall-runner-wake"


class Runner:
    def __init__(self, ctx: zmq.Context, log: Any) -> None:
        self.log = log
        self.code = CodeCache()
        self.done: deque[tuple[int, TaskDescriptor, TaskOutput | Failure]] = deque()
        self._queue: queue.SimpleQueue[tuple[int, TaskDescriptor, StageSpec, list[object]] | None] = queue.SimpleQueue()
        self.wake = ctx.socket(zmq.PAIR)
        self.wake.bind(WAKE_ENDPOINT)
        self._ctx = ctx
        self._thread = threading.Thread(target=self._work, name="squall-runner", daemon=True)
        self._thread.start()

    def submit(self, generation: int, task: TaskDescriptor, spec: StageSpec, inputs: list[object]) -> None:
        self._queue.put((generation, task, spec, inputs))

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=2.0)
        self.wake.close(0)

    def _work(self) -> None:
        signal_sock = self._ctx.socket(zmq.PAIR)
        signal_sock.connect(WAKE_ENDPOINT)
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    return
                generation, task, spec, inputs = item
                outcome = self._execute(task, spec, inputs)
                self.done.append((generation, task, outcome))
                signal_sock.send(b"", zmq.NOBLOCK)
        finally:
            signal_sock.close(0)

    def _execute(self, task: TaskDescriptor, spec: StageSpec, inputs: list[object]) -> TaskOutput | Failure:
        views = [frame.buffer if hasattr(frame, "buffer") else frame for frame in inputs]
        try:
            return run_task(spec, task.partition, views, self.code)  # type: ignore[arg-type]
        except SerializationError as exc:
            return Failure("code", type(exc).__name__, str(exc), traceback.format_exc())
        except BaseException as exc:  # user code: anything it raises is reported, not fatal
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            return Failure("task", type(exc).__name__, str(exc), traceback.format_exc())
