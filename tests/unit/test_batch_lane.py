"""The batch lane on the real execution path (Runner, run_task, no sockets): a batch task parks at
a safe point when asked (even inside an operator that reads its whole input first), resumes where
it stood with the same output as an uninterrupted run, loads its own code and broadcast values
while other tasks run meanwhile, dies or stops when told (never left parked), and runs its
slices; suspension takes well under a millisecond for a pure-Python map."""

from __future__ import annotations

import functools
import os
import pickle
import statistics
import time
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from squall.common import broadcast_store
from squall.common.plan import RangeSource, ResultWrite, StageSpec, code_key
from squall.common.protocol import TaskDescriptor
from squall.common.serialization import dumps_function, loads_block
from squall.services.executor.instructions import RunTask
from squall.services.executor.reports import Failure
from squall.services.executor.runner import Runner
from squall.services.executor.safe_points import TaskSignal
from squall.services.executor.tasks import TaskOutput

from squall import ops
from tests.polling import wait_until

RECORDS = 20_000
SUSPEND_AT = [1000]  # the record at which a task asks for its own suspension (-1: never)
SEEN = [0]  # records the suspending function was called on
BROADCAST = "broadcast-of-the-batch-task"
BROADCAST_BLOB = pickle.dumps(3)
RUNNERS: list[Runner] = []  # module globals: the pickled functions below refer to these very objects


def suspending(x: int) -> int:
    """Asks the lane to suspend its own task at SUSPEND_AT (as the loop would), then goes on: the
    next safe point parks it. Past that record it reads a broadcast value, as user code does."""
    if x == SUSPEND_AT[0]:
        signal = RUNNERS[0].batch_signal(("b", 0, 0))
        assert signal is not None
        signal.suspend(time.monotonic())
    SEEN[0] += 1
    return x * (broadcast_store.value(BROADCAST) if x > SUSPEND_AT[0] >= 0 else 3)


def sort_all(records: Iterator[Any]) -> list[Any]:  # reads its whole input before it emits
    return sorted(records, reverse=True)


def other(x: int) -> int:
    return -x


def blob(fn: Any) -> tuple[str, bytes]:
    pickled = dumps_function(fn)
    return code_key(pickled), pickled


MAP = blob(functools.partial(ops.map_op, suspending))
SORT = blob(functools.partial(ops.partition_op, sort_all))
OTHER = blob(functools.partial(ops.map_op, other))


def run(job_id: str, priority: str, *steps: tuple[str, bytes], records: int = RECORDS, broadcast: bool = True) -> RunTask:
    spec = StageSpec(partitions=1, input=RangeSource(start=0, stop=records, step=1, partitions=1), ops=[k for k, _ in steps],
                     output=ResultWrite())
    task = TaskDescriptor(job_id=job_id, stage_id=0, partition=0, stage_key=spec.key(), priority=priority)  # type: ignore[arg-type]
    code = dict(steps) | ({BROADCAST: BROADCAST_BLOB} if broadcast else {})
    return RunTask(task, spec, [], code)


@pytest.fixture()
def runner() -> Iterator[Runner]:
    r = Runner(structlog.get_logger(), batch_nice=10)
    broadcast_store.install(r.task_code)
    RUNNERS[:] = [r]
    SUSPEND_AT[0], SEEN[0] = 1000, 0
    yield r
    r.close()
    RUNNERS.clear()


def batch_signal(runner: Runner) -> TaskSignal:
    signal = runner.batch_signal(("b", 0, 0))
    assert signal is not None
    return signal


def outcome(runner: Runner) -> TaskOutput | Failure:
    _, _, out = wait_until(lambda: runner.done and runner.done.popleft(), timeout=20, what="the batch task's outcome")
    return out


def records(out: TaskOutput | Failure) -> list[int]:
    assert isinstance(out, TaskOutput), out
    return loads_block(out.blocks[0])


@pytest.mark.parametrize("steps", [[MAP], [MAP, SORT]], ids=["map", "map-then-sorted"])
def test_a_suspended_batch_task_resumes_where_it_stood_with_the_output_of_an_uninterrupted_run(runner: Runner, steps):
    runner.submit(0, run("b", "batch", *steps))
    signal = batch_signal(runner)
    assert signal.parked.wait(10), "the task never parked"
    parked_at = SEEN[0]
    assert parked_at == SUSPEND_AT[0] + 1  # the first safe point after the request (inside sorted() too)
    # A latency task runs meanwhile, inline, with code of its own (and no broadcast).
    assert records(runner.run_inline(run("l", "latency", OTHER, records=5, broadcast=False))) == [0, -1, -2, -3, -4]
    assert SEEN[0] == parked_at and not runner.done  # parked: it did nothing meanwhile
    signal.resume(time.monotonic())
    suspended = records(outcome(runner))
    SUSPEND_AT[0] = -1
    uninterrupted = records(runner.run_inline(run("b2", "latency", *steps)))
    assert suspended == uninterrupted and len(suspended) == RECORDS
    assert len(runner.batch.suspension_seconds) == 1


def test_suspension_of_a_pure_python_map_takes_under_a_millisecond(runner: Runner):
    SUSPEND_AT[0] = -1
    runner.submit(0, run("b", "batch", MAP, records=50_000_000))
    signal = batch_signal(runner)
    latencies = []
    for _ in range(30):
        seen = SEEN[0]
        wait_until(lambda seen=seen: SEEN[0] > seen + 100, timeout=10, what="the task to go on")
        asked = time.monotonic()
        signal.suspend(asked)  # as the server carries out SuspendTask
        assert signal.parked.wait(5)
        latencies.append(time.monotonic() - asked)
        signal.resume(time.monotonic())
    runner.stop(("b", 0, 0), time.monotonic())
    assert isinstance(outcome(runner), Failure)
    print(f"suspension latency ms: p50 {statistics.median(latencies) * 1000:.3f} max {max(latencies) * 1000:.3f}")
    assert statistics.median(latencies) < 0.001
    assert len(runner.batch.suspension_seconds) == 30 and statistics.median(runner.batch.suspension_seconds) < 0.001


def test_a_killed_batch_task_returns_preempted_and_the_lane_takes_the_next_one(runner: Runner):
    runner.submit(0, run("b", "batch", MAP))
    assert batch_signal(runner).parked.wait(10)
    batch_signal(runner).kill(time.monotonic())  # parked or not, it raises at its safe point
    out = outcome(runner)
    assert isinstance(out, Failure) and out.error_type == "Preempted"
    SUSPEND_AT[0] = -1
    runner.submit(1, run("b", "batch", MAP, records=10))  # the same task again, from its start
    assert records(outcome(runner)) == [3 * x for x in range(10)]


def test_a_parked_task_stopped_raises_cancelled_and_close_leaves_no_thread_parked(runner: Runner):
    runner.submit(0, run("b", "batch", MAP))
    assert batch_signal(runner).parked.wait(10)
    assert runner.stop(("b", 0, 0), time.monotonic())
    out = outcome(runner)
    assert isinstance(out, Failure) and out.error_type == "Cancelled"
    SEEN[0] = 0
    runner.submit(1, run("b", "batch", MAP))
    assert batch_signal(runner).parked.wait(10)
    thread = runner.batch._thread
    runner.close()  # the executor closing with a task parked
    assert not thread.is_alive()


def test_a_slice_runs_then_the_task_parks_itself_again_and_tells_the_loop(runner: Runner):
    SUSPEND_AT[0] = 10
    runner.submit(5, run("b", "batch", MAP, records=50_000_000))
    signal = batch_signal(runner)
    assert signal.parked.wait(10)
    before, started = SEEN[0], time.monotonic()
    signal.resume(started, 0.002)
    wait_until(lambda: runner.batch.sliced, timeout=10, what="the slice's end")
    assert signal.parked.is_set() and time.monotonic() - started >= 0.002
    assert list(runner.batch.sliced) == [(5, ("b", 0, 0))] and SEEN[0] >= before  # how far: as the OS lets it (see below)
    assert len(runner.batch.suspension_seconds) == 1  # a slice's end is no suspension request
    runner.stop(("b", 0, 0), time.monotonic())
    assert isinstance(outcome(runner), Failure)


def test_the_batch_thread_runs_at_batch_nice(runner: Runner):
    native_id = runner.batch._thread.native_id
    assert native_id is not None
    wait_until(lambda: os.getpriority(os.PRIO_PROCESS, native_id) == 10, timeout=5, what="the batch thread's niceness")
    assert os.getpriority(os.PRIO_PROCESS, runner.latency._thread.native_id or 0) == os.getpriority(os.PRIO_PROCESS, 0)


def test_a_slice_the_thread_starts_too_late_still_moves_the_task_on(runner: Runner):
    SUSPEND_AT[0] = 10
    runner.submit(5, run("b", "batch", MAP, records=50_000_000))
    signal = batch_signal(runner)
    assert signal.parked.wait(10)
    before = SEEN[0]
    for slices in (1, 2):  # parked on the output side of record 10: the first slice hands it on, the second maps 11
        signal.resume(time.monotonic() - 1.0, 0.001)  # as if the OS ran the thread only after the slice's end
        wait_until(lambda slices=slices: len(runner.batch.sliced) == slices, timeout=10, what="the slice's end")
    assert SEEN[0] == before + 1
    runner.stop(("b", 0, 0), time.monotonic())
    assert isinstance(outcome(runner), Failure)
