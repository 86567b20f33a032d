"""Two lanes on an executor (ExecutorState, pure core): a latency task that becomes runnable while
a batch task runs suspends it (SuspendTask before its RunTask), kills it (PreemptTask: it runs
again later from its start) or waits for it, as settings.preemption says; a batch task kept
suspended for batch_max_suspension gets a slice; a suspended or killed task of a cancelled or
released job is stopped, never left parked."""

from __future__ import annotations

import pytest
from squall.common.core import Tick
from squall.common.plan import RangeSource, ResultWrite, StageSpec, StateUpdate
from squall.common.protocol import (
    CancelJobs,
    GroupDone,
    LaunchGroup,
    LaunchTasks,
    ReleaseJob,
    StateRestore,
    TaskDescriptor,
    TaskFinished,
)
from squall.common.settings import Settings
from squall.services.executor.events import SliceOver
from squall.services.executor.instructions import (
    DiscardWork,
    Log,
    PreemptTask,
    ResumeTask,
    RunTask,
    StopTask,
    SuspendTask,
    ToScheduler,
)
from squall.services.executor.reports import Failure
from squall.services.executor.task_states import TaskState as S
from squall.services.executor.tasks import TaskOutput

from tests.unit.executor_fixtures import Executor, from_scheduler, reduce_spec, runs, to_scheduler
from tests.unit.test_executor_groups import push

SOURCE = StageSpec(partitions=8, input=RangeSource(start=0, stop=80, step=1, partitions=8), ops=[], output=ResultWrite())
OUT = TaskOutput(blocks=[b"r"], is_result=True)
PREEMPTED = Failure("task", "Preempted", "the task was preempted by latency work")
CANCELLED = Failure("task", "Cancelled", "the run was cancelled")


def executor(**settings) -> Executor:
    return Executor("e1", "tcp://me:1", Settings(**settings))


def task(job_id: str, priority: str, partition: int = 0, spec: StageSpec = SOURCE) -> TaskDescriptor:
    return TaskDescriptor(job_id=job_id, stage_id=0, partition=partition, stage_key=spec.key(), priority=priority)  # type: ignore[arg-type]


def launch(ex: Executor, *tasks: TaskDescriptor, group_id: int, now: float = 0.0) -> list:
    return ex.launch_group(LaunchGroup(group_id=group_id, tasks=list(tasks), stages={SOURCE.key(): SOURCE}), now)


def lane_instructions(actions: list) -> list:
    """What the lanes are told, in order: (kind, task key[, slice])."""
    out = []
    for a in actions:
        if isinstance(a, RunTask):
            out.append(("run", a.task.key))
        elif isinstance(a, SuspendTask | PreemptTask | StopTask):
            out.append((type(a).__name__, a.key))
        elif isinstance(a, ResumeTask):
            out.append(("resume", a.key, a.slice))
    return out


def states(ex: Executor, key: tuple[str, int, int]) -> list[S]:
    return [new for _, new, _, _ in ex.story(key)]


def test_a_latency_task_suspends_the_batch_task_which_resumes_before_a_new_batch_task():
    ex = executor()
    b, b2, lat = task("b", "batch"), task("b", "batch", 1), task("l", "latency")
    assert runs(launch(ex, b, group_id=1)) == [b]
    assert ex.batch_running is not None and ex.running is None  # the batch lane's, never the latency lane's
    actions = launch(ex, lat, group_id=2, now=1.0)
    assert lane_instructions(actions) == [("SuspendTask", b.key), ("run", lat.key)]  # suspended BEFORE the latency task runs
    assert ex.tasks[b.key].state is S.SUSPENDED and ex.running.key == lat.key
    assert runs(launch(ex, b2, group_id=3, now=1.1)) == []  # a new batch task waits while latency work runs
    actions = ex.task_done(lat, OUT, 1.2)
    assert lane_instructions(actions) == [("resume", b.key, 0.0)]  # the suspended one goes first
    assert ex.tasks[b.key].state is S.RUNNING and ex.tasks[b2.key].state is S.READY
    assert runs(ex.task_done(b, OUT, 2.0)) == [b2]
    assert states(ex, b.key) == [S.READY, S.RUNNING, S.SUSPENDED, S.RUNNING, S.DONE]
    assert ex.counters.suspensions == 1 and ex.counters.resumes == 1 and ex.counters.kills == 0


def test_the_suspended_task_finishing_before_it_parked_is_taken_as_done():
    ex = executor()
    b, lat = task("b", "batch"), task("l", "latency")
    launch(ex, b, group_id=1)
    launch(ex, lat, group_id=2, now=1.0)
    actions = ex.task_done(b, OUT, 1.01)  # it had passed its last safe point
    assert [g.group_id for g in to_scheduler(actions, GroupDone)] == [1] and ex.batch_running is None


def batch_task_beside_a_latency_reducer() -> tuple[Executor, TaskDescriptor, TaskDescriptor, TaskDescriptor]:
    """A running batch task, and a latency reducer of two mappers waiting here (not yet fed)."""
    ex = executor(batch_max_suspension=0.2)
    spec = reduce_spec(maps=2, reduces=1)
    b, mapper, reducer = task("b", "batch"), task("l", "latency"), task("r", "latency", spec=spec)
    launch(ex, b, group_id=1)
    ex.launch_group(LaunchGroup(group_id=2, tasks=[reducer], stages={spec.key(): spec}), 0.5)
    return ex, b, mapper, reducer


def test_a_suspended_task_stays_parked_while_a_latency_reducer_here_is_being_fed():
    ex, b, mapper, reducer = batch_task_beside_a_latency_reducer()
    assert lane_instructions(launch(ex, mapper, group_id=3, now=1.0)) == [("SuspendTask", b.key), ("run", mapper.key)]
    push(ex, 0, b"block", job_id="r")  # the reducer's first input (the other mapper runs elsewhere)
    assert lane_instructions(ex.task_done(mapper, OUT, 1.01)) == []  # not resumed: the reducer is imminent
    assert ex.tasks[b.key].state is S.SUSPENDED
    assert lane_instructions(ex.feed(Tick(now=1.1, stimulus_id="tick"))) == []
    assert lane_instructions(push(ex, 1, b"block", job_id="r")) == [("run", reducer.key)]
    assert lane_instructions(ex.task_done(reducer, OUT, 1.12)) == [("resume", b.key, 0.0)]


def test_a_suspended_task_waiting_for_a_latency_reducer_past_the_bound_goes_on():
    ex, b, mapper, reducer = batch_task_beside_a_latency_reducer()
    launch(ex, mapper, group_id=3, now=1.0)
    push(ex, 0, b"block", job_id="r")
    ex.task_done(mapper, OUT, 1.01)
    assert lane_instructions(ex.feed(Tick(now=1.25, stimulus_id="tick"))) == [("resume", b.key, 0.0)]


def test_a_new_batch_task_waits_for_the_latency_lane_and_for_ready_latency_tasks():
    ex = executor()
    lat, lat2, b = task("l", "latency"), task("l", "latency", 1), task("b", "batch")
    assert runs(launch(ex, lat, lat2, group_id=1)) == [lat]
    assert runs(launch(ex, b, group_id=2, now=0.1)) == []
    assert runs(ex.task_done(lat, OUT, 0.2)) == [lat2]  # latency before batch
    assert runs(ex.task_done(lat2, OUT, 0.3)) == [b]


def test_a_batch_task_suspended_past_batch_max_suspension_gets_a_slice_between_latency_tasks():
    ex = executor(batch_max_suspension=0.2, batch_slice=0.002)
    b = task("b", "batch")
    lats = [task("l", "latency", p) for p in range(4)]
    launch(ex, b, group_id=1)
    assert lane_instructions(launch(ex, *lats, group_id=2, now=1.0)) == [("SuspendTask", b.key), ("run", lats[0].key)]
    assert runs(ex.task_done(lats[0], OUT, 1.1)) == [lats[1]]  # suspended 0.1 s: latency goes on
    actions = ex.task_done(lats[1], OUT, 1.25)  # suspended 0.25 s: starved
    assert lane_instructions(actions) == [("resume", b.key, 0.002)]
    assert ex.running is None and ex.tasks[lats[2].key].state is S.READY  # latency waits for the slice's end
    # Its end, as the task parks itself or as the loop's clock says: it is parked (again) and latency goes on.
    assert lane_instructions(ex.feed(SliceOver(now=1.253, stimulus_id="test-slice", key=b.key))) == [
        ("SuspendTask", b.key), ("run", lats[2].key)]
    assert ex.tasks[b.key].state is S.SUSPENDED and ex.counters.slices == 1
    assert runs(ex.task_done(lats[2], OUT, 1.3)) == [lats[3]]  # the suspension clock started again at the slice's end
    assert lane_instructions(ex.task_done(lats[3], OUT, 1.35)) == [("resume", b.key, 0.0)]
    assert ex.counters.resumes == 1


def test_a_late_slice_over_is_ignored():
    ex = executor(batch_max_suspension=0.001)
    b, lat, lat2 = task("b", "batch"), task("l", "latency"), task("l", "latency", 1)
    launch(ex, b, group_id=1)
    launch(ex, lat, lat2, group_id=2, now=1.0)
    ex.task_done(lat, OUT, 1.1)  # starved at once: a slice
    ex.task_done(b, OUT, 1.101)  # it finished during its slice
    assert ex.running is not None and ex.running.key == lat2.key  # latency goes on at once
    assert ex.feed(SliceOver(now=1.2, stimulus_id="test-slice", key=b.key)) == []


def test_kill_mode_abandons_the_batch_task_and_runs_it_again_from_its_start_with_the_same_inputs():
    ex = executor(preemption="kill")
    spec = reduce_spec(maps=1, reduces=1)
    b = task("b", "batch", spec=spec)
    lat = task("l", "latency")
    ex.launch_group(LaunchGroup(group_id=1, tasks=[b], stages={spec.key(): spec}), 0.0)
    first = push(ex, 0, b"block", job_id="b")
    (run,) = [a for a in first if isinstance(a, RunTask)]
    actions = launch(ex, lat, group_id=2, now=1.0)
    assert lane_instructions(actions) == [("PreemptTask", b.key), ("run", lat.key)]
    assert ex.tasks[b.key].state is S.PREEMPTED and ex.counters.kills == 1
    assert runs(ex.task_done(lat, OUT, 1.1)) == []  # it is still on its way out: the lane is busy
    actions = ex.task_done(b, PREEMPTED, 1.5)
    (again,) = [a for a in actions if isinstance(a, RunTask)]
    assert again.task == b and again.inputs == run.inputs == [b"block"]
    assert ex.counters.thrown_away_seconds == pytest.approx(1.5)
    assert [a.fields["thrown_away"] for a in actions if isinstance(a, Log) and a.event == "task_preempted"] == [1.5]
    assert states(ex, b.key)[-4:] == [S.RUNNING, S.PREEMPTED, S.READY, S.RUNNING]
    assert [g.group_id for g in to_scheduler(ex.task_done(b, OUT, 2.0), GroupDone)] == [1]


def test_kill_mode_kills_a_task_once_its_run_from_the_start_goes_to_its_end():
    ex = executor(preemption="kill")
    b, lat, lat2 = task("b", "batch"), task("l", "latency"), task("l2", "latency")
    launch(ex, b, group_id=1)
    assert lane_instructions(launch(ex, lat, group_id=2, now=1.0)) == [("PreemptTask", b.key), ("run", lat.key)]
    ex.task_done(b, PREEMPTED, 1.1)
    assert runs(ex.task_done(lat, OUT, 1.2)) == [b]  # its second run
    assert lane_instructions(launch(ex, lat2, group_id=3, now=1.3)) == []  # not killed again: the latency task waits
    assert ex.counters.kills == 1 and ex.tasks[lat2.key].state is S.READY
    assert runs(ex.task_done(b, OUT, 2.0)) == [lat2]


def test_kill_mode_a_killed_task_that_finished_before_its_safe_point_keeps_its_output():
    ex = executor(preemption="kill")
    b, lat = task("b", "batch"), task("l", "latency")
    launch(ex, b, group_id=1)
    launch(ex, lat, group_id=2, now=1.0)
    assert [g.group_id for g in to_scheduler(ex.task_done(b, OUT, 1.01), GroupDone)] == [1]
    assert ex.counters.thrown_away_seconds == 0


def test_kill_mode_suspends_a_stateful_batch_task_instead():
    ex = executor(preemption="kill")
    b = stateful_batch_task(ex)
    actions = launch(ex, task("l", "latency"), group_id=2, now=1.0)
    assert lane_instructions(actions) == [("SuspendTask", b.key), ("run", ("l", 0, 0))]
    assert ex.counters.kills == 0 and ex.counters.suspensions == 1


def test_none_mode_the_latency_task_waits_for_the_running_batch_task():
    ex = executor(preemption="none")
    b, b2, lat = task("b", "batch"), task("b", "batch", 1), task("l", "latency")
    launch(ex, b, b2, group_id=1)
    assert lane_instructions(launch(ex, lat, group_id=2, now=1.0)) == []
    assert ex.tasks[b.key].state is S.RUNNING and ex.tasks[lat.key].state is S.READY
    assert runs(ex.task_done(b, OUT, 2.0)) == [lat]  # before the next batch task
    assert runs(ex.task_done(lat, OUT, 2.1)) == [b2]


@pytest.mark.parametrize("how", ["cancel", "release"])
def test_a_suspended_task_of_a_cancelled_or_released_job_is_stopped_and_reported_like_a_cancelled_one(how):
    ex = executor()
    b, lat = task("b", "batch"), task("l", "latency")
    launch(ex, b, group_id=1)
    launch(ex, lat, group_id=2, now=1.0)
    msg = CancelJobs(job_ids=["b"]) if how == "cancel" else ReleaseJob(job_ids=["b"])
    actions = ex.feed(from_scheduler(msg, 1.1))
    assert lane_instructions(actions) == [("StopTask", b.key)]  # it wakes up to raise: never left parked
    assert ex.tasks[b.key].state is S.CANCELLED
    assert lane_instructions(ex.task_done(lat, OUT, 1.2)) == []  # nothing to resume
    done = ex.task_done(b, CANCELLED, 1.3)
    assert [g.group_id for g in to_scheduler(done, GroupDone)] == [1] and not ex.tasks


def stateful_batch_task(ex: Executor, job_id: str = "b") -> TaskDescriptor:
    """A stateful batch task, running."""
    spec = reduce_spec(maps=1, reduces=1, state=StateUpdate(fn="fn", state_id="s", kind="keyed"))
    b = task(job_id, "batch", spec=spec)
    ex.launch_group(LaunchGroup(group_id=1, tasks=[b], stages={spec.key(): spec}), 0.0)
    assert runs(push(ex, 0, b"block", job_id=job_id)) == [b]
    return b


def test_a_suspended_stateful_task_of_a_released_job_finishes_so_its_applied_batch_is_kept():
    ex = executor()
    b = stateful_batch_task(ex)
    launch(ex, task("l", "latency"), group_id=2, now=1.0)
    assert lane_instructions(ex.release_jobs(["b"], 1.1, superseded=True)) == [("resume", b.key, 0.0)]
    ex.task_done(b, OUT, 1.2)
    assert ex.keyed.take(("s", 0), 0, "b") == OUT  # the replay takes it: the batch is never applied twice


def test_a_task_whose_job_is_released_during_its_slice_is_not_left_parked_after_it():
    ex = executor(batch_max_suspension=0.001)
    b = stateful_batch_task(ex)
    lat, lat2 = task("l", "latency"), task("l", "latency", 1)
    launch(ex, lat, lat2, group_id=2, now=1.0)
    assert lane_instructions(ex.task_done(lat, OUT, 1.1)) == [("resume", b.key, Settings().batch_slice)]
    # Resumed for good (it finishes: stateful, its job only released), and latency work goes on beside it.
    assert lane_instructions(ex.release_jobs(["b"], 1.101)) == [("resume", b.key, 0.0), ("run", lat2.key)]
    assert ex.tasks[b.key].state is S.CANCELLED
    # Had it parked at its slice's end before hearing of it, it is resumed then too.
    assert lane_instructions(ex.feed(SliceOver(now=1.103, stimulus_id="test-slice", key=b.key))) == [("resume", b.key, 0.0)]


def test_a_suspended_stateful_task_whose_partition_is_restored_is_orphaned_and_stopped():
    ex = executor()
    b = stateful_batch_task(ex)
    launch(ex, task("l", "latency"), group_id=2, now=1.0)
    restore = StateRestore(state_id="s", partition=0, up_to=-1, first_batch=0)
    actions = ex.launch_group(LaunchGroup(group_id=3, tasks=[], restores=[restore]), 1.1)
    assert ("StopTask", b.key) in lane_instructions(actions) and ex.tasks[b.key].state is S.ORPHANED
    ex.task_done(b, CANCELLED, 1.2)
    assert b.key not in ex.tasks and ex.batch_running is None


def test_bsp_a_suspended_task_cancelled_still_frees_its_slot():
    ex = executor()
    b = task("b", "batch")
    ex.launch(LaunchTasks(tasks=[b], stages={SOURCE.key(): SOURCE}), 0.0)
    launch(ex, task("l", "latency"), group_id=2, now=1.0)
    assert lane_instructions(ex.cancel_jobs(["b"], 1.1)) == [("StopTask", b.key)]
    (finished,) = [a.msg for a in ex.task_done(b, CANCELLED, 1.3) if isinstance(a, ToScheduler)]
    assert isinstance(finished, TaskFinished) and not finished.has_result


def test_a_killed_task_of_a_cancelled_job_does_not_run_again():
    ex = executor(preemption="kill")
    b, lat = task("b", "batch"), task("l", "latency")
    launch(ex, b, group_id=1)
    launch(ex, lat, group_id=2, now=1.0)
    assert lane_instructions(ex.cancel_jobs(["b"], 1.1)) == []  # it raises at its safe point already
    assert ex.tasks[b.key].state is S.CANCELLED
    assert runs(ex.task_done(b, PREEMPTED, 1.2)) == [] and b.key not in ex.tasks


def test_forgotten_by_the_scheduler_the_work_is_discarded_suspended_task_included():
    ex = executor()
    ex.register()
    b = task("b", "batch")
    launch(ex, b, group_id=1)
    launch(ex, task("l", "latency"), group_id=2, now=1.0)
    assert any(isinstance(a, DiscardWork) for a in ex.forgotten(2.0))  # the server stops both lanes' tasks on it
    assert ex.batch_running is None and not ex.tasks
    assert ex.counters.suspensions == 1  # counters outlive the write-off


def test_load_counts_tasks_by_priority_and_the_suspended_one():
    ex = executor()
    launch(ex, task("b", "batch"), task("b", "batch", 1), group_id=1)
    launch(ex, task("l", "latency"), group_id=2, now=1.0)
    assert ex.state.load() == (1, 2, 1)


def test_validate_finds_a_suspended_latency_task_and_two_batch_tasks():
    ex = executor()
    b, b2, lat = task("b", "batch"), task("b", "batch", 1), task("l", "latency")
    launch(ex, b, b2, group_id=1)
    launch(ex, lat, group_id=2, now=1.0)
    ex.tasks[lat.key].state = S.SUSPENDED
    with pytest.raises(AssertionError):
        ex.state.validate()
    ex.tasks[lat.key].state = S.RUNNING
    ex.tasks[b2.key].state = S.SUSPENDED
    with pytest.raises(AssertionError, match="off the batch lane|but the runner has"):
        ex.state.validate()
