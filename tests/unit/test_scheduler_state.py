"""squall.services.scheduler.state: membership, BSP job progress (runs submitted with preschedule off),
failures, placement and code caching. Drizzle mode is in test_scheduler_groups.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from squall.common import protocol
from squall.common.core import Send, ToShuffleMeta
from squall.common.plan import Aggregator, LogicalPlan, NarrowNode, RangeSource, ShuffleNode, SourceNode
from squall.common.settings import Settings
from squall.services.scheduler.events import WatchExecutors
from squall.services.scheduler.state import SchedulerState

from tests.unit.scheduler_runs import CheckedSchedulerState, checked, logs, lose, receive, status, tick

DRIVER = b"driver"
CODE = {"fn": b"pickled fn", "add": b"pickled add"}


def state() -> SchedulerState:
    # Executors here never get a watch connection: silence past join_timeout is their death.
    return checked(Settings(heartbeat_interval=0.1, heartbeat_misses=3, join_timeout=0.3, shuffle_meta_address="tcp://meta:1"))


def register(s: SchedulerState, eid: str, slots: int = 4, now: float = 0.0, peer: bytes | None = None, incarnation: int = 1) -> list:
    msg = protocol.RegisterExecutor(executor_id=eid, incarnation=f"{eid}-{incarnation}", data_address=f"tcp://{eid}:1", slots=slots)
    return receive(s, msg, now, peer=peer or eid.encode())


def plan(maps: int = 2, reduces: int = 2, fn: str = "fn") -> LogicalPlan:
    return LogicalPlan(nodes=[
        SourceNode(source=RangeSource(start=0, stop=100, step=1, partitions=maps)),
        NarrowNode(parent=0, fn=fn),
        ShuffleNode(parent=1, partitions=reduces, aggregator=Aggregator(kind="reduce", fn="add")),
    ])


def submit(s: SchedulerState, job_id: str = "j", p: LogicalPlan | None = None, now: float = 0.0, run_id: str | None = None) -> list:
    """A one-job BSP run (preschedule off), with all the code it needs."""
    msg = protocol.SubmitJobs(run_id=run_id or f"run-{job_id}", jobs=[protocol.JobSpec(job_id=job_id, plan=p or plan())], code=CODE, preschedule=False)
    return receive(s, msg, now, peer=DRIVER)


def job(s: SchedulerState, job_id: str = "j"):
    return s.bsp.jobs[job_id][1]


def sends(actions, kind=None, peer=None) -> list:
    return [a.msg for a in actions if isinstance(a, Send) and (kind is None or isinstance(a.msg, kind))
            and (peer is None or a.peer == peer)]


def launched(actions) -> list[tuple[str, object]]:
    """(executor_id, TaskDescriptor) for every task in protocol.LaunchTasks actions (peer == executor id)."""
    return [(a.peer.decode(), t) for a in actions if isinstance(a, Send) and isinstance(a.msg, protocol.LaunchTasks) for t in a.msg.tasks]


def finish(s: SchedulerState, eid: str, task, now: float = 1.0, result: bytes | None = None) -> list:
    msg = protocol.TaskFinished(executor_id=eid, job_id=task.job_id, stage_id=task.stage_id, partition=task.partition,
                       attempt=0, has_result=result is not None, output_bytes=0, elapsed=0.0)
    return receive(s, msg, now, payloads=[result] if result is not None else [])


def fail(s: SchedulerState, eid: str, task, kind: str = "task") -> list:
    msg = protocol.TaskFailed(executor_id=eid, job_id=task.job_id, stage_id=task.stage_id, partition=task.partition,
                     attempt=0, kind=kind, error_type="ZeroDivisionError", message="division by zero",
                     traceback="Traceback: line 1")
    return receive(s, msg, 1.0)


def run_maps(s: SchedulerState, job_id: str = "j", maps: int = 2, reduces: int = 2) -> list:
    """Submit a two-stage job and finish its map tasks; returns the launched reduce tasks."""
    reduce_tasks = []
    for eid, task in launched(submit(s, job_id, plan(maps, reduces))):
        reduce_tasks += launched(finish(s, eid, task))
    return reduce_tasks


def test_register_replies_registered_with_shuffle_meta_address():
    s = state()
    actions = register(s, "e1", slots=3)
    assert actions == [
        Send(b"e1", protocol.Registered(executor_id="e1", shuffle_meta_address="tcp://meta:1")),
        WatchExecutors({"e1": ("tcp://e1:1", 1)}),  # membership changed: the server watches its connection
    ]
    assert s.executors["e1"].slots == 3
    assert [i.executor_id for i in status(s, 0.0).executors] == ["e1"]


def test_heartbeat_from_unknown_executor_asks_to_reregister():
    s = state()
    assert receive(s, protocol.Heartbeat(executor_id="ghost", incarnation="ghost-1"), 0.0, peer=b"ghost") == [Send(b"ghost", protocol.Reregister(executor_id="ghost"))]
    register(s, "e1")
    stale = protocol.Heartbeat(executor_id="e1", incarnation="an-earlier-process")
    assert receive(s, stale, 0.0, peer=b"hb-socket") == [Send(b"hb-socket", protocol.Reregister(executor_id="e1"))]
    # beats come from the executor's heartbeat thread, on a socket of its own
    assert receive(s, protocol.Heartbeat(executor_id="e1", incarnation="e1-1"), 0.1, peer=b"hb-socket") == []
    assert s.executors["e1"].last_seen == 0.1


def test_tick_after_death_timeout_removes_the_executor():
    s = state()  # join timeout 0.3 s
    register(s, "e1", now=0.0)
    register(s, "e2", now=0.0)
    receive(s, protocol.Heartbeat(executor_id="e2", incarnation="e2-1"), 0.4, peer=b"e2")
    assert tick(s, 0.2) == []
    actions = tick(s, 0.5)
    assert ToShuffleMeta(protocol.ForgetExecutor(executor_id="e1")) in actions
    assert set(s.executors) == {"e2"}
    (lost,) = logs(actions, "executor_lost")
    assert lost.fields["executor"] == "e1" and "no heartbeat" in str(lost.fields["reason"])
    # and a later heartbeat of the dead executor is told to register again
    assert sends(receive(s, protocol.Heartbeat(executor_id="e1", incarnation="e1-1"), 0.6, peer=b"e1"), protocol.Reregister)


def test_retried_registration_is_not_a_loss():
    s = state()
    register(s, "e1", now=0.0)
    submit(s)
    actions = register(s, "e1", now=0.25, peer=b"e1-reconnected")  # same process, new connection
    assert sends(actions) == [protocol.Registered(executor_id="e1", shuffle_meta_address="tcp://meta:1")]
    assert not logs(actions, "executor_lost") and "j" in s.bsp.jobs
    assert s.executors["e1"].peer == b"e1-reconnected"  # replies go where it listens now
    assert tick(s, 0.5) == []  # registration refreshed last_seen


def test_registration_from_a_new_process_counts_as_a_loss():
    s = state()
    register(s, "e1")
    submit(s)
    actions = register(s, "e1", peer=b"e1-restarted", now=0.1, incarnation=2)
    assert [log.fields["executor"] for log in logs(actions, "executor_lost")] == ["e1"]
    failed = sends(actions, protocol.JobFailed)
    assert failed and failed[0].kind == "executor_lost"
    assert s.executors["e1"].peer == b"e1-restarted"
    assert len(s.executors["e1"].shipped) == 0 and not s.executors["e1"].shipped.code_uses  # a new process has no cache


def test_submit_without_executors_fails_with_no_executors():
    s = state()
    actions = submit(s)
    assert len(sends(actions)) == 2
    failed = sends(actions, protocol.JobFailed, peer=DRIVER)[0]
    assert failed.kind == "no_executors" and "j" not in s.bsp.jobs
    assert sends(actions, protocol.RunDone, peer=DRIVER) == [protocol.RunDone(run_id="run-j")]


def test_submit_bad_plan_or_duplicate_run_id_fails_with_plan():
    s = state()
    register(s, "e1")
    bad = submit(s, "bad", LogicalPlan(nodes=[]))
    assert sends(bad, protocol.JobFailed)[0].kind == "plan"
    assert sends(bad, protocol.RunDone) == [protocol.RunDone(run_id="run-bad")]  # nothing else to run
    submit(s, "j", run_id="r")
    dup = submit(s, "j2", run_id="r")
    assert sends(dup, protocol.JobFailed)[0].kind == "plan" and "already running" in sends(dup, protocol.JobFailed)[0].message
    assert sends(dup, protocol.JobFailed)[0].job_id == "j2" and not launched(dup)
    assert "j" in s.bsp.jobs  # the running one is untouched


def test_submit_launches_stage_zero_only():
    s = state()
    register(s, "e1", slots=8)
    actions = submit(s, "j", plan(maps=3, reduces=2))
    assert sends(actions, peer=DRIVER) == []
    assert not sends(actions, protocol.LaunchGroup)  # BSP: no group
    tasks = [t for _, t in launched(actions)]
    assert sorted((t.stage_id, t.partition) for t in tasks) == [(0, 0), (0, 1), (0, 2)]
    assert all(t.stage_key == job(s).stage_keys[0] and t.push_to == [] for t in tasks)


def test_bsp_reduce_stage_waits_for_every_map_task():
    s = state()
    register(s, "e1", slots=8)
    register(s, "e2", slots=8)
    maps = launched(submit(s, "j", plan(maps=3, reduces=2)))
    assert len(maps) == 3
    for eid, task in maps[:-1]:
        assert launched(finish(s, eid, task)) == []
    reduces = launched(finish(s, *maps[-1]))
    assert sorted((t.stage_id, t.partition) for _, t in reduces) == [(1, 0), (1, 1)]


def test_result_partitions_are_held_and_the_last_one_finishes_the_job():
    s = state()
    register(s, "e1", slots=4)
    register(s, "e2", slots=4)
    (e_a, t_a), (e_b, t_b) = run_maps(s)
    payload = memoryview(b"\x00block-0")
    first = finish(s, e_a, t_a, result=payload)
    assert not sends(first, protocol.JobDone)  # nothing goes to the driver before the result is whole
    last = finish(s, e_b, t_b, now=2.5, result=b"\x00block-1")
    done = [a for a in last if isinstance(a, Send) and isinstance(a.msg, protocol.JobDone)]
    assert len(done) == 1 and done[0].peer == DRIVER
    assert done[0].msg.job_id == "j" and done[0].msg.elapsed == 2.5
    assert done[0].msg.partitions == sorted([t_a.partition, t_b.partition])
    by_partition = dict(zip(done[0].msg.partitions, done[0].payloads, strict=True))
    assert by_partition[t_a.partition] is payload and by_partition[t_b.partition] == b"\x00block-1"
    assert sends(last, protocol.RunDone, peer=DRIVER) == [protocol.RunDone(run_id="run-j")]
    assert ToShuffleMeta(protocol.ForgetJob(job_ids=["j"])) in last
    released = {a.peer for a in last if isinstance(a, Send) and isinstance(a.msg, protocol.ReleaseJob)}
    assert released == {b"e1", b"e2"}
    assert "j" not in s.bsp.jobs and not s.runs
    for a in first + last:  # every action the server will send must protocol.encode
        if isinstance(a, Send):
            protocol.encode(a.msg, a.payloads)


def test_task_failure_fails_the_job_with_details():
    s = state()
    register(s, "e1")
    eid, task = launched(submit(s))[0]
    actions = fail(s, eid, task)
    failed = sends(actions, protocol.JobFailed, peer=DRIVER)[0]
    assert failed.kind == "task"
    assert failed.error_type == "ZeroDivisionError"
    assert failed.traceback == "Traceback: line 1"
    assert (failed.stage_id, failed.partition) == (0, task.partition)
    assert "division by zero" in failed.message
    assert ToShuffleMeta(protocol.ForgetJob(job_ids=["j"])) in actions
    assert sends(actions, protocol.ReleaseJob, peer=b"e1") == [protocol.ReleaseJob(job_ids=["j"])]
    assert "j" not in s.bsp.jobs


def test_fetch_failure_is_reported_as_fetch():
    s = state()
    register(s, "e1")
    eid, task = run_maps(s)[0]
    assert sends(fail(s, eid, task, kind="fetch"), protocol.JobFailed)[0].kind == "fetch"


def test_losing_an_executor_the_job_depends_on_fails_it():
    s = state()
    register(s, "e1", slots=1)
    register(s, "e2", slots=1)
    receive(s, protocol.Heartbeat(executor_id="e2", incarnation="e2-1"), 1.0, peer=b"e2")
    run_maps(s)  # map outputs now live on e1 and e2; reduce tasks are running
    actions = tick(s, 1.0)  # e1 silent since 0.0
    assert ToShuffleMeta(protocol.ForgetExecutor(executor_id="e1")) in actions
    failed = sends(actions, protocol.JobFailed, peer=DRIVER)
    assert len(failed) == 1 and failed[0].kind == "executor_lost"
    assert "e1" in failed[0].message
    assert sends(actions, protocol.ReleaseJob, peer=b"e2") == [protocol.ReleaseJob(job_ids=["j"])]
    assert sends(actions, protocol.ReleaseJob, peer=b"e1") == []


def test_losing_only_a_finished_map_output_still_fails_the_job():
    s = state()
    register(s, "e1", slots=1)
    register(s, "e2", slots=1)
    reduces = run_maps(s, maps=2, reduces=1)
    assert [eid for eid, _ in reduces] == ["e1"]  # e2 now only holds a finished map output
    actions = lose(s, "e2", 1.0)
    failed = sends(actions, protocol.JobFailed, peer=DRIVER)
    assert len(failed) == 1 and failed[0].kind == "executor_lost" and failed[0].stage_id == 0
    assert ToShuffleMeta(protocol.ForgetExecutor(executor_id="e2")) in actions


def test_losing_an_unrelated_executor_does_not_fail_the_job():
    s = state()
    register(s, "e1", slots=4)
    submit(s)
    register(s, "idle", slots=4, now=0.0)
    receive(s, protocol.Heartbeat(executor_id="e1", incarnation="e1-1"), 1.0, peer=b"e1")
    actions = tick(s, 1.0)
    assert sends(actions, protocol.JobFailed) == [] and "j" in s.bsp.jobs


def test_stale_task_reports_are_ignored_but_free_the_slot():
    s = state()
    register(s, "e1", slots=1)
    register(s, "e2", slots=1)
    actions = submit(s, "j", plan(maps=4))
    (e_a, t_a), (e_b, t_b) = launched(actions)
    # A report from the executor the task was not placed on changes nothing.
    assert launched(finish(s, e_b, t_a)) == []
    assert job(s).progress[0].remaining == {0, 1, 2, 3}
    # The job fails; e2's task still runs and later reports: ignored, but its slot is freed.
    fail(s, e_a, t_a)
    assert len(s.executors["e2"].running) == 1
    later = finish(s, e_b, t_b)
    assert sends(later) == [] and s.executors["e2"].running == set()
    assert receive(s, protocol.TaskFailed(executor_id="e2", job_id="nope", stage_id=0, partition=0, attempt=0,
                                    kind="task", error_type="E", message="m"), 1.0) == []


def test_slots_bound_the_tasks_in_flight():
    s = state()
    register(s, "e1", slots=1)
    nxt = launched(submit(s, "j", plan(maps=3)))
    seen = []
    for _ in range(3):
        assert len(nxt) == 1 and len(s.executors["e1"].running) == 1
        seen.append(nxt[0][1])
        nxt = launched(finish(s, *nxt[0]))
    assert sorted(t.partition for t in seen) == [0, 1, 2]


def test_least_loaded_executor_is_chosen():
    s = state()
    register(s, "e1", slots=4)
    register(s, "e2", slots=4)
    placed = launched(submit(s, "j", plan(maps=4)))
    assert sorted(eid for eid, _ in placed) == ["e1", "e1", "e2", "e2"]


def test_stage_code_is_sent_once_per_executor():
    s = state()
    register(s, "e1", slots=8)
    first = sends(submit(s, "j1"), protocol.LaunchTasks)
    key0 = job(s, "j1").stage_keys[0]
    assert len(first) == 1 and set(first[0].stages) == {key0}
    assert first[0].stages[key0] == job(s, "j1").plan.stages[0].spec
    assert first[0].code == CODE  # the map stage's op and its map-side combiner
    second = sends(submit(s, "j2"), protocol.LaunchTasks)
    assert len(second) == 1 and second[0].stages == {} and second[0].code == {}
    assert {t.stage_key for t in second[0].tasks} == {key0}
    # A newcomer has not seen the code: it gets it with its first task.
    register(s, "e2", slots=8)
    third = [a for a in submit(s, "j3") if isinstance(a.msg, protocol.LaunchTasks)]
    assert [a.peer for a in third] == [b"e2"]  # e1 is busier
    assert set(third[0].msg.stages) == {key0} and third[0].msg.code == CODE and len(third[0].msg.tasks) == 2


def test_result_task_without_payload_never_yields_an_unencodable_action():
    s = state()
    register(s, "e1", slots=4)
    eid, task = run_maps(s)[0]
    for a in finish(s, eid, task, result=None):  # a buggy or hostile executor
        if isinstance(a, Send):
            protocol.encode(a.msg, a.payloads)


def test_every_scheduler_under_test_validates_after_each_event():
    """Unit tests make schedulers with scheduler_runs.checked(), which runs validate() after every
    event; a SchedulerState made directly would skip the invariants."""
    here = Path(__file__).parent
    made = "SchedulerState" + "("
    direct = [p.name for p in sorted(here.glob("*.py")) if p.name != "scheduler_runs.py" and made in p.read_text()]
    assert direct == []
    assert isinstance(state(), CheckedSchedulerState)


def test_validate_names_what_disagrees():
    """validate() is a check that can fail: tables put out of step are named."""
    s = state()
    register(s, "e1")
    submit(s)
    s.validate()
    run, bsp_job = s.bsp.jobs.pop("j")
    with pytest.raises(AssertionError, match="BSP job j of run run-j is not in flight"):
        s.validate()
    s.bsp.jobs["j"] = (run, bsp_job)
    s.members.version += 1  # membership changed behind handle()'s back
    with pytest.raises(AssertionError, match="without a WatchExecutors"):
        s.validate()
    s.members.version -= 1
    run.bsp = None
    s.bsp.jobs.clear()
    s.bsp.pending.clear()
    with pytest.raises(AssertionError, match="run run-j has nothing queued or in flight"):
        s.validate()
