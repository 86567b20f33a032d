"""squall.services.scheduler.state in Drizzle mode: runs dispatched a group at a time, results relayed,
one report per executor per group, plan caching, stats, cancel; and BSP runs for contrast.
(Failures: test_scheduler_group_failures.py.)

The scheduler may keep more than one group of a run in flight (GROUPS_IN_FLIGHT, so executors
never idle at a group boundary); these tests hold for any depth: a new group is dispatched only
when a group in flight completes, that is when every executor of it sent GroupDone."""

from __future__ import annotations

import pytest
from squall.common.core import Send, ToShuffleMeta
from squall.common.protocol import (
    CancelRun,
    ForgetJob,
    GroupDone,
    JobDone,
    LaunchTasks,
    RegisterExecutor,
    ReleaseJob,
    ResultPartition,
    RunDone,
    TaskFinished,
    encode,
)

from tests.unit.scheduler_runs import (
    CODE,
    DRIVER,
    depth,
    drive,
    finish_group,
    group_done,
    groups,
    jobs_of,
    launches,
    receive,
    results,
    sends,
    state,
    submit,
    two_stage,
)


def test_one_launch_group_per_executor_for_each_group_of_g_jobs():
    s = state("e0", "e1", "e2")
    actions = submit(s, jobs=7, group_size=2)
    dispatched = groups(actions)
    assert len(dispatched) == min(depth(), 4) >= 1
    assert len(actions) == 3 * len(dispatched)  # nothing else: no per-task messages, nothing to the driver yet
    for k, launch in enumerate(dispatched):
        assert set(launch) == {"e0", "e1", "e2"}
        first, second = f"r.{2 * k}", f"r.{2 * k + 1}"
        for eid, msg in launch.items():
            assert sorted((t.job_id, t.stage_id) for t in msg.tasks) == [(first, 0), (first, 1), (second, 0), (second, 1)]
            assert all(t.partition == int(eid[1]) and t.batch == int(t.job_id[2:]) for t in msg.tasks)
    assert not sends(actions, LaunchTasks)


def test_stages_and_code_ship_with_the_first_group_only():
    s = state("e0", "e1", "e2")
    (first, *later), _ = drive(s, submit(s, jobs=4, group_size=1))
    keys = {t.stage_key for m in first.values() for t in m.tasks}
    assert len(keys) == 2
    for msg in first.values():
        assert set(msg.stages) == keys and msg.code == CODE
        assert all(msg.stages[t.stage_key].partitions == 3 for t in msg.tasks)
    assert [jobs_of(g) for g in later] == [{"r.1"}, {"r.2"}, {"r.3"}]
    for launch in later:
        assert set(launch) == {"e0", "e1", "e2"}
        for msg in launch.values():
            assert msg.stages == {} and msg.code == {}  # the executors cache the plan
            assert {t.stage_key for t in msg.tasks} == keys


def test_result_partitions_are_held_until_the_job_is_done_then_sent_in_one_message():
    s = state("e0", "e1")
    launch = launches(submit(s, jobs=1, group_size=1, now=2.0, plan=two_stage(maps=2, reduces=2)))
    payload = memoryview(b"\x00block")
    first = receive(s, ResultPartition(executor_id="e1", job_id="r.0", partition=1), 2.5, payloads=[payload])
    assert first == []  # the result is not complete yet
    last = receive(s, ResultPartition(executor_id="e0", job_id="r.0", partition=0), 3.0, payloads=[b"\x00b0"])
    done = [a for a in last if isinstance(a, Send) and isinstance(a.msg, JobDone)]
    assert len(done) == 1 and done[0].peer == DRIVER
    assert done[0].msg == JobDone(job_id="r.0", elapsed=1.0, partitions=[0, 1], finished_at=3.0)
    assert done[0].payloads[0] == b"\x00b0" and done[0].payloads[1] is payload  # in partition order
    assert not sends(last, RunDone)  # the group is not over until every executor reported
    assert receive(s, ResultPartition(executor_id="e0", job_id="r.0", partition=0), 3.0, payloads=[b"x"]) == []
    assert receive(s, ResultPartition(executor_id="e0", job_id="nope", partition=0), 3.0, payloads=[b"x"]) == []
    for a in first + last + group_done(s, launch):
        if isinstance(a, Send):
            encode(a.msg, a.payloads)  # every action must be sendable


def test_a_duplicate_result_partition_never_completes_a_job_early():
    s = state("e0", "e1")
    launches(submit(s, jobs=1, group_size=1, plan=two_stage(maps=2, reduces=2)))
    assert receive(s, ResultPartition(executor_id="e1", job_id="r.0", partition=1), 1.0, payloads=[b"a"]) == []
    assert receive(s, ResultPartition(executor_id="e1", job_id="r.0", partition=1), 1.0, payloads=[b"a"]) == []
    assert receive(s, ResultPartition(executor_id="e1", job_id="r.0", partition=9), 1.0, payloads=[b"a"]) == []
    assert sends(receive(s, ResultPartition(executor_id="e0", job_id="r.0", partition=0), 1.0, payloads=[b"b"]), JobDone)


def test_next_group_waits_for_every_executors_group_done():
    s = state("e0", "e1", "e2")
    n = depth() * 2 + 2  # one group more than fit in flight
    in_flight = groups(submit(s, jobs=n, group_size=2))
    assert len(in_flight) == depth()
    launch = in_flight[0]
    assert not groups([a for j in ("r.0", "r.1") for a in results(s, launch, j)])  # results alone change nothing
    assert group_done(s, launch, skip={"e2"}) == []
    assert receive(s, GroupDone(group_id=999, executor_id="e2", tasks=1, busy=0.0), 1.0) == []  # unknown group
    actions = group_done(s, {"e2": launch["e2"]})
    nxt = groups(actions)
    assert len(nxt) == 1 and set(nxt[0]) == {"e0", "e1", "e2"}
    assert jobs_of(nxt[0]) == {f"r.{n - 2}", f"r.{n - 1}"}
    assert ToShuffleMeta(ForgetJob(job_ids=["r.0", "r.1"])) in actions
    for eid in ("e0", "e1", "e2"):
        assert sends(actions, ReleaseJob, peer=eid.encode()) == [ReleaseJob(job_ids=["r.0", "r.1"])]


def test_run_done_after_the_last_group_with_stats_per_group():
    s = state("e0", "e1", "e2")
    actions = submit(s, jobs=3, group_size=2, now=0.0)
    g1 = launches(actions)
    more = finish_group(s, g1, now=1.0)
    (g2,) = groups(actions)[1:] + groups(more)
    end = finish_group(s, g2, now=1.5)
    assert not launches(end)
    assert not sends(actions + more, RunDone)
    done = sends(end, RunDone, peer=DRIVER)
    assert len(done) == 1 and done[0].run_id == "r"
    stats = done[0].groups
    assert [g.group_id for g in stats] == [g1["e0"].group_id, g2["e0"].group_id]
    assert [g.jobs for g in stats] == [2, 1] and [g.executors for g in stats] == [3, 3]
    assert all(g.launch_bytes > 0 for g in stats)
    assert stats[0].code_bytes == 3 * sum(len(b) for b in CODE.values()) and stats[1].code_bytes == 0
    assert stats[0].launch_bytes > stats[1].launch_bytes  # the second carries no stages or code
    g2_started = 0.0 if depth() > 1 else 1.0
    assert [round(g.duration, 6) for g in stats] == [1.0, 1.5 - g2_started]
    assert not s.runs and not s.drizzle.prescheduled


def test_an_empty_run_is_done_at_once():
    s = state("e0")
    assert sends(submit(s, jobs=0, group_size=3)) == [RunDone(run_id="r")] and not s.runs


def test_cancel_run_stops_its_groups_in_flight_and_later_ones():
    s = state("e0", "e1")
    submitted = submit(s, jobs=depth() + 3, group_size=1)
    in_flight = groups(submitted)
    actions = receive(s, CancelRun(run_id="r"), 0.5)
    assert receive(s, CancelRun(run_id="unknown"), 0.5) == []
    assert not groups(actions) and not sends(actions, JobDone)  # nothing more runs (cancellation tests: test_scheduler_cancel.py)
    done = sends(actions, RunDone, peer=DRIVER)
    assert len(done) == 1 and done[0].groups == [] and not s.runs
    assert all(finish_group(s, launch, 1.0) == [] for launch in in_flight)  # late reports find nothing


def test_barrier_flag_and_new_executors_reach_the_next_group():
    s = state("e0")
    g1 = launches(submit(s, jobs=depth() + 1, group_size=1, barrier=True))
    assert g1["e0"].barrier
    receive(s, RegisterExecutor(executor_id="e1", incarnation="e1-1", data_address="tcp://e1:1", slots=1), 0.5, peer=b"e1")
    g2 = launches(finish_group(s, g1))
    assert g2["e0"].barrier and jobs_of(g2) == {f"r.{depth()}"}
    assert set(g2) == {"e0", "e1"}
    assert g2["e0"].stages == {} and g2["e0"].code == {}
    assert len(g2["e1"].stages) == 2 and g2["e1"].code == CODE  # a newcomer gets the plan once
    assert [t.push_to for t in g2["e1"].tasks if t.stage_id == 0] == [["tcp://e0:1", "tcp://e1:1", "tcp://e0:1"]]


def test_bsp_mode_runs_jobs_one_after_another():
    s = state("e0")
    actions = submit(s, jobs=2, group_size=2, preschedule=False, plan=two_stage(maps=1, reduces=1))
    assert not launches(actions)
    for job_id in ("r.0", "r.1"):
        tasks = [t for m in sends(actions, LaunchTasks) for t in m.tasks]
        assert [(t.job_id, t.stage_id) for t in tasks] == [(job_id, 0)]
        maps_done = receive(s, TaskFinished(executor_id="e0", job_id=job_id, stage_id=0, partition=0, attempt=0,
                                                 has_result=False, output_bytes=1, elapsed=0.0), 1.0, payloads=[])
        tasks = [t for m in sends(maps_done, LaunchTasks) for t in m.tasks]
        assert [(t.job_id, t.stage_id) for t in tasks] == [(job_id, 1)]
        actions = receive(s, TaskFinished(executor_id="e0", job_id=job_id, stage_id=1, partition=0, attempt=0,
                                               has_result=True, output_bytes=1, elapsed=0.0), 2.0, payloads=[b"rows"])
        assert [m.job_id for m in sends(actions, JobDone)] == [job_id]
    assert sends(actions, RunDone) == [RunDone(run_id="r", groups=[])] and not s.runs


def test_validate_names_a_prescheduled_job_out_of_step():
    s = state("e0", "e1")
    submit(s, jobs=2, group_size=1)
    s.validate()
    s.drizzle.prescheduled.pop("r.0")
    with pytest.raises(AssertionError, match="job r.0 in flight is not in prescheduled"):
        s.validate()
