"""squall.services.executor.state as a whole: one way in (handle), the task states and their
story, the invariants validate() checks, registration, and the instructions that replaced work
the server used to do itself (checkpoint housekeeping, replies, wake-ups, code and state tables)."""

from __future__ import annotations

import pytest
from squall.common.core import Event, Log, Send, ToShuffleMeta
from squall.common.plan import StateUpdate
from squall.common.protocol import (
    ForgetStates,
    GetTracked,
    LaunchGroup,
    LaunchTasks,
    Ping,
    Pong,
    PruneCheckpoints,
    PushBlocks,
    RegisterExecutor,
    RegisterMapOutputs,
    StateCheckpointed,
    TaskDescriptor,
    Tracked,
)
from squall.common.settings import Settings
from squall.services.executor.events import (
    CheckpointsWritten,
    ShuffleMetaRestarted,
    Started,
    TrackedAsked,
)
from squall.services.executor.instructions import (
    Activate,
    DiscardWork,
    DropStates,
    ForgetCheckpoints,
    PruneMapCheckpoints,
    Reconnect,
    RunTask,
    StopTask,
    ToScheduler,
    WakeAt,
)
from squall.services.executor.reports import Failure
from squall.services.executor.state import ExecutorState
from squall.services.executor.task_states import InvalidTransition, Stories, TaskState
from squall.services.executor.tasks import TaskOutput

from tests.unit.executor_fixtures import Executor, from_scheduler, map_spec, only, received, reduce_spec, runs

S = TaskState
MAP_SPEC = map_spec(reduces=1, maps=1)
REDUCE_SPEC = reduce_spec(maps=1, reduces=1)
STAGES = {MAP_SPEC.key(): MAP_SPEC, REDUCE_SPEC.key(): REDUCE_SPEC}
CODE = {"fn": b"pickled fn"}


def mapper(job_id: str = "j", batch: int = 0, not_before: float = 0.0) -> TaskDescriptor:
    return TaskDescriptor(job_id=job_id, stage_id=0, partition=0, stage_key=MAP_SPEC.key(), batch=batch, push_to=[""],
                          not_before=not_before)


def group(*tasks: TaskDescriptor, group_id: int = 1) -> LaunchGroup:
    return LaunchGroup(group_id=group_id, tasks=list(tasks), stages=STAGES, code=CODE)


def event(kind: type, now: float = 0.0, **fields: object) -> Event:
    return kind(now=now, stimulus_id=f"test-{kind.__name__}", **fields)


# --- task states and their story -----------------------------------------------------------------


def test_each_transition_is_in_the_tasks_story_with_the_stimulus_that_caused_it():
    ex = Executor()
    m = mapper()
    ex.launch_group(group(m), 1.0)
    ex.task_done(m, TaskOutput(blocks=[b"b"], is_result=False), 2.0)
    assert ex.story(m.key) == [
        (None, S.READY, "test-LaunchGroup", 1.0),
        (S.READY, S.RUNNING, "test-LaunchGroup", 1.0),
        (S.RUNNING, S.DONE, "test-done", 2.0),
    ]


def test_a_reducer_waits_then_runs_and_a_cancelled_running_task_says_so():
    ex = Executor()
    r = TaskDescriptor(job_id="j", stage_id=1, partition=0, stage_key=REDUCE_SPEC.key())
    ex.launch_group(group(r), 0.0)
    assert ex.tasks[r.key].state is S.WAITING
    ex.pushed(PushBlocks(job_id="j", shuffle_id=7, map_partition=0, reduce_partitions=[0]), [b"x"], 0.5)
    assert ex.running is ex.tasks[r.key] and ex.running.state is S.RUNNING
    assert only(ex.cancel_jobs(["j"], 0.7), StopTask) == StopTask(r.key)
    assert ex.running.state is S.CANCELLED  # still on the runner until it returns
    ex.task_done(r, TaskOutput(blocks=[b"rows"], is_result=True), 0.9)
    assert [new for _, new, _, _ in ex.story(r.key)] == [S.WAITING, S.READY, S.RUNNING, S.CANCELLED]
    assert not ex.tasks and ex.running is None


def test_a_failed_task_tells_its_story_to_the_debug_log():
    ex = Executor()
    m = mapper()
    ex.launch_group(group(m), 1.0)
    out = ex.task_done(m, Failure("task", "ZeroDivisionError", "division by zero"), 2.0)
    story = [i for i in out if isinstance(i, Log) and i.event == "task_story"]
    assert len(story) == 1 and story[0].level == "debug"
    assert story[0].fields["error"] == "ZeroDivisionError"
    assert story[0].fields["story"] == ["new->ready (test-LaunchGroup, 1.000)", "ready->running (test-LaunchGroup, 1.000)",
                                        "running->failed (test-done, 2.000)"]


def test_the_story_log_is_bounded_whatever_runs():
    ex = Executor()
    ex.state.stories = ex.state.flow.stories = Stories(length=50)
    for i in range(100):
        t = mapper(job_id=f"j{i}", batch=i)
        ex.launch_group(group(t, group_id=i), float(i))
        ex.task_done(t, TaskOutput(blocks=[b""], is_result=False), float(i))
    assert len(ex.stories) == 50
    assert ex.story(mapper(job_id="j0").key) == []  # the oldest went first
    assert len(ex.story(mapper(job_id="j99", batch=99).key)) == 3


def test_a_transition_the_model_does_not_allow_is_refused():
    stories = Stories(length=10)
    with pytest.raises(InvalidTransition, match="done -> running"):
        stories.record(("j", 0, 0), S.DONE, S.RUNNING, "bad", 0.0)


# --- validate ------------------------------------------------------------------------------------


def test_validate_finds_a_ready_task_that_is_not_queued():
    ex = Executor()
    first, second = mapper(job_id="a"), mapper(job_id="b", batch=1)
    ex.launch_group(group(first, second), 0.0)  # a runs, b is ready
    ex.validate()
    ex.local.remove_jobs({"b"})  # a table changed behind the core's back
    with pytest.raises(AssertionError, match="ready but not queued"):
        ex.validate()


def test_validate_finds_two_tasks_on_the_runner():
    ex = Executor()
    first, second = mapper(job_id="a"), mapper(job_id="b", batch=1)
    ex.launch_group(group(first, second), 0.0)
    ex.tasks[second.key].state = S.RUNNING
    with pytest.raises(AssertionError, match="but the runner has"):
        ex.validate()


# --- registration --------------------------------------------------------------------------------


def test_registration_is_asked_again_until_answered_and_again_when_the_scheduler_forgets_us():
    ex = Executor()
    assert isinstance(only(ex.feed(event(Started, 0.0)), ToScheduler).msg, RegisterExecutor)
    assert ex.tick(0.9) == []
    assert isinstance(only(ex.tick(1.0), ToScheduler).msg, RegisterExecutor)
    assert only(ex.register(1.5), Activate) == Activate("tcp://meta:1")
    assert ex.tick(10.0) == []  # registered: no more asking
    ex.launch(LaunchTasks(tasks=[mapper()], stages=STAGES, code=CODE), 11.0)
    forgot = ex.forgotten(12.0)
    assert [type(i) for i in forgot if not isinstance(i, Log)] == [Reconnect, DiscardWork, ToScheduler]
    assert not ex.tasks and not ex.code
    assert ex.forgotten(12.1) == []  # registering again already


# --- what the server used to do itself -----------------------------------------------------------


def test_checkpoint_housekeeping_and_written_checkpoints_are_instructions():
    ex = Executor()
    assert ex.feed(from_scheduler(PruneCheckpoints(state_id="s", before=4))) == [PruneMapCheckpoints("s", 4)]
    assert ex.feed(from_scheduler(ForgetStates(state_ids=["s"]))) == [DropStates(["s"]), ForgetCheckpoints(["s"])]
    written = ex.feed(event(CheckpointsWritten, written=[("s", 0, 3)]))
    assert written == [ToScheduler(StateCheckpointed(executor_id="e1", checkpoints=[("s", 0, 3)]))]
    assert ex.feed(event(CheckpointsWritten, written=[])) == []


def test_ping_and_get_tracked_are_answered_on_the_block_socket():
    ex = Executor()
    assert ex.feed(received(Ping(nonce=4), peer=b"who")) == [Send(b"who", Pong(nonce=4, service="executor"))]
    reply = only(ex.feed(TrackedAsked(now=0.0, msg=GetTracked(), peer=b"who", server_sizes={"peers": 2})), Send)
    assert reply.peer == b"who" and isinstance(reply.msg, Tracked)
    assert reply.msg.sizes["peers"] == 2 and reply.msg.sizes["tasks"] == 0


def test_a_restarted_shuffle_meta_hears_of_every_output_again():
    ex = Executor()
    m = mapper()
    ex.launch(LaunchTasks(tasks=[m], stages=STAGES, code=CODE))
    ex.task_done(m, TaskOutput(blocks=[b"b"], is_result=False), 1.0)
    again = ex.feed(event(ShuffleMetaRestarted, 2.0))
    (register,) = [i.msg for i in again if isinstance(i, ToShuffleMeta)]
    assert isinstance(register, RegisterMapOutputs) and [o.job_id for o in register.outputs] == ["j"]


def test_an_event_the_core_does_not_know_is_logged_not_raised():
    ex = ExecutorState("e1", "tcp://me:1", Settings())
    (log,) = ex.handle(received(Pong(nonce=1, service="x")))  # a Pong from a peer means nothing here
    assert isinstance(log, Log) and log.level == "warning"


def test_a_held_source_task_asks_to_be_woken_at_its_batch_time_once():
    ex = Executor()
    running = mapper(job_id="now")
    later, sooner = mapper(job_id="later", batch=2, not_before=50.0), mapper(job_id="sooner", batch=1, not_before=20.0)
    ex.launch_group(group(running), 0.0)
    assert [i for i in ex.launch_group(group(later, group_id=2), 1.0) if isinstance(i, WakeAt)] == [WakeAt(50.0)]
    assert [i for i in ex.launch_group(group(later, group_id=3), 1.0) if isinstance(i, WakeAt)] == []
    assert [i for i in ex.launch_group(group(sooner, group_id=4), 1.0) if isinstance(i, WakeAt)] == [WakeAt(20.0)]
    assert ex.tasks[sooner.key].state is S.HELD


# --- who owns what -------------------------------------------------------------------------------


def test_a_run_carries_its_stages_code_which_later_evictions_do_not_touch():
    ex = Executor()
    first, second = mapper(job_id="a"), mapper(job_id="b", batch=1)
    (run,) = [i for i in ex.launch_group(group(first, second), 0.0) if isinstance(i, RunTask)]
    assert run.code == CODE and run.code is not ex.code
    ex.launch(LaunchTasks(tasks=[], forget_code=["fn"]))
    assert run.code == CODE and "fn" not in ex.code


def test_a_stateful_run_gets_the_code_of_its_state_function_too():
    spec = reduce_spec(maps=1, reduces=1, state=StateUpdate(fn="update", state_id="s", kind="keyed"))
    ex = Executor()
    r = TaskDescriptor(job_id="j", stage_id=1, partition=0, stage_key=spec.key())
    ex.launch_group(LaunchGroup(group_id=1, tasks=[r], stages={spec.key(): spec}, code={"update": b"u", "other": b"o"}))
    out = ex.pushed(PushBlocks(job_id="j", shuffle_id=7, map_partition=0, reduce_partitions=[0]), [b"x"])
    assert runs(out) == [r] and only(out, RunTask).code == {"update": b"u"}
