"""Priorities in the scheduler's core, without sockets: a run's priority reaches every task it
launches (groups, BSP tasks, replays, rebuilds), executors' heartbeat loads are kept and shown,
and placement follows Settings.lc_placement for latency runs (load_balance, random, locality)
while batch runs avoid executors busy with latency work; keyed-state partitions stay with their
owners under every policy."""

from __future__ import annotations

from collections import Counter

import pytest
from squall.common.core import Send
from squall.common.protocol import (
    Heartbeat,
    JobSpec,
    LaunchTasks,
    RegisterExecutor,
    SubmitJobs,
    TaskDescriptor,
    TaskFinished,
)
from squall.common.settings import Settings
from squall.services.scheduler.state import SchedulerState

from tests.unit.scheduler_runs import (
    DRIVER,
    checked,
    finish_group,
    groups,
    launches,
    lose,
    receive,
    sends,
    status,
    submit,
    two_stage,
)
from tests.unit.test_scheduler_keyed_state import CODE as STATE_CODE
from tests.unit.test_scheduler_keyed_state import stateful_plan


def state(*eids: str, policy: str = "load_balance", slots: int = 1) -> SchedulerState:
    settings = Settings(shuffle_meta_address="tcp://meta:1", reduce_placement="spread", lc_placement=policy)
    s = checked(settings)
    for eid in eids:
        receive(s, RegisterExecutor(executor_id=eid, incarnation=f"{eid}-1", data_address=f"tcp://{eid}:1", slots=slots), 0.0, peer=eid.encode())
    return s


def beat(s: SchedulerState, eid: str, latency: int = 0, batch: int = 0, suspended: int = 0, now: float = 0.5) -> None:
    receive(s, Heartbeat(executor_id=eid, incarnation=f"{eid}-1", latency_tasks=latency, batch_tasks=batch, suspended_tasks=suspended),
            now, peer=eid.encode())


def map_homes(launch) -> list[str]:
    """The executor of each partition of the first job's source stage, by partition."""
    homes = {t.partition: eid for eid, m in launch.items() for t in m.tasks if t.stage_id == 0}
    return [homes[p] for p in sorted(homes)]


def tasks_of(actions) -> list[TaskDescriptor]:
    return [t for g in groups(actions) for m in g.values() for t in m.tasks] + [t for m in sends(actions, LaunchTasks) for t in m.tasks]


# --- the priority travels ---------------------------------------------------------------------


@pytest.mark.parametrize("priority", ["latency", "batch"])
def test_a_runs_priority_reaches_every_task_of_its_groups_and_of_their_replays(priority):
    s = state("e0", "e1", "e2")
    launch = launches(submit(s, jobs=2, group_size=2, plan=two_stage(maps=3, reduces=3), priority=priority))
    assert {t.priority for m in launch.values() for t in m.tasks} == {priority}
    replayed = tasks_of(lose(s, "e2", 1.0))
    assert replayed and {t.attempt for t in replayed} == {1}
    assert {t.priority for t in replayed} == {priority}


@pytest.mark.parametrize("priority", ["latency", "batch"])
def test_a_bsp_runs_priority_reaches_every_task_it_launches(priority):
    s = state("e0", "e1", slots=4)
    first = sends(submit(s, jobs=1, group_size=1, preschedule=False, priority=priority, plan=two_stage(maps=2, reduces=2)), LaunchTasks)
    maps = [t for m in first for t in m.tasks]
    assert len(maps) == 2 and {t.priority for t in maps} == {priority}
    reducers = []
    for record in s.executors.values():
        for job_id, stage_id, partition in sorted(record.running):
            done = TaskFinished(executor_id=record.executor_id, job_id=job_id, stage_id=stage_id, partition=partition, attempt=0,
                                has_result=False, output_bytes=1, elapsed=0.0)
            reducers += tasks_of(receive(s, done, 1.0))
    assert len(reducers) == 2 and {(t.stage_id, t.priority) for t in reducers} == {(1, priority)}


def test_a_rebuild_of_keyed_state_carries_the_streams_priority():
    s = state("e0", "e1", "e2")
    jobs = [JobSpec(job_id="g0.0", plan=stateful_plan(0))]
    (launch,) = groups(receive(s, SubmitJobs(run_id="g0", jobs=jobs, code=STATE_CODE, group_size=1, priority="batch"), 0.0, peer=DRIVER))
    finish_group(s, launch)
    lose(s, "e1", 1.0)
    jobs = [JobSpec(job_id="g1.1", plan=stateful_plan(1))]
    msg = SubmitJobs(run_id="g1", jobs=jobs, code=STATE_CODE, group_size=1, first_batch=1, priority="batch")
    rebuild, nxt = groups(receive(s, msg, 0.0, peer=DRIVER))
    assert all(t.attempt > 0 for m in rebuild.values() for t in m.tasks)
    assert {t.priority for g in (rebuild, nxt) for m in g.values() for t in m.tasks} == {"batch"}


def test_submissions_without_a_priority_are_latency_work():
    s = state("e0", "e1")
    assert {t.priority for t in tasks_of(submit(s, jobs=1, group_size=1))} == {"latency"}


# --- loads ------------------------------------------------------------------------------------


def test_heartbeat_loads_are_kept_and_shown_in_the_cluster_status():
    s = state("e0", "e1")
    beat(s, "e1", latency=2, batch=3, suspended=1)
    shown = {e.executor_id: (e.latency_tasks, e.batch_tasks, e.suspended_tasks) for e in status(s, 1.0).executors}
    assert shown == {"e0": (0, 0, 0), "e1": (2, 3, 1)}
    beat(s, "e1")
    assert [(e.latency_tasks, e.batch_tasks, e.suspended_tasks) for e in status(s, 1.0).executors] == [(0, 0, 0)] * 2


# --- placement of latency runs ----------------------------------------------------------------


def test_load_balance_puts_latency_partitions_on_executors_with_the_least_batch_work_first():
    s = state("e0", "e1", "e2", "e3")
    for eid, batch in (("e0", 5), ("e1", 0), ("e2", 2), ("e3", 0)):
        beat(s, eid, batch=batch)
    launch = launches(submit(s, jobs=1, group_size=1, plan=two_stage(maps=6, reduces=1)))
    assert map_homes(launch) == ["e1", "e3", "e2", "e0", "e1", "e3"]  # p-th in (batch load, id) order, mod n


def test_load_balance_counts_batch_tasks_placed_since_the_last_heartbeat():
    s = state("e0", "e1", "e2")
    batch_run = launches(submit(s, jobs=1, group_size=1, run_id="b", priority="batch", plan=two_stage(maps=1, reduces=1)))
    assert set(batch_run) == {"e0"}  # no latency work anywhere: id order
    assert map_homes(launches(submit(s, jobs=1, group_size=1, run_id="l1", plan=two_stage(maps=3, reduces=1)))) == ["e1", "e2", "e0"]
    beat(s, "e0", batch=0)  # e0's beat tells its batch task is over
    assert map_homes(launches(submit(s, jobs=1, group_size=1, run_id="l2", plan=two_stage(maps=3, reduces=1)))) == ["e0", "e1", "e2"]


def test_locality_keeps_partition_p_on_executor_p_mod_n_whatever_the_loads():
    s = state("e0", "e1", "e2", policy="locality")
    beat(s, "e0", batch=9)
    beat(s, "e1", batch=4)
    launch = launches(submit(s, jobs=1, group_size=1, plan=two_stage(maps=5, reduces=1)))
    assert map_homes(launch) == ["e0", "e1", "e2", "e0", "e1"]


def random_homes(seed: str, groups_: int = 1) -> list[list[str]]:
    s = state(*(f"e{i}" for i in range(5)), policy="random")
    s.placement.seed = seed
    beat(s, "e0", batch=9)  # loads do not matter to this policy
    homes = []
    for g in range(groups_):
        launch = launches(submit(s, jobs=1, group_size=1, run_id=f"r{g}", plan=two_stage(maps=5, reduces=1)))
        homes.append(map_homes(launch))
    return homes


def test_random_placement_is_a_permutation_drawn_afresh_per_group_and_pinned_by_the_seed():
    eids = [f"e{i}" for i in range(5)]
    drawn = random_homes("a", groups_=8)
    assert all(sorted(homes) == eids for homes in drawn)  # every executor once: a permutation
    assert len({tuple(h) for h in drawn}) > 1  # a fresh order per group
    assert random_homes("a", groups_=8) == drawn  # the same seed: the same orders
    firsts = {tuple(random_homes(str(seed))[0]) for seed in range(8)}
    assert len(firsts) > 1  # the order varies with the seed


# --- placement of batch runs ------------------------------------------------------------------


def test_batch_runs_avoid_an_executor_with_latency_work_while_others_are_free():
    s = state("e0", "e1", "e2", policy="locality")  # the latency policy does not matter to batch runs
    beat(s, "e0", latency=2)
    launch = launches(submit(s, jobs=1, group_size=1, priority="batch", plan=two_stage(maps=2, reduces=2)))
    assert set(launch) == {"e1", "e2"}
    assert map_homes(launch) == ["e1", "e2"]


def test_batch_tasks_in_bsp_mode_avoid_an_executor_with_latency_work():
    s = state("e0", "e1", "e2")
    beat(s, "e1", latency=1)
    beat(s, "e0", latency=3)
    launched = [(a.peer.decode(), t) for a in submit(s, jobs=1, group_size=1, preschedule=False, priority="batch",
                                                       plan=two_stage(maps=2, reduces=1))
                if isinstance(a, Send) and isinstance(a.msg, LaunchTasks) for t in a.msg.tasks]
    assert sorted((t.partition, eid) for eid, t in launched) == [(0, "e2"), (1, "e1")]


def test_latency_tasks_in_bsp_mode_follow_load_balance_then_the_fewest_running():
    s = state("e0", "e1", "e2", slots=2)
    beat(s, "e0", batch=1)
    actions = submit(s, jobs=1, group_size=1, preschedule=False, plan=two_stage(maps=5, reduces=1))
    per_executor = Counter(a.peer.decode() for a in actions if isinstance(a, Send) and isinstance(a.msg, LaunchTasks) for _ in a.msg.tasks)
    assert per_executor == {"e1": 2, "e2": 2, "e0": 1}  # e0 (batch work) only once the others are full


# --- keyed state ------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["load_balance", "random", "locality"])
@pytest.mark.parametrize("priority", ["latency", "batch"])
def test_keyed_state_partitions_stay_with_their_owners_under_every_policy(policy, priority):
    s = state("e0", "e1", "e2", policy=policy)
    owners: list[dict[int, str]] = []
    for b in range(4):
        beat(s, f"e{b % 3}", latency=b + 1, batch=b + 1)  # loads change from group to group
        msg = SubmitJobs(run_id=f"g{b}", jobs=[JobSpec(job_id=f"g{b}.{b}", plan=stateful_plan(b))], code=STATE_CODE, group_size=1,
                         first_batch=b, priority=priority)
        (launch,) = groups(receive(s, msg, 0.0, peer=DRIVER))
        owners.append({t.partition: eid for eid, m in launch.items() for t in m.tasks if t.stage_id == 1})
        finish_group(s, launch)
    assert owners == [{0: "e0", 1: "e1", 2: "e2", 3: "e0"}] * 4  # the first owners (id order), kept


def test_replays_spread_over_the_survivors_in_id_order_whatever_the_loads():
    s = state("e0", "e1", "e2")
    beat(s, "e0", batch=5)
    launch = launches(submit(s, jobs=1, group_size=1, plan=two_stage(maps=3, reduces=3)))
    assert map_homes(launch) == ["e1", "e2", "e0"]  # a first attempt follows the loads
    (replay,) = groups(lose(s, "e1", 1.0))
    assert map_homes(replay) == ["e0", "e2", "e0"]  # a replay: partition p on survivor p mod n, as ever
