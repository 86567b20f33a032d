"""squall.services.executor.state as executors scale in and out: a partition handed over is
checkpointed after its last batch here and dropped once its new owner has it; SIGTERM asks the
scheduler to leave, and the executor exits when told to go (or gives up waiting)."""

from __future__ import annotations

import pytest
from squall.common.protocol import Decommission, DecommissionAnswer, HandedOver, HandOverStates, Leave, Reregister
from squall.services.executor.events import AnswerOverdue, GraceOver, Terminated
from squall.services.executor.instructions import CheckpointState, DropStates, Exit, ToScheduler

from tests.unit.executor_fixtures import Executor, from_scheduler
from tests.unit.test_executor_recovery import apply, launch, push, result, stateful

pytestmark = pytest.mark.timeout(10)


def of(actions, kind) -> list:
    return [a for a in actions if isinstance(a, kind)]


def test_a_partition_handed_over_after_a_batch_it_applied_is_checkpointed_at_once():
    ex = Executor()
    apply(ex, stateful(0), b"after-0")
    actions = ex.feed(from_scheduler(HandOverStates(partitions=[("s1", 0, 0)])))
    assert of(actions, CheckpointState) == [CheckpointState("s1", 0, 0)]
    dropped = ex.feed(from_scheduler(HandedOver(partitions=[("s1", 0)])))
    assert of(dropped, DropStates) == [DropStates(["s1"], 0)]
    assert ("s1", 0) not in ex.keyed.next_batch


def test_a_partition_handed_over_after_a_batch_still_to_come_is_checkpointed_once_it_applies():
    ex = Executor()
    apply(ex, stateful(0), b"after-0")
    task = stateful(1)
    launch(ex, task, group_id=2)
    assert of(ex.feed(from_scheduler(HandOverStates(partitions=[("s1", 0, 1)]))), CheckpointState) == []
    push(ex, task.job_id)
    assert of(ex.task_done(task, result(b"after-1"), 0.2), CheckpointState) == [CheckpointState("s1", 0, 1)]


def test_a_handover_of_a_partition_not_here_is_reported_not_checkpointed():
    ex = Executor()
    actions = ex.feed(from_scheduler(HandOverStates(partitions=[("s1", 3, 5)])))
    assert of(actions, CheckpointState) == [] and "state_handover_impossible" in str(actions)


def test_sigterm_asks_the_scheduler_and_leave_exits_0():
    ex = Executor()
    ex.register()
    actions = ex.feed(Terminated(now=1.0, stimulus_id="test"))
    assert [a.msg for a in of(actions, ToScheduler)] == [Decommission(executor_id="e1")]
    assert of(actions, Exit) == []
    assert of(ex.feed(from_scheduler(DecommissionAnswer(executor_id="e1", accepted=True, partitions=2))), Exit) == []
    assert of(ex.feed(AnswerOverdue(now=3.0, stimulus_id="test")), Exit) == []  # answered: it waits to be let go
    assert of(ex.feed(from_scheduler(Leave(executor_id="e1"))), Exit) == [Exit(0)]


def test_a_refused_or_unanswered_leave_a_second_sigterm_or_a_forgetful_scheduler_exit_at_once():
    for last in (
        from_scheduler(DecommissionAnswer(executor_id="e1", accepted=False, reason="last")),
        AnswerOverdue(now=3.0, stimulus_id="test"),
        Terminated(now=2.0, stimulus_id="test"),
        from_scheduler(Reregister(executor_id="e1")),
    ):
        ex = Executor()
        ex.register()
        ex.feed(Terminated(now=1.0, stimulus_id="test"))
        assert of(ex.feed(last), Exit) == [Exit(0)], last


def test_an_executor_not_let_go_in_time_exits_1_and_one_not_registered_exits_at_once():
    ex = Executor()
    ex.register()
    assert of(ex.feed(GraceOver(now=0.5, stimulus_id="test")), Exit) == []  # not leaving: nothing to do
    ex.feed(Terminated(now=1.0, stimulus_id="test"))
    assert of(ex.feed(GraceOver(now=31.0, stimulus_id="test")), Exit) == [Exit(1)]
    assert of(Executor().feed(Terminated(now=1.0, stimulus_id="test")), Exit) == [Exit(0)]
