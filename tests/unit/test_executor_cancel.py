"""Cancelled jobs on an executor: ExecutorState.cancel_jobs drops their queued and held tasks, blocks
and unregistered outputs and asks the runner to stop the running task (StopTask), whose output is
then dropped; tasks.run_task stops between records once its StopSignal is set."""

from __future__ import annotations

import functools

import pytest
from squall.common.plan import RangeSource, ResultWrite, StageSpec, code_key
from squall.common.protocol import (
    BlocksReady,
    GroupDone,
    LaunchTasks,
    RegisterMapOutputs,
    TaskDescriptor,
    TaskFailed,
    TaskFinished,
)
from squall.common.serialization import dumps_function
from squall.services.executor.instructions import StopTask, ToPeer, ToScheduler, ToShuffleMeta
from squall.services.executor.reports import Failure
from squall.services.executor.task_states import TaskState
from squall.services.executor.tasks import CodeCache, StopSignal, TaskCancelled, run_task

from squall import ops
from tests.unit.test_executor_groups import MAP_SPEC, executor, launch, map_out, mapper, push, reducer, runs, to_scheduler

CANCELLED = Failure("task", "Cancelled", "the run was cancelled")


def stops(actions) -> list[StopTask]:
    return [a for a in actions if isinstance(a, StopTask)]


# --- the state machine ---------------------------------------------------------------------------


def test_the_running_task_is_asked_to_stop_and_queued_ones_of_the_job_are_dropped():
    ex = executor()
    m0, m1, r0 = mapper(0), mapper(1), reducer(0)
    other = mapper(0, job_id="k", batch=1)
    assert runs(launch(ex, r0, m0, m1, group_id=1)) == [m0]
    launch(ex, other, group_id=2)
    actions = ex.cancel_jobs(["j"], 1.0)
    assert stops(actions) == [StopTask(m0.key)]
    assert runs(actions) == []  # the runner is still busy with m0 until it reaches a safe point
    assert set(ex.tasks) == {m0.key, other.key}
    after = ex.task_done(m0, CANCELLED, 1.5)
    assert runs(after) == [other]  # the executor is free for the next job's task at once
    assert not to_scheduler(after, TaskFailed) and not [a for a in after if isinstance(a, ToPeer)]
    assert [g.group_id for g in to_scheduler(actions + after, GroupDone)] == [1]  # the scheduler ignores it
    assert set(ex.tasks) == {other.key}


def test_a_task_that_finished_just_before_its_stop_pushes_and_keeps_nothing():
    ex = executor()
    m0 = mapper(0)
    launch(ex, m0, mapper(1))
    ex.cancel_jobs(["j"], 1.0)
    actions = ex.task_done(m0, map_out(), 1.5)
    assert not [a for a in actions if isinstance(a, ToPeer | ToShuffleMeta)]
    assert not ex.outputs.blocks and not ex.tasks and ex.running is None


def test_cancelling_another_job_does_not_stop_the_running_task():
    ex = executor()
    m0 = mapper(0)
    launch(ex, m0)
    assert stops(ex.cancel_jobs(["k"], 1.0)) == []
    assert ex.running is not None and ex.running.key == m0.key and ex.running.state is TaskState.RUNNING


def test_source_tasks_held_for_their_batch_time_are_dropped():
    ex = executor()
    running = mapper(0, job_id="k")
    launch(ex, running, group_id=1)
    future = TaskDescriptor(job_id="j", stage_id=0, partition=1, stage_key=MAP_SPEC.key(), batch=3, push_to=list(mapper(0).push_to),
                            not_before=100.0)
    launch(ex, future, group_id=2)
    assert ex.next_release() == 100.0
    ex.cancel_jobs(["j"], 1.0)
    assert ex.next_release() is None
    assert runs(ex.task_done(running, map_out(), 2.0) + ex.release_due(200.0)) == []


def test_blocks_of_a_cancelled_job_are_dropped_and_late_ones_refused():
    ex = executor()
    launch(ex, mapper(0, job_id="k"), reducer(0), group_id=1)  # "k" runs; j's reducer waits for input
    push(ex, 0, b"early")
    ex.outputs.blocks[("j", 7, 1)] = [b"mine"]
    ex.cancel_jobs(["j"], 1.0)
    assert not ex.outputs.blocks and not ex.tasks.keys() - {("k", 0, 0)}
    assert push(ex, 1, b"late") == []
    assert ex.blocks_ready(BlocksReady(job_id="j", shuffle_id=7, map_partition=1, reduce_partitions=[0], address="tcp://a:1"), 1.5) == []
    assert ex.inputs.inbox.claim(("j", 7, 0)) == {}


def test_map_outputs_of_a_cancelled_job_are_never_registered():
    ex = executor()
    j0, j1, k0 = mapper(0), mapper(1), mapper(0, job_id="k", batch=1)
    launch(ex, j0, j1, group_id=1)
    launch(ex, k0, group_id=2)
    ex.task_done(j0, map_out(), 1.0)  # j's location waits for its group's end; j1 runs
    actions = ex.cancel_jobs(["j"], 1.5) + ex.task_done(j1, CANCELLED, 1.6)
    assert runs(actions) == [k0]
    actions += ex.task_done(k0, map_out(), 2.0)
    registered = [o.job_id for a in actions if isinstance(a, ToShuffleMeta) and isinstance(a.msg, RegisterMapOutputs) for o in a.msg.outputs]
    assert registered == ["k"]


def test_bsp_the_stopped_task_still_frees_its_slot_and_a_queued_one_is_reported_cancelled():
    ex = executor()
    spec = StageSpec(partitions=2, input=RangeSource(start=0, stop=10, step=1, partitions=2), ops=[], output=ResultWrite())
    first, second = (TaskDescriptor(job_id="j", stage_id=0, partition=p, stage_key=spec.key()) for p in (0, 1))
    ex.launch(LaunchTasks(tasks=[first, second], stages={spec.key(): spec}), 0.0)
    actions = ex.cancel_jobs(["j"], 1.0)
    assert stops(actions) == [StopTask(first.key)]
    assert [(m.partition, m.error_type) for m in to_scheduler(actions, TaskFailed)] == [(1, "Cancelled")]
    done = ex.task_done(first, CANCELLED, 1.5)
    (finished,) = [a for a in done if isinstance(a, ToScheduler)]
    assert isinstance(finished.msg, TaskFinished) and not finished.msg.has_result and finished.payloads == ()


# --- safe points in a running task ---------------------------------------------------------------

CODE: dict[str, bytes] = {}
STOP = StopSignal()  # module globals: the pickled functions below refer to these very objects
SEEN: list[int] = []


def key(fn) -> str:
    blob = dumps_function(fn)
    CODE[code_key(blob)] = blob
    return code_key(blob)


def run(ops_: list[str], records: int = 1000, stop: StopSignal | None = None) -> list:
    spec = StageSpec(partitions=1, input=RangeSource(start=0, stop=records, step=1, partitions=1), ops=ops_, output=ResultWrite())
    return run_task(spec, 0, [], CodeCache(CODE), signal=stop).blocks


def cancel_at_ten(x: int) -> int:
    SEEN.append(x)
    if x == 10:
        STOP.stop(0.0)  # as the executor's loop thread does, while the task runs
    return x


def swallow_everything(records):  # a user function that catches every Exception it meets
    for record in records:
        try:
            yield cancel_at_ten(record)
        except Exception:  # noqa: BLE001 - the point of the test
            continue


def read_all_first(records):  # a pipeline step that reads its whole input before it emits
    everything = sorted(records)
    for record in everything:
        yield cancel_at_ten(record)


@pytest.fixture(autouse=True)
def fresh_signal():
    STOP.stopped = STOP.pending = False
    SEEN.clear()
    yield


@pytest.mark.parametrize("step", [
    functools.partial(ops.map_op, cancel_at_ten),
    functools.partial(ops.skipping_map_op, cancel_at_ten),  # bad_records="skip" swallows Exceptions
    functools.partial(ops.partition_op, swallow_everything),
    functools.partial(ops.partition_op, read_all_first),
], ids=["map", "skipping-map", "user-except-Exception", "reads-all-first"])
def test_a_task_stops_within_a_record_or_two_of_its_signal(step):
    with pytest.raises(TaskCancelled):
        run([key(step)], records=100_000, stop=STOP)
    assert SEEN[-1] <= 11 and len(SEEN) <= 12


def test_a_task_whose_signal_was_set_before_it_started_runs_no_record():
    STOP.stop(0.0)
    with pytest.raises(TaskCancelled):
        run([key(functools.partial(ops.map_op, cancel_at_ten))], stop=STOP)
    assert SEEN == []


def test_without_a_signal_set_a_task_runs_to_the_end():
    assert run([key(functools.partial(ops.map_op, abs))], records=50, stop=StopSignal())
