"""The runner thread: executes tasks one at a time, off the I/O loop.

The loop keeps heartbeats and block serving going while user code runs. Results come back
through a deque, and a byte on a pipe wakes the loop's poller. The thread owns no ZeroMQ socket
and is a daemon, so the executor can always shut down, even in the middle of a long task.

What a task reads travels with it: its inputs, the pickled code of its stage, and (stateful) the
one state table it updates. The state tables are kept here, but only the loop thread touches this
dict (restoring, dropping, snapshotting a table); the thread running a task touches only that
task's table, and the core hands a partition's next batch out only once the previous one is over,
so no table is read by one thread while another changes it.
"""

from __future__ import annotations

import queue
import threading
import time
import traceback
from collections import deque
from collections.abc import Iterator, Mapping
from typing import Any, cast

from squall.common import transport
from squall.common.plan import StageSpec
from squall.common.protocol import TaskDescriptor
from squall.common.serialization import SerializationError
from squall.services.executor.checkpoints import Checkpointer
from squall.services.executor.instructions import RunTask
from squall.services.executor.reports import Failure
from squall.services.executor.tasks import CodeCache, StateTables, StopSignal, TaskCancelled, TaskOutput, run_task

# Stage key -> pipeline key, remembered for this many stages: a stream's source stages change with
# every batch, so the memo must not grow with them.
PIPELINE_MEMO = 128


class TaskCode(Mapping[str, bytes]):
    """The pickled code of the task being run: set by the thread that runs it, just before it
    does (one task runs at a time). User functions and broadcast values load from here."""

    def __init__(self) -> None:
        self.blobs: Mapping[str, bytes] = {}

    def __getitem__(self, key: str) -> bytes:
        return self.blobs[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.blobs)

    def __len__(self) -> int:
        return len(self.blobs)


_Work = tuple[int, RunTask, StateTables, StopSignal]


class Runner:
    def __init__(self, log: Any, checkpoints: Checkpointer | None = None) -> None:
        self.log = log
        self.checkpoints = checkpoints
        self.task_code = TaskCode()
        self.code = CodeCache(self.task_code)
        self.states: StateTables = {}  # (state id, partition) -> table; the loop thread's (see above)
        self.done: deque[tuple[int, TaskDescriptor, TaskOutput | Failure]] = deque()
        self._queue: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._current: tuple[tuple[str, int, int], StopSignal] | None = None  # the task last submitted, and its stop signal
        self._durations: dict[str, float] = {}  # pipeline key -> recent task duration (seconds)
        self._pipelines: dict[str, str] = {}  # stage key -> pipeline key
        self.wakeup = transport.Wakeup()  # the loop polls wakeup.fd
        self._thread = threading.Thread(target=self._work, name="squall-runner", daemon=True)
        self._thread.start()

    def tracked(self) -> dict[str, int]:
        return {"done": len(self.done), "durations": len(self._durations), "pipelines": len(self._pipelines),
                "functions": len(self.code), "states": len(self.states)}

    # --- state tables (loop thread) -------------------------------------------------------------

    def _tables_for(self, spec: StageSpec, partition: int) -> StateTables:
        """The one table a stateful task updates (created empty at its partition's first batch)."""
        if spec.state is None:
            return {}
        key = (spec.state.state_id, partition)
        table = self.states.get(key)
        if table is None:
            table = self.states[key] = {}
        return {key: table}

    def restore_state(self, key: tuple[str, int], table: dict[Any, Any]) -> None:
        """Replace the table (a task still running on the old one keeps it; its batch is written off)."""
        self.states[key] = table

    def drop_states(self, state_ids: list[str], partition: int | None = None) -> None:
        """The tables of these states go: all their partitions', or only `partition`'s."""
        for key in [k for k in self.states if k[0] in state_ids and partition in (None, k[1])]:
            del self.states[key]

    # --- running --------------------------------------------------------------------------------

    def submit(self, generation: int, run: RunTask) -> None:
        stop = StopSignal()
        self._current = (run.task.key, stop)
        self._queue.put((generation, run, self._tables_for(run.spec, run.task.partition), stop))

    def stop(self, key: tuple[str, int, int], now: float) -> bool:
        """Ask the task submitted under `key` to stop at its next safe point (between records);
        False if it is not the runner's task. (Inline tasks are short: they are not stopped.)"""
        current = self._current
        if current is None or current[0] != key:
            return False
        current[1].requested_at = now
        current[1].stopped = True
        return True

    def run_inline(self, run: RunTask) -> TaskOutput | Failure:
        """Execute on the calling thread (the loop), timing the stage like the runner thread does."""
        return self._execute(run, self._tables_for(run.spec, run.task.partition))

    def expected_seconds(self, stage_key: str, spec: StageSpec) -> float:
        """How long tasks of this stage's pipeline took recently (inf if never seen)."""
        return self._durations.get(self._pipeline(stage_key, spec), float("inf"))

    def _pipeline(self, stage_key: str, spec: StageSpec) -> str:
        key = self._pipelines.get(stage_key)
        if key is None:
            if len(self._pipelines) >= PIPELINE_MEMO:  # a memo of a pure function: clearing it is always right
                self._pipelines.clear()
            key = self._pipelines[stage_key] = spec.pipeline_key()
        return key

    def close(self) -> None:
        """Ask the thread to stop after its current task; do not wait for user code to finish."""
        self._queue.put(None)
        self._thread.join(timeout=0.5)

    def _checkpointed_output(self, task: TaskDescriptor, spec: StageSpec) -> list[bytes] | None:
        """A replayed map task's output as its first attempt checkpointed it, if it did."""
        try:
            blocks = self.checkpoints.read_map_output(task.map_checkpoint)  # type: ignore[union-attr]
        except OSError as exc:
            self.log.warning("map_checkpoint_unreadable", key=task.map_checkpoint, error=repr(exc))
            return None
        if blocks is None or len(blocks) != getattr(spec.output, "partitions", -1):
            return None
        return blocks

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            generation, run, tables, stop = item
            outcome = self._execute(run, tables, stop)
            task = run.task
            if stop.stopped and isinstance(outcome, Failure) and outcome.error_type == "Cancelled":
                self.log.info("task_stopped", job=task.job_id, stage=task.stage_id, partition=task.partition,
                              after=round(time.monotonic() - stop.requested_at, 4))
            self.done.append((generation, task, outcome))
            self.wakeup.signal()

    def _execute(self, run: RunTask, tables: StateTables, stop: StopSignal | None = None) -> TaskOutput | Failure:
        task, spec = run.task, run.spec
        self.task_code.blobs = run.code
        views = cast(list[bytes | memoryview], [frame.buffer if hasattr(frame, "buffer") else frame for frame in run.inputs])
        started = time.perf_counter()
        if task.attempt and task.map_checkpoint and self.checkpoints is not None:
            blocks = self._checkpointed_output(task, spec)
            if blocks is not None:
                return TaskOutput(blocks=blocks, is_result=False)
        try:
            return run_task(spec, task.partition, views, self.code, tables, task.batch, task.replay_only, stop)
        except TaskCancelled as exc:
            return Failure("task", "Cancelled", str(exc))
        except SerializationError as exc:
            return Failure("code", type(exc).__name__, str(exc), traceback.format_exc())
        except BaseException as exc:  # noqa: BLE001 - user code: even sys.exit() is a task failure
            return Failure("task", type(exc).__name__, str(exc) or repr(exc), traceback.format_exc())
        finally:
            elapsed = time.perf_counter() - started
            pipeline = self._pipeline(task.stage_key, spec)
            previous = self._durations.get(pipeline, elapsed)
            # The slower of this run and a decaying memory of earlier ones: one slow task is
            # enough to send a stage back to the runner thread.
            self._durations[pipeline] = max(elapsed, previous * 0.8)
