"""The batch process: runs an executor's batch tasks one at a time, off its GIL (process_lane.py
says why and how it is suspended). Started by the executor with three pipe ends:

    python -m squall.services.executor.batch_worker TASKS RESULTS CONTROL NICE SCHED_IDLE PARENT_PID

It reads (seq, task, spec, inputs, code, persisted blocks) from TASKS and writes (seq, outcome) to
RESULTS, outcome a TaskOutput (with the persisted blocks the task computed) or a Failure exactly as
the executor's own lanes make them. Stop and kill requests are
(seq, what) on CONTROL, read when SIGUSR1 says one is there; the task raises at its next safe point.
It says READY first, once SIGUSR1 is handled; until then the executor only writes requests, which
it reads when it starts a task. It dies with the executor (PR_SET_PDEATHSIG), and ends when TASKS closes.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import pickle
import signal as signals
import sys
from multiprocessing.connection import Connection
from types import FrameType

from squall.common import broadcast_store
from squall.services.executor.instructions import RunTask
from squall.services.executor.process_lane import CONTROL, KILL, READY
from squall.services.executor.runner import TaskCode, execute
from squall.services.executor.safe_points import StopSignal, TaskCancelled, TaskPreempted
from squall.services.executor.tasks import CodeCache

PR_SET_PDEATHSIG = 1  # prctl(2)
# Set in the batch process to the executor's pid: user code that wants to know which executor runs
# it (os.getpid() there is the batch process's).
EXECUTOR_PID = "SQUALL_EXECUTOR_PID"
REQUESTS_KEPT = 64  # stop/kill requests kept for tasks not started yet (newest)


class WorkerSignal(StopSignal):
    """A task's signal in the batch process: set from the SIGUSR1 handler, so no lock (the handler
    runs between two bytecodes of this very thread, and only ever sets flags)."""

    __slots__ = ("killed",)

    def __init__(self) -> None:
        super().__init__()
        self.killed = False

    def ask(self, what: int) -> None:
        if what == KILL:
            self.killed = True
        else:
            self.stopped = True
        self.pending = True

    def safe_point(self) -> None:
        if self.stopped:
            raise TaskCancelled("the run was cancelled")
        if self.killed:
            raise TaskPreempted("the task was preempted by latency work")


class Worker:
    def __init__(self, control_fd: int) -> None:
        self.control_fd = control_fd
        self.requests: dict[int, int] = {}  # seq -> STOP or KILL, for tasks not started yet
        self.seq = -1  # the task running, -1 between tasks
        self.signal = WorkerSignal()
        self.task_code = TaskCode()
        self.code = CodeCache(self.task_code)
        broadcast_store.install(self.task_code)

    def on_control(self, signum: int, frame: FrameType | None) -> None:
        """SIGUSR1: read every request in the control pipe; the running task's is asked of it."""
        data = b""
        while True:
            try:
                chunk = os.read(self.control_fd, 4096)
            except BlockingIOError:
                break
            if not chunk:
                break
            data += chunk
        for offset in range(0, len(data) - len(data) % CONTROL.size, CONTROL.size):
            seq, what = CONTROL.unpack_from(data, offset)
            if seq == self.seq:
                self.signal.ask(what)
            elif seq > self.seq:
                self.requests[seq] = what
        for old in sorted(self.requests)[:-REQUESTS_KEPT]:
            del self.requests[old]

    def run(self, payload: bytes) -> bytes:
        seq, task, spec, inputs, code, persisted = pickle.loads(payload)
        self.on_control(0, None)  # requests written before the executor knew this process could hear them
        self.signal = WorkerSignal()
        what = self.requests.pop(seq, None)
        if what is not None:
            self.signal.ask(what)
        self.seq = seq
        self.task_code.blobs = code
        try:
            outcome = execute(RunTask(task, spec, inputs, code, persisted), inputs, self.code, {}, self.signal, persisted)
        finally:
            self.seq = -1
        return pickle.dumps((seq, outcome), protocol=5)


def _die_with(parent_pid: int) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signals.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the closed task pipe ends it, after its task
        pass
    if os.getppid() != parent_pid:  # the executor died before the call above
        os._exit(0)


def main(argv: list[str]) -> None:
    task_fd, result_fd, control_fd, nice, sched_idle, parent_pid = map(int, argv)
    _die_with(parent_pid)
    os.environ[EXECUTOR_PID] = str(parent_pid)
    if nice:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, nice)
        except OSError:
            pass  # refused in some containers: the executor logs batch_nice_refused for its own lanes
    if sched_idle and hasattr(os, "SCHED_IDLE"):
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # lowering one's own class needs no privilege
        except OSError:
            pass
    fcntl.fcntl(control_fd, fcntl.F_SETFL, fcntl.fcntl(control_fd, fcntl.F_GETFL) | os.O_NONBLOCK)
    worker = Worker(control_fd)
    signals.signal(signals.SIGUSR1, worker.on_control)
    signals.signal(signals.SIGINT, signals.SIG_IGN)  # a Ctrl-C in the terminal is the executor's to handle
    tasks, results = Connection(task_fd, writable=False), Connection(result_fd, readable=False)
    results.send_bytes(READY)  # from now on SIGUSR1 is handled (its default would end this process)
    while True:
        try:
            payload = tasks.recv_bytes()
        except (EOFError, OSError):
            return
        results.send_bytes(worker.run(payload))


if __name__ == "__main__":
    main(sys.argv[1:])
