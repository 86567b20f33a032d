"""The executor's batch process (process_lane.py, batch_worker.py), on the real execution path
(Runner, a real child process and its pipes, no sockets): a batch task runs there with its code
and broadcast values; suspension stops the process at once (the kernel's SIGSTOP) and the task
resumes with the output of an uninterrupted run; stop and kill end it at a safe point, suspended
or not; a user's exception is a task failure with its traceback; a process that dies fails its
task clearly and the next task gets a new one; the process runs at batch_nice and dies with the
lane."""

from __future__ import annotations

import functools
import os
import pickle
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from squall.common import broadcast_store
from squall.common.plan import Branch, PersistedInput, RangeSource, ResultWrite, StageSpec, code_key
from squall.common.protocol import TaskDescriptor
from squall.common.serialization import dumps_block, dumps_function, loads_block
from squall.services.executor.instructions import RunTask
from squall.services.executor.process_lane import ProcessSignal
from squall.services.executor.reports import Failure
from squall.services.executor.runner import Runner
from squall.services.executor.tasks import TaskOutput

from squall import ops
from tests.cluster.helpers import PROGRESS, read_progress, write_progress
from tests.polling import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(60)]

BROADCAST = "broadcast-of-the-batch-process"
SEEN = [0]  # records counted, in the process that runs the task


def counting(x: int) -> int:
    SEEN[0] += 1
    if SEEN[0] % 100 == 0:
        write_progress(SEEN[0])
    return x * broadcast_store.value(BROADCAST)


def other(x: int) -> int:
    return -x


def whoami(x: int) -> tuple[int, int]:
    return os.getpid(), int(os.environ["SQUALL_EXECUTOR_PID"])


def dies(x: int) -> int:
    if x == 5:
        os._exit(3)
    return x


def raises(x: int) -> int:
    if x == 7:
        raise ValueError(f"bad record {x}")
    return x


def run(job_id: str, fn: Any, records: int) -> RunTask:
    pickled = dumps_function(functools.partial(ops.map_op, fn))
    spec = StageSpec(partitions=1, input=RangeSource(start=0, stop=records, step=1, partitions=1), ops=[code_key(pickled)],
                     output=ResultWrite())
    task = TaskDescriptor(job_id=job_id, stage_id=0, partition=0, stage_key=spec.key(), priority="batch")
    return RunTask(task, spec, [], {code_key(pickled): pickled, BROADCAST: pickle.dumps(3)})


@pytest.fixture()
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runner]:
    monkeypatch.setenv(PROGRESS, str(tmp_path / "progress"))
    r = Runner(structlog.get_logger(), batch_nice=10, batch_lane="process")
    yield r
    r.close()


def process_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ", 1)[1][0]


def signal_of(runner: Runner, job_id: str) -> ProcessSignal:
    signal = runner.batch_signal((job_id, 0, 0))
    assert isinstance(signal, ProcessSignal)
    return signal


def outcome(runner: Runner) -> TaskOutput | Failure:
    _, _, out = wait_until(lambda: runner.done and runner.done.popleft(), timeout=30, what="the batch task's outcome")
    return out


def records(out: TaskOutput | Failure) -> list[Any]:
    assert isinstance(out, TaskOutput), out
    return loads_block(out.blocks[0])


def pid_of(runner: Runner) -> int:
    assert runner.batch_process is not None and runner.batch_process.pid is not None
    return runner.batch_process.pid


def test_a_batch_task_runs_in_the_batch_process_which_knows_its_executor(runner: Runner) -> None:
    runner.submit(0, run("b", whoami, 3))
    assert records(outcome(runner)) == [(pid_of(runner), os.getpid())] * 3
    assert pid_of(runner) != os.getpid()


def test_persisted_blocks_cross_the_pipe_both_ways(runner: Runner) -> None:
    """The block a task reads goes down to the batch process with it; the block it computes comes
    back with its output."""
    pickled = dumps_function(functools.partial(ops.map_op, other))
    inner = PersistedInput("inner", 1)  # read as a block: no lineage here
    outer = PersistedInput("outer", 1, Branch(input=inner, ops=[code_key(pickled)], partitions=1))  # computed from it
    spec = StageSpec(partitions=1, input=outer, ops=[], output=ResultWrite())
    task = TaskDescriptor(job_id="b", stage_id=0, partition=0, stage_key=spec.key(), priority="batch", persisted={"inner": "tcp://x:1"})
    runner.submit(0, RunTask(task, spec, [], {code_key(pickled): pickled}, {"inner": dumps_block([1, 2, 3])}))
    out = outcome(runner)
    assert records(out) == [-1, -2, -3]
    assert isinstance(out, TaskOutput) and [(d, p, n, loads_block(b)) for d, p, n, b in out.persisted] == [("outer", 0, 1, [-1, -2, -3])]


def test_a_suspended_task_makes_no_progress_and_resumes_with_the_output_of_an_uninterrupted_run(runner: Runner) -> None:
    total = 3_000_000
    runner.submit(0, run("b", counting, total))
    wait_until(lambda: read_progress() > 1000, timeout=20, what="the batch task to run")
    signal = signal_of(runner, "b")
    signal.suspend(time.monotonic())
    assert signal.parked.is_set()
    pid = pid_of(runner)
    wait_until(lambda: process_state(pid) == "T", timeout=5, what="the batch process stopped")
    stopped_at = read_progress()
    for _ in range(5):  # stopped: not one record more, however long
        time.sleep(0.02)
        assert read_progress() == stopped_at and process_state(pid) == "T"
    signal.resume(time.monotonic())
    assert not signal.parked.is_set()
    assert records(outcome(runner)) == [3 * x for x in range(total)]
    assert read_progress() == total and stopped_at < total
    latencies = runner.suspension_seconds()
    assert len(latencies) == 1 and latencies[0] < 0.001


def test_stop_and_kill_end_a_task_at_its_next_safe_point_suspended_or_not(runner: Runner) -> None:
    runner.submit(0, run("b", counting, 10**9))
    wait_until(lambda: read_progress() > 1000, timeout=20, what="the batch task to run")
    signal_of(runner, "b").suspend(time.monotonic())
    assert runner.stop(("b", 0, 0), time.monotonic())  # stopped by the kernel: continued to raise
    out = outcome(runner)
    assert isinstance(out, Failure) and out.error_type == "Cancelled", out

    runner.submit(1, run("k", counting, 10**9))
    wait_until(lambda: read_progress() > 2000, timeout=20, what="the next batch task to run")
    signal_of(runner, "k").kill(time.monotonic())
    out = outcome(runner)
    assert isinstance(out, Failure) and out.error_type == "Preempted", out

    runner.submit(2, run("n", counting, 10))  # the same process takes the next task
    assert records(outcome(runner)) == [3 * x for x in range(10)]


def test_a_task_stopped_while_its_batch_process_starts_is_cancelled_and_the_process_lives(runner: Runner) -> None:
    first = pid_of(runner)
    runner.submit(0, run("b", counting, 10**9))
    lane = runner.batch_process
    assert lane is not None
    wait_until(lambda: lane._queue.empty(), timeout=5, what="the lane to take the task")
    assert runner.stop(("b", 0, 0), time.monotonic())  # the process may still be importing
    out = outcome(runner)
    assert isinstance(out, Failure) and out.error_type == "Cancelled", out
    assert pid_of(runner) == first
    runner.submit(1, run("n", counting, 10))
    assert records(outcome(runner)) == [3 * x for x in range(10)]


def test_a_task_suspended_just_as_it_ended_leaves_the_process_free_for_the_next(runner: Runner) -> None:
    runner.submit(0, run("a", counting, 10))
    signal = signal_of(runner, "a")
    assert records(outcome(runner)) == [3 * x for x in range(10)]
    signal.suspend(time.monotonic())  # the loop had yet to hear that the task was over
    runner.submit(1, run("b", counting, 10))
    assert records(outcome(runner)) == [3 * x for x in range(10)]


def test_a_user_exception_in_the_batch_process_is_a_task_failure_with_its_traceback(runner: Runner) -> None:
    runner.submit(0, run("b", raises, 10))
    out = outcome(runner)
    assert isinstance(out, Failure) and out.kind == "task" and out.error_type == "ValueError", out
    assert "bad record 7" in out.message and "raises" in out.traceback


def test_a_batch_process_that_dies_fails_its_task_clearly_and_the_next_task_gets_a_new_one(runner: Runner) -> None:
    first = pid_of(runner)
    runner.submit(0, run("b", dies, 10))
    out = outcome(runner)
    assert isinstance(out, Failure) and out.error_type == "BatchProcessLost", out
    assert "exit code 3" in out.message
    runner.submit(1, run("n", whoami, 1))
    assert records(outcome(runner)) == [(pid_of(runner), os.getpid())]
    assert pid_of(runner) != first


def test_the_batch_process_runs_at_batch_nice_and_goes_with_its_lane_even_when_stopped(runner: Runner) -> None:
    pid = pid_of(runner)
    wait_until(lambda: os.getpriority(os.PRIO_PROCESS, pid) == 10, timeout=10, what="the batch process's niceness")
    runner.submit(0, run("b", counting, 10**9))
    wait_until(lambda: read_progress() > 1000, timeout=20, what="the batch task to run")
    signal_of(runner, "b").suspend(time.monotonic())
    runner.close()
    assert runner.batch_process is not None and runner.batch_process.pid is None
    wait_until(lambda: not os.path.exists(f"/proc/{pid}"), timeout=5, what="the batch process gone")


def test_the_batch_process_runs_in_the_idle_scheduling_class_when_asked(tmp_path: Path) -> None:
    idle = Runner(structlog.get_logger(), batch_nice=19, batch_lane="process", batch_sched_idle=True)
    plain = Runner(structlog.get_logger(), batch_nice=19, batch_lane="process")
    try:
        wait_until(lambda: os.sched_getscheduler(pid_of(idle)) == os.SCHED_IDLE, timeout=10, what="SCHED_IDLE")
        wait_until(lambda: os.getpriority(os.PRIO_PROCESS, pid_of(plain)) == 19, timeout=10, what="the plain one's niceness")
        assert os.sched_getscheduler(pid_of(plain)) == os.SCHED_OTHER
    finally:
        idle.close()
        plain.close()
