"""squall.services.scheduler.state in Drizzle mode, when things go wrong: a task fails, executors are
lost (one, all, or several at once), results go missing, the run cannot start."""

from __future__ import annotations

from squall.common.core import Send, ToShuffleMeta
from squall.common.protocol import (
    ForgetExecutor,
    ForgetJob,
    Heartbeat,
    JobDone,
    JobFailed,
    ReleaseJob,
    ResultPartition,
    RunDone,
)

from tests.unit.scheduler_runs import (
    CODE,
    DRIVER,
    depth,
    failed,
    group_done,
    groups,
    jobs_of,
    launches,
    lose,
    receive,
    results,
    sends,
    state,
    submit,
    tick,
    two_stage,
)


def test_task_failure_fails_only_its_batch_and_later_groups_still_run():
    s = state("e0", "e1")
    submitted = submit(s, jobs=4, group_size=2, plan=two_stage(maps=2, reduces=1))  # each job runs on e0 and e1
    launch = launches(submitted)
    actions = failed(s, "e1", "r.1", stage_id=0, partition=1)
    fail = sends(actions, JobFailed, peer=DRIVER)
    assert len(fail) == 1
    assert (fail[0].job_id, fail[0].kind, fail[0].batch, fail[0].stage_id, fail[0].partition) == ("r.1", "task", 1, 0, 1)
    assert fail[0].error_type == "ZeroDivisionError" and fail[0].traceback == "Traceback ..."
    assert "batch 1" in fail[0].message and "division by zero" in fail[0].message
    assert {a.peer for a in actions if isinstance(a, Send) and isinstance(a.msg, ReleaseJob)} == {b"e0", b"e1"}
    assert sends(actions, ReleaseJob, peer=b"e0") == [ReleaseJob(job_ids=["r.1"])]
    assert ToShuffleMeta(ForgetJob(job_ids=["r.1"])) in actions
    assert results(s, launch, "r.1") == []  # a failed job's late results are not relayed
    assert failed(s, "e0", "r.1") == []  # nor its further failures
    done = results(s, launch, "r.0")
    assert sends(done, JobDone) and not sends(done, JobFailed)
    later = groups(submitted)[1:] + groups(group_done(s, launch))
    assert [jobs_of(g) for g in later] == [{"r.2", "r.3"}]


def test_executor_lost_mid_group_replays_its_unfinished_jobs_on_the_survivors():
    s = state("e0", "e1", "e2")
    launch = launches(submit(s, jobs=3, group_size=3, plan=two_stage(maps=2, reduces=3)))  # e2 holds reducers only
    results(s, launch, "r.0")  # r.0 is complete before the loss
    receive(s, ResultPartition(executor_id="e2", job_id="r.1", partition=2), 1.0, payloads=[b"rows"])  # r.1 is not
    actions = lose(s, "e2", 1.0)
    assert ToShuffleMeta(ForgetExecutor(executor_id="e2")) in actions
    assert not sends(actions, JobFailed)  # nothing is lost: the survivors replay it
    assert not sends(actions, ReleaseJob, peer=b"e2")
    assert ReleaseJob(job_ids=["r.1", "r.2"], superseded=True) in sends(actions, ReleaseJob, peer=b"e0")
    (replay,) = groups(actions)
    assert set(replay) == {"e0", "e1"}  # spread over every survivor
    assert jobs_of(replay) == {"r.1~1", "r.2~1"}  # new attempts, under ids of the new epoch
    assert {t.attempt for m in replay.values() for t in m.tasks} == {1}
    assert results(s, launch, "r.1") == []  # the dead attempt's late results are stale
    done = results(s, replay, "r.1~1") + results(s, replay, "r.2~1")
    assert sorted(m.job_id for m in sends(done, JobDone, peer=DRIVER)) == ["r.1", "r.2"]  # once each, original ids
    end = group_done(s, replay)
    assert len(sends(end, RunDone, peer=DRIVER)) == 1 and not sends(end, JobFailed)


def test_single_survivor_replay_setting_keeps_replayed_state_on_one_executor():
    s = state("e0", "e1", "e2")
    s.book.replay = "single"
    s.book.register  # noqa: B018 - the book is what placement asks
    assert s.book.executor_lost("e9", ["e0", "e1"]) == []  # owned nothing: nothing moves


def test_losing_every_executor_fails_the_rest_of_the_run_with_no_executors():
    s = state("e0")
    submit(s, jobs=4, group_size=1)
    actions = tick(s, 10.0)  # e0 never beat again
    fails = sends(actions, JobFailed, peer=DRIVER)
    lost = min(depth(), 4)  # the jobs in flight were lost with it; the others never found an executor
    by_job = {f.job_id: (f.batch, f.kind) for f in fails}
    assert len(fails) == 4 and sorted(by_job) == [f"r.{i}" for i in range(4)]
    assert [by_job[f"r.{i}"] for i in range(4)] == [(i, "executor_lost" if i < lost else "no_executors") for i in range(4)]
    assert len(sends(actions, RunDone, peer=DRIVER)) == 1 and not s.runs


def test_executors_expiring_in_the_same_tick_get_no_new_group():
    s = state("e0", "e1", "e2")
    in_flight = groups(submit(s, jobs=depth() + 1, group_size=1))
    for launch in in_flight:  # e1 and e2 finish their shares (and report); e0 does not
        for eid in ("e1", "e2"):
            for t in launch[eid].tasks:
                if t.push_to == []:
                    receive(s, ResultPartition(executor_id=eid, job_id=t.job_id, partition=t.partition), 0.1, payloads=[b"r"])
        group_done(s, {"e1": launch["e1"], "e2": launch["e2"]}, now=0.1)
    receive(s, Heartbeat(executor_id="e2", incarnation="e2-1"), 0.5, peer=b"e2")
    actions = tick(s, 0.5)  # e0 and e1, silent since 0.0, expire together (a machine with both went away)
    assert set(s.executors) == {"e2"}
    launched = groups(actions)
    assert launched and all(set(g) == {"e2"} for g in launched)  # replays and the next batch: the survivor only
    assert not sends(actions, JobFailed)


def test_group_ending_with_results_missing_fails_the_job():
    s = state("e0")
    launch = launches(submit(s, jobs=1, group_size=1))
    actions = group_done(s, launch)
    fail = sends(actions, JobFailed)
    assert len(fail) == 1 and fail[0].kind == "task" and "missing" in fail[0].message
    assert sends(actions, RunDone)


def test_missing_code_refuses_the_run():
    s = state("e0")
    actions = submit(s, jobs=2, group_size=2, code={"fn": CODE["fn"]})
    fails = sends(actions, JobFailed, peer=DRIVER)
    assert [(f.job_id, f.kind, f.batch) for f in fails] == [("r.0", "missing_code", 0), ("r.1", "missing_code", 1)]
    assert "add" in fails[0].message
    assert sends(actions, RunDone, peer=DRIVER) == [RunDone(run_id="r")]
    assert not launches(actions) and not s.runs
    # code sent once is remembered: a later run may name it without sending it again
    assert launches(submit(s, jobs=1, group_size=1, run_id="r2", code={"add": CODE["add"]}))
    assert launches(submit(s, jobs=1, group_size=1, run_id="r3", code={}))


def test_no_executors_refuses_the_run():
    s = state()
    actions = submit(s, jobs=2, group_size=1)
    assert [(f.job_id, f.kind) for f in sends(actions, JobFailed)] == [("r.0", "no_executors"), ("r.1", "no_executors")]
    assert sends(actions, RunDone) == [RunDone(run_id="r")] and not s.runs
