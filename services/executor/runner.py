"""The runner: executes tasks off the I/O loop, on two lanes (lanes.py), one task at a time each:
latency tasks on the runner thread, batch tasks on the batch thread, which can suspend them.

The loop keeps heartbeats and block serving going while user code runs. Results come back
through a deque, and a byte on a pipe wakes the loop's poller.

What a task reads travels with it: its inputs, the pickled code of its stage, and (stateful) the
one state table it updates. The state tables are kept here, but only the loop thread touches this
dict (restoring, dropping, snapshotting a table); the thread running a task touches only that
task's table, and the core hands a partition's next batch out only once the previous one is over
(whichever lane ran it), so no table is read by one thread while another changes it. The code of
the task being run is per thread (TaskCode): two lanes, and an inline task beside them, each load
their own task's functions and broadcast values.
"""

from __future__ import annotations

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
from squall.services.executor.lanes import Done, Lane
from squall.services.executor.process_lane import ProcessLane, ProcessSignal
from squall.services.executor.reports import Failure
from squall.services.executor.safe_points import TaskSignal
from squall.services.executor.tasks import (
    BlockMissing,
    CodeCache,
    StateTables,
    StopSignal,
    TaskCancelled,
    TaskOutput,
    TaskPreempted,
    run_task,
)

# Stage key -> pipeline key, remembered for this many stages: a stream's source stages change with
# every batch, so the memo must not grow with them.
PIPELINE_MEMO = 128


def execute(run: RunTask, views: list[bytes | memoryview], code: CodeCache, tables: StateTables,
            signal: StopSignal | None, persisted: Mapping[str, bytes | memoryview] | None = None) -> TaskOutput | Failure:
    """Run the task; what it raised becomes the Failure its report carries."""
    task = run.task
    try:
        return run_task(run.spec, task.partition, views, code, tables, task.batch, task.replay_only, signal, persisted)
    except BlockMissing as exc:
        return Failure("block", "BlockLost", str(exc))
    except TaskCancelled as exc:
        return Failure("task", "Cancelled", str(exc))
    except TaskPreempted as exc:
        return Failure("task", "Preempted", str(exc))
    except SerializationError as exc:
        return Failure("code", type(exc).__name__, str(exc), traceback.format_exc())
    except BaseException as exc:  # noqa: BLE001 - user code: even sys.exit() is a task failure
        return Failure("task", type(exc).__name__, str(exc) or repr(exc), traceback.format_exc())


def _view(frame: object) -> object:
    """A block's bytes: a ZeroMQ frame's buffer, or the bytes themselves."""
    return frame.buffer if hasattr(frame, "buffer") else frame


class TaskCode(Mapping[str, bytes]):
    """The pickled code of the task being run on the calling thread: set by the thread that runs
    it, just before it does (one task at a time per thread). User functions and broadcast values
    load from here."""

    def __init__(self) -> None:
        self._local = threading.local()

    @property
    def blobs(self) -> Mapping[str, bytes]:
        blobs: Mapping[str, bytes] = getattr(self._local, "blobs", {})
        return blobs

    @blobs.setter
    def blobs(self, blobs: Mapping[str, bytes]) -> None:
        self._local.blobs = blobs

    def __getitem__(self, key: str) -> bytes:
        return self.blobs[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.blobs)

    def __len__(self) -> int:
        return len(self.blobs)


class Runner:
    def __init__(self, log: Any, checkpoints: Checkpointer | None = None, batch_nice: int = 0, batch_lane: str = "thread",
                 batch_sched_idle: bool = False) -> None:
        self.log = log
        self.checkpoints = checkpoints
        self.task_code = TaskCode()
        self.code = CodeCache(self.task_code)
        self.states: StateTables = {}  # (state id, partition) -> table; the loop thread's (see above)
        self.done: Done = deque()
        self._durations: dict[str, float] = {}  # pipeline key -> recent task duration (seconds)
        self._pipelines: dict[str, str] = {}  # stage key -> pipeline key
        self.wakeup = transport.Wakeup()  # the loop polls wakeup.fd
        self.latency = Lane("squall-runner", self._execute, self.done, self.wakeup, log)
        # Batch tasks: in a process of their own (process_lane.py says why), except stateful ones,
        # whose tables live here; those, and all of them with batch_lane "thread", on a thread.
        self.batch = Lane("squall-batch", self._execute, self.done, self.wakeup, log, suspendable=True, nice=batch_nice)
        self.batch_process = ProcessLane("squall-batch-process", self._from_checkpoint, self.done, self.wakeup, log,
                                         nice=batch_nice, sched_idle=batch_sched_idle) if batch_lane == "process" else None

    def tracked(self) -> dict[str, int]:
        return {"done": len(self.done), "durations": len(self._durations), "pipelines": len(self._pipelines),
                "functions": len(self.code), "states": len(self.states), "sliced": len(self.batch.sliced)}

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
        """To its lane's thread: the batch lane for a batch task, the runner thread otherwise."""
        lane: Lane | ProcessLane = self.latency
        if run.task.priority == "batch":
            lane = self.batch_process if self.batch_process is not None and run.spec.state is None else self.batch
        lane.submit(generation, run, self._tables_for(run.spec, run.task.partition))

    def stop(self, key: tuple[str, int, int], now: float) -> bool:
        """Ask the task submitted under `key` to stop at its next safe point (between records);
        False if it is no lane's task. (Inline tasks are short: they are not stopped.)"""
        signal = self.latency.signal(key) or self.batch.signal(key) or self._process_signal(key)
        if signal is None:
            return False
        signal.stop(now)
        return True

    def batch_signal(self, key: tuple[str, int, int]) -> TaskSignal | ProcessSignal | None:
        """The batch task's signal (to suspend, resume or kill it), if `key` is a batch lane's."""
        signal = self.batch.signal(key)
        return signal if isinstance(signal, TaskSignal) else self._process_signal(key)

    def _process_signal(self, key: tuple[str, int, int]) -> ProcessSignal | None:
        return self.batch_process.signal(key) if self.batch_process is not None else None

    def suspension_seconds(self) -> list[float]:
        """The batch lanes' suspension latencies (the newest each kept)."""
        process = self.batch_process.suspension_seconds if self.batch_process is not None else ()
        return [*self.batch.suspension_seconds, *process]

    def abandon(self, now: float) -> None:
        """Everything run so far is written off: both lanes' tasks stop at their next safe point."""
        self.latency.abandon(now)
        self.batch.abandon(now)
        if self.batch_process is not None:
            self.batch_process.abandon(now)

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
        """Ask the lanes to stop after their current tasks (the batch lane's is stopped, so a
        suspended one does not stay parked); do not wait for user code to finish."""
        self.latency.close()
        self.batch.close()
        if self.batch_process is not None:
            self.batch_process.close()

    def _from_checkpoint(self, run: RunTask) -> TaskOutput | None:
        """A replayed map task's output, read from its first attempt's checkpoint, if it wrote one."""
        task = run.task
        if task.attempt and task.map_checkpoint and self.checkpoints is not None:
            blocks = self._checkpointed_output(task, run.spec)
            if blocks is not None:
                return TaskOutput(blocks=blocks, is_result=False)
        return None

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

    def _execute(self, run: RunTask, tables: StateTables, signal: StopSignal | None = None) -> TaskOutput | Failure:
        task, spec = run.task, run.spec
        self.task_code.blobs = run.code
        views = cast(list[bytes | memoryview], [_view(frame) for frame in run.inputs])
        persisted = {dataset_id: cast(bytes | memoryview, _view(frame)) for dataset_id, frame in run.persisted.items()}
        started = time.perf_counter()
        checkpointed = self._from_checkpoint(run)
        if checkpointed is not None:
            return checkpointed
        try:
            return execute(run, views, self.code, tables, signal, persisted)
        finally:
            elapsed = time.perf_counter() - started
            pipeline = self._pipeline(task.stage_key, spec)
            previous = self._durations.get(pipeline, elapsed)
            # The slower of this run and a decaying memory of earlier ones: one slow task is
            # enough to send a stage back to the runner thread.
            self._durations[pipeline] = max(elapsed, previous * 0.8)
