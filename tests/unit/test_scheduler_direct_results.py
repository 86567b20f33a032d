"""squall.services.scheduler.state with results straight to the driver (SubmitJobs.result_to):
result tasks are told where the driver is, the scheduler learns completion from the groups'
reports, never sends a JobDone, fails a job whose results went missing, replays an unfinished
job after an executor's loss, and names in RunDone the jobs whose results went directly."""

from __future__ import annotations

from squall.common.protocol import GroupDone, JobDone, JobFailed, LaunchGroup, RunDone, encode
from squall.services.scheduler.direct_results import reachable_result_address

from tests.unit.scheduler_runs import DRIVER, groups, launches, lose, receive, sends, state, submit, two_stage

DRIVER_SOCKET = "tcp://10.0.0.9:5555"  # the executors here advertise tcp://e0:1, ...: not loopback


def report(s, launch: dict[str, LaunchGroup], now: float = 1.0, skip=(), drop: tuple[str, int] | None = None) -> list:
    """Every executor's GroupDone, listing the result partitions its tasks sent to the driver
    (all of its result tasks', except `drop`: (job, partition))."""
    actions = []
    for eid, msg in launch.items():
        if eid in skip:
            continue
        sent: dict[str, list[int]] = {}
        for t in msg.tasks:
            if t.result_to and (t.job_id, t.partition) != drop:
                sent.setdefault(t.job_id, []).append(t.partition)
        actions += receive(s, GroupDone(group_id=msg.group_id, executor_id=eid, tasks=len(msg.tasks), busy=0.0, results=sent), now)
    return actions


def test_only_result_tasks_are_told_where_the_driver_is():
    s = state("e0", "e1")
    launch = launches(submit(s, jobs=1, group_size=1, plan=two_stage(maps=2, reduces=2), result_to=DRIVER_SOCKET))
    tasks = [t for msg in launch.values() for t in msg.tasks]
    assert sorted((t.stage_id, t.result_to) for t in tasks) == [(0, ""), (0, ""), (1, DRIVER_SOCKET), (1, DRIVER_SOCKET)]


def test_without_an_address_or_in_bsp_mode_results_come_through_the_scheduler():
    s = state("e0", "e1")
    launch = launches(submit(s, jobs=1, group_size=1))
    assert all(not t.result_to for msg in launch.values() for t in msg.tasks)
    s2 = state("e0")
    submit(s2, jobs=1, group_size=1, preschedule=False, result_to=DRIVER_SOCKET)
    assert s2.runs["r"].result_to == ""  # BSP relays results: TaskFinished carries them


def test_a_loopback_driver_address_is_used_only_when_the_executors_are_on_loopback_too():
    s = state("e0", "e1")  # executors at tcp://e0:1 and tcp://e1:1: on another network than 127.0.0.1
    submit(s, jobs=1, group_size=1, result_to="tcp://127.0.0.1:5555")
    assert s.runs["r"].result_to == ""  # a driver reaching the scheduler through a published port: relayed
    assert reachable_result_address("tcp://127.0.0.1:5555", ["tcp://127.0.0.1:4001", "tcp://127.0.0.1:4002"]) == "tcp://127.0.0.1:5555"
    assert reachable_result_address("tcp://10.0.0.9:5555", ["tcp://10.0.0.7:1"]) == "tcp://10.0.0.9:5555"


def test_the_groups_reports_complete_the_jobs_and_run_done_names_them():
    s = state("e0", "e1")
    first = groups(submit(s, jobs=2, group_size=1, result_to=DRIVER_SOCKET))
    actions: list = []
    pending = list(first)
    while pending:
        more = report(s, pending.pop(0))
        actions += more
        pending += groups(more)
    assert not sends(actions, JobDone) and not sends(actions, JobFailed)
    (done,) = sends(actions, RunDone, peer=DRIVER)
    assert done.direct == ["r.0", "r.1"]
    assert s.received["ResultPartition"] == 0 and s.sent["JobDone"] == 0
    for a in actions:
        if hasattr(a, "msg"):
            encode(a.msg, getattr(a, "payloads", ()))


def test_a_job_whose_result_partition_was_never_sent_fails_when_every_executor_reported():
    s = state("e0", "e1")
    launch = launches(submit(s, jobs=1, group_size=1, plan=two_stage(maps=2, reduces=2), result_to=DRIVER_SOCKET))
    actions = report(s, launch, drop=("r.0", 1))
    (failed,) = sends(actions, JobFailed, peer=DRIVER)
    assert failed.job_id == "r.0" and "1 result partitions missing" in failed.message
    (done,) = sends(actions, RunDone, peer=DRIVER)
    assert done.direct == []


def test_a_job_whose_results_all_went_before_an_executor_died_is_not_replayed():
    s = state("e0", "e1", "e2")
    launch = launches(submit(s, jobs=1, group_size=1, plan=two_stage(maps=3, reduces=2), result_to=DRIVER_SOCKET))
    assert not [t for t in launch["e2"].tasks if t.result_to]  # e2 runs a map task only
    assert report(s, launch, skip={"e2"}) == []  # e0 and e1 sent both result partitions
    actions = lose(s, "e2", 2.0)
    assert not groups(actions) and not sends(actions, JobFailed)
    assert sends(actions, RunDone, peer=DRIVER)[0].direct == ["r.0"]


def test_jobs_not_all_sent_when_an_executor_dies_are_replayed_and_late_reports_of_the_old_attempt_ignored():
    s = state("e0", "e1", "e2")
    launch = launches(submit(s, jobs=2, group_size=2, result_to=DRIVER_SOCKET))
    # e0 and e1 report; e2 (holding a result partition of each job) dies before its report.
    assert report(s, launch, skip={"e2"}) == []
    replayed = groups(lose(s, "e2", 2.0))
    assert {t.job_id for msg in replayed[0].values() for t in msg.tasks} == {"r.0~1", "r.1~1"}
    assert all(t.result_to == DRIVER_SOCKET for msg in replayed[0].values() for t in msg.tasks if t.stage_id == 1)
    stale = GroupDone(group_id=launch["e2"].group_id, executor_id="e2", tasks=1, busy=0.0, results={"r.0": [2]})
    assert receive(s, stale, 2.5) == []
    actions = report(s, replayed[0], now=3.0)
    assert not sends(actions, JobFailed)
    assert sends(actions, RunDone, peer=DRIVER)[0].direct == ["r.0", "r.1"]
