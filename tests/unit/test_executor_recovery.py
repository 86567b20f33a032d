"""squall.services.executor.state when another executor died: stateful partitions apply each batch once
(a replayed batch takes the output kept from its first run), partitions taken over start at their
checkpoint, rebuild tasks send nothing, and checkpoints are asked for where the scheduler said."""

from __future__ import annotations

from squall.common.plan import StateUpdate
from squall.common.protocol import GroupDone, LaunchGroup, PushBlocks, ResultPartition, StateRestore, TaskDescriptor, TaskFailed
from squall.services.executor.instructions import (
    CheckpointMapOutput,
    CheckpointState,
    RestoreState,
    RunTask,
    ToPeer,
    ToScheduler,
)
from squall.services.executor.tasks import TaskOutput

from tests.unit.executor_fixtures import Executor, map_spec, reduce_spec

MAP_SPEC = map_spec(reduces=2, maps=1)
STATE_SPEC = reduce_spec(maps=1, reduces=2, state=StateUpdate(fn="update", state_id="s1", kind="keyed"))
STAGES = {MAP_SPEC.key(): MAP_SPEC, STATE_SPEC.key(): STATE_SPEC}


def executor() -> Executor:
    return Executor()


def stateful(batch: int, job_id: str | None = None, **fields) -> TaskDescriptor:
    return TaskDescriptor(job_id=job_id or f"j{batch}", stage_id=1, partition=0, stage_key=STATE_SPEC.key(), batch=batch, **fields)


def launch(ex: Executor, *tasks: TaskDescriptor, group_id: int = 1, restores=(), restored=None) -> list:
    msg = LaunchGroup(group_id=group_id, tasks=list(tasks), stages=STAGES, code={"fn": b"f", "update": b"u"}, restores=list(restores))
    return ex.launch_group(msg, 0.0, restored)


def push(ex: Executor, job_id: str) -> list:
    return ex.pushed(PushBlocks(job_id=job_id, shuffle_id=7, map_partition=0, reduce_partitions=[0]), [b"block"], 0.0)


def runs(actions) -> list[TaskDescriptor]:
    return [a.task for a in actions if isinstance(a, RunTask)]


def sent(actions, kind) -> list:
    return [a.msg for a in actions if isinstance(a, ToScheduler) and isinstance(a.msg, kind)]


def result(rows: bytes) -> TaskOutput:
    return TaskOutput(blocks=[rows], is_result=True)


def apply(ex: Executor, task: TaskDescriptor, rows: bytes) -> list:
    """Deliver the task's input and run it to completion with this output."""
    actions = launch(ex, task, group_id=task.batch + 1) + push(ex, task.job_id)
    assert runs(actions) == [task]
    return ex.task_done(task, result(rows), 0.1)


def test_a_replayed_batch_takes_the_output_kept_from_its_first_run_and_is_not_applied_again():
    ex = executor()
    apply(ex, stateful(0), b"after-0")
    ex.release_jobs(["j0"], 0.2, superseded=True)  # the job is being replayed: keep what batch 0 made
    replay = stateful(0, job_id="j0~1", attempt=1)
    actions = launch(ex, replay, group_id=9)
    assert runs(actions) == []  # never applied twice
    (out,) = sent(actions, ResultPartition)
    assert out.job_id == "j0~1"
    assert next(a.payloads for a in actions if isinstance(a, ToScheduler) and a.msg is out) == (b"after-0",)
    assert sent(actions, GroupDone)


def test_kept_outputs_go_when_their_job_is_released_as_over():
    ex = executor()
    apply(ex, stateful(0), b"after-0")
    ex.release_jobs(["j0"], 0.2)  # done: nothing will replay it
    actions = launch(ex, stateful(0, job_id="j0~1", attempt=1), group_id=9)
    (failure,) = sent(actions, TaskFailed)
    assert failure.error_type == "StateAhead" and "batch 0" in failure.message


def test_a_replay_queued_behind_its_first_attempt_takes_that_attempts_output():
    ex = executor()
    apply(ex, stateful(0), b"after-0")
    first = stateful(1)
    assert runs(launch(ex, first, group_id=2) + push(ex, "j1")) == [first]  # running
    ex.release_jobs(["j1"], 0.2, superseded=True)  # an executor died: batch 1 is replayed
    replay = stateful(1, job_id="j1~1", attempt=1)
    assert runs(launch(ex, replay, group_id=3) + push(ex, "j1~1")) == []  # queued behind the running first attempt
    actions = ex.task_done(first, result(b"after-1"), 0.3)  # the first attempt applied batch 1 after all
    assert runs(actions) == []
    (out,) = sent(actions, ResultPartition)
    assert out.job_id == "j1~1"


def test_a_partition_taken_over_starts_at_its_checkpoint_and_rebuild_tasks_send_nothing():
    ex = executor()
    restore = StateRestore(state_id="s1", partition=0, up_to=4, first_batch=0)
    rebuild = [stateful(b, job_id=f"j{b}~r1", attempt=1, replay_only=True) for b in (2, 3, 4)]
    actions = launch(ex, *rebuild, group_id=5, restores=[restore], restored={("s1", 0): (2, {"k": 5})})
    assert RestoreState("s1", 0, {"k": 5}) in actions
    assert not sent(actions, TaskFailed)  # batch 2 is in the checkpoint: done at once, silently
    assert runs(push(ex, "j3~r1")) == [rebuild[1]]
    actions = ex.task_done(rebuild[1], result(b"rows"), 0.1)
    assert not sent(actions, ResultPartition)  # a rebuild's output goes nowhere
    assert runs(actions + push(ex, "j4~r1")) == [rebuild[2]]
    assert sent(ex.task_done(rebuild[2], result(b"rows"), 0.2), GroupDone)
    assert runs(launch(ex, stateful(5), group_id=6) + push(ex, "j5")) == [stateful(5)]  # then the stream goes on


def test_a_partition_without_a_checkpoint_starts_empty_at_the_streams_first_batch():
    ex = executor()
    restore = StateRestore(state_id="s1", partition=0, up_to=1, first_batch=0)
    rebuild = stateful(0, job_id="j0~r1", attempt=1, replay_only=True)
    actions = launch(ex, rebuild, group_id=5, restores=[restore], restored={})
    assert RestoreState("s1", 0, {}) in actions
    assert runs(push(ex, "j0~r1")) == [rebuild]


def test_an_unreadable_checkpoint_fails_the_partitions_tasks_with_the_reason():
    ex = executor()
    restore = StateRestore(state_id="s1", partition=0, up_to=1, first_batch=0)
    actions = launch(ex, stateful(2), group_id=5, restores=[restore], restored={("s1", 0): "checkpoint x is unreadable: torn"})
    (failure,) = sent(actions, TaskFailed)
    assert failure.error_type == "CheckpointUnreadable" and "torn" in failure.message
    assert sent(actions, GroupDone)


def test_a_restore_with_no_tasks_here_still_reports_the_group():
    ex = executor()
    restore = StateRestore(state_id="s1", partition=1, up_to=1, first_batch=0)
    assert sent(launch(ex, group_id=5, restores=[restore], restored={}), GroupDone)


def test_checkpoints_are_asked_for_where_the_scheduler_marked_them():
    ex = executor()
    actions = apply(ex, stateful(0, checkpoint_state=True), b"after-0")
    assert [a for a in actions if isinstance(a, CheckpointState)] == [CheckpointState("s1", 0, 0)]
    m = TaskDescriptor(job_id="j0", stage_id=0, partition=0, stage_key=MAP_SPEC.key(), push_to=["tcp://a:1", ""], map_checkpoint="maps/s1/0/0-0")
    assert runs(launch(ex, m, group_id=7)) == [m]
    actions = ex.task_done(m, TaskOutput(blocks=[b"b0", b"b1"], is_result=False), 0.1)
    assert [a for a in actions if isinstance(a, CheckpointMapOutput)] == [CheckpointMapOutput("maps/s1/0/0-0", [b"b0", b"b1"])]
    (pushed,) = [a for a in actions if isinstance(a, ToPeer)]
    assert pushed.address == "tcp://a:1" and pushed.msg.reduce_partitions == [0]  # "": no push for that partition


def test_late_pushes_for_released_attempts_are_dropped():
    ex = executor()
    ex.release_jobs(["j0"], 0.0, superseded=True)
    assert push(ex, "j0") == []
    assert ex.inputs.inbox.claim(("j0", 7, 0)) == {}  # nothing was kept for it
