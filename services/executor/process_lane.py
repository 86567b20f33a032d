"""The batch lane in a process of its own: batch tasks run in a child process (batch_worker.py), so
that latency work in the executor never waits for the batch task's hold on the GIL.

Why a process: in one Python process every thread needs the GIL to run a line of Python. A batch
thread at a low OS priority (niced, so other executors' latency tasks go first) that the kernel
deschedules while it holds the GIL stops the executor's loop and its latency tasks with it, for as
long as the kernel keeps it off the CPU: on a busy machine, tens to hundreds of milliseconds (a
priority inversion no safe point can cut short, since the thread must run to reach one). A child
process has a GIL of its own; at batch_nice, and in Linux's SCHED_IDLE class (batch_sched_idle),
it takes only the CPU time latency work leaves: a task of any other class that wakes up preempts
it at once, where a niced task may first finish its slice (measured on the 2-core YSB-beside-word-
count benchmark: stream p99 1.4-1.6x alone in SCHED_IDLE, 2.0-2.3x at niceness 19 alone).

Suspension is the kernel's: SIGSTOP stops the child before it runs another instruction (it takes
effect as the signal is queued: a process that is not on a CPU processes it before it returns to
user code, one that is gets an interrupt), SIGCONT resumes it where it stood. Nothing is lost or
redone, and no lock is at stake: the child shares nothing with the executor but three pipes. Stop
and kill stay cooperative, at the task's next safe point: the request goes down the control pipe
and SIGUSR1 tells the child to read it (a stopped child is continued to do so).

This thread of the executor (the lane's) sends each task down the task pipe and waits, GIL
released, for its outcome; a child that dies (a user's os._exit, a crash, the OOM killer) fails
the task it was running with a clear error, and the next task gets a new child.
"""

from __future__ import annotations

import os
import pickle
import queue
import signal as signals
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, cast

from squall.common import transport
from squall.services.executor.instructions import RunTask
from squall.services.executor.lanes import SUSPENSIONS_KEPT, Done, LatestTask
from squall.services.executor.reports import Failure
from squall.services.executor.tasks import StateTables, TaskOutput

READY = b"ready"  # the batch process's first message: it handles SIGUSR1 now
CONTROL = struct.Struct("<QB")  # (task sequence number, what is asked): one control message
STOP, KILL = 1, 2

# A task the lane can answer without the child (a replay whose map output was checkpointed).
Shortcut = Callable[[RunTask], TaskOutput | None]


class ProcessSignal:
    """The loop's handle on the task the child runs (the same calls as safe_points.TaskSignal)."""

    def __init__(self, lane: ProcessLane, seq: int) -> None:
        self._lane = lane
        self.seq = seq
        self.pending = self.stopped = self.killed = False
        self.requested_at = 0.0
        self.parked = threading.Event()  # stopped by the kernel (set by suspend, cleared by resume)

    def stop(self, now: float) -> None:
        self.requested_at, self.stopped, self.pending = now, True, True
        self._lane.control(self.seq, STOP)

    def kill(self, now: float) -> None:
        self.requested_at, self.killed, self.pending = now, True, True
        self._lane.control(self.seq, KILL)

    def suspend(self, now: float) -> None:
        self.requested_at = now
        if self._lane.stop_child():
            self._lane.suspension_seconds.append(time.monotonic() - now)
            self.parked.set()

    def resume(self, now: float, slice_seconds: float = 0.0) -> None:
        """Go on (a slice ends on the loop's clock, with another suspend)."""
        self.parked.clear()
        self._lane.continue_child()


class ProcessLane(LatestTask[ProcessSignal]):
    def __init__(self, name: str, shortcut: Shortcut, done: Done, wakeup: transport.Wakeup, log: Any, nice: int = 0,
                 sched_idle: bool = False) -> None:
        self.log = log
        self.nice = nice
        self.sched_idle = sched_idle
        self.suspension_seconds: deque[float] = deque(maxlen=SUSPENSIONS_KEPT)
        self._shortcut = shortcut
        self._done = done
        self._wakeup = wakeup
        self._seq = 0
        self._closed = False
        self._stopped = False  # the loop stopped the child (SIGSTOP) and has not continued it
        self._ready = False  # the child handles SIGUSR1 (it said READY); before, the signal would kill it
        self._lock = threading.Lock()  # the child's pipes and pid: the loop signals, the thread restarts it
        self._child: subprocess.Popen[bytes] | None = None
        self._tasks: Connection | None = None
        self._results: Connection | None = None
        self._control = -1
        self._queue: queue.SimpleQueue[tuple[int, RunTask, ProcessSignal] | None] = queue.SimpleQueue()
        self._start_child()  # now, so that its start-up is not paid by the first batch task
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    # --- the loop's side ------------------------------------------------------------------------

    def submit(self, generation: int, run: RunTask, tables: StateTables) -> None:
        if tables:
            raise ValueError("a stateful task cannot run in the batch process")  # its table is the executor's
        if self._stopped:  # suspended for a task that was over already (its outcome on its way to the loop)
            self.continue_child()
        self._seq += 1
        signal = ProcessSignal(self, self._seq)
        self.current = (run.task.key, signal)
        self._queue.put((generation, run, signal))

    def close(self) -> None:
        """Stop the thread; the child is killed (whatever it runs is written off)."""
        self._queue.put(None)
        with self._lock:
            self._closed = True
            child = self._child
            self._child = None
        if child is not None:
            child.kill()
            child.wait(timeout=2)
        self._thread.join(timeout=0.5)

    @property
    def pid(self) -> int | None:
        """The batch process's pid (None once closed, or between a death and its successor)."""
        child = self._child
        return child.pid if child is not None else None

    def control(self, seq: int, what: int) -> None:
        """Ask the child to stop or kill task `seq` at its next safe point (kept if it has yet to
        start it), continuing it if it is stopped."""
        with self._lock:
            if self._child is None:
                return
            try:
                os.write(self._control, CONTROL.pack(seq, what))
            except OSError:  # the child is gone: the thread reports the task failed
                return
            if self._ready:  # else the child reads the request when it starts the task
                self._signal_child(signals.SIGUSR1)
            self._signal_child(signals.SIGCONT)
            self._stopped = False

    def stop_child(self) -> bool:
        """SIGSTOP (the loop's thread only, as continue_child: `_stopped` is the loop's)."""
        with self._lock:
            self._stopped = self._signal_child(signals.SIGSTOP)
            return self._stopped

    def continue_child(self) -> None:
        with self._lock:
            self._signal_child(signals.SIGCONT)
            self._stopped = False

    def _signal_child(self, signum: int) -> bool:
        if self._child is None:
            return False
        try:
            os.kill(self._child.pid, signum)
            return True
        except ProcessLookupError:
            return False

    # --- the lane's thread ----------------------------------------------------------------------

    def _start_child(self) -> None:
        task_read, task_write = os.pipe()
        result_read, result_write = os.pipe()
        control_read, control_write = os.pipe()
        fds = (task_read, result_write, control_read)
        child = subprocess.Popen(
            [sys.executable, "-m", "squall.services.executor.batch_worker", *map(str, fds), str(self.nice), str(int(self.sched_idle)),
             str(os.getpid())],
            pass_fds=fds, stdin=subprocess.DEVNULL)
        for fd in fds:
            os.close(fd)
        with self._lock:
            self._child = child
            self._ready = False
            self._tasks = Connection(task_write, readable=False)
            self._results = Connection(result_read, writable=False)
            self._control = control_write

    def _retire_child(self) -> int | None:
        """The child is gone or unusable: reap it and close its pipes; its exit code."""
        with self._lock:
            child, self._child = self._child, None
            for conn in (self._tasks, self._results):
                if conn is not None:
                    conn.close()
            if self._control >= 0:
                os.close(self._control)
            self._tasks = self._results = None
            self._control = -1
        if child is None:
            return None
        child.kill()
        try:
            return child.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return None

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            generation, run, signal = item
            outcome = self._run(run, signal)
            self._done.append((generation, run.task, outcome))
            self._wakeup.signal()

    def _run(self, run: RunTask, signal: ProcessSignal) -> TaskOutput | Failure:
        if signal.stopped:
            return Failure("task", "Cancelled", "the run was cancelled")
        shortcut = self._shortcut(run)
        if shortcut is not None:
            return shortcut
        if self._tasks is None:
            if self._closed:
                return Failure("task", "Cancelled", "the executor is shutting down")
            self._start_child()
        tasks, results = self._tasks, self._results
        assert tasks is not None and results is not None
        inputs = [bytes(cast(memoryview, getattr(frame, "buffer", frame))) for frame in run.inputs]  # zmq frames or bytes
        persisted = {dataset_id: bytes(cast(memoryview, getattr(frame, "buffer", frame))) for dataset_id, frame in run.persisted.items()}
        try:
            if not self._ready:
                if results.recv_bytes() != READY:
                    raise EOFError("the batch process did not start")
                with self._lock:  # a request written before this is read by the child at the task's start
                    self._ready = True
            tasks.send_bytes(pickle.dumps((signal.seq, run.task, run.spec, inputs, run.code, persisted), protocol=5))
            seq, outcome = pickle.loads(results.recv_bytes())
            assert seq == signal.seq, (seq, signal.seq)
            return outcome  # type: ignore[no-any-return]
        except (EOFError, OSError, pickle.UnpicklingError) as exc:
            code = self._retire_child()
            if self._closed:
                return Failure("task", "Cancelled", "the executor is shutting down")
            self.log.warning("batch_process_lost", exit_code=code, error=repr(exc), job=run.task.job_id,
                             stage=run.task.stage_id, partition=run.task.partition)
            self._start_child()
            return Failure("task", "BatchProcessLost",
                           f"the process running this batch task died (exit code {code}): a crash, os._exit() "
                           "or the out-of-memory killer")
