"""squall.services.scheduler.state as executors join and leave a stateful stream: partitions are
handed over at a group boundary by a checkpoint of their old owner (handover.py), nothing is
replayed, and a decommissioned executor is let go once nothing of it is needed (decommission.py)."""

from __future__ import annotations

from collections import Counter

import pytest
from squall.common.core import ToShuffleMeta
from squall.common.protocol import (
    Decommission,
    DecommissionAnswer,
    ForgetExecutor,
    HandedOver,
    HandOverStates,
    JobDone,
    JobSpec,
    Leave,
    RegisterExecutor,
    StateCheckpointed,
    SubmitJobs,
)
from squall.common.settings import Settings
from squall.services.scheduler.events import ExecutorConnected
from squall.services.scheduler.state import SchedulerState

from tests.unit.scheduler_runs import DRIVER, checked, finish_group, groups, logs, lose, receive, sends, status, tick
from tests.unit.test_scheduler_keyed_state import CODE, owners, run_batches, stateful_plan

pytestmark = pytest.mark.timeout(10)


def state(*eids: str, **settings: object) -> SchedulerState:
    s = checked(Settings(shuffle_meta_address="tcp://meta:1", checkpoint_every_groups=100, **settings))  # type: ignore[arg-type]
    for eid in eids:
        join(s, eid)
    return s


def join(s: SchedulerState, eid: str) -> None:
    """An executor registers, and the watch connection to it comes up (it lives however long a test runs)."""
    receive(s, RegisterExecutor(executor_id=eid, incarnation=f"{eid}-1", data_address=f"tcp://{eid}:1", slots=1), 0.0, peer=eid.encode())
    s.handle(ExecutorConnected(executor_id=eid, joined=s.executors[eid].joined, now=0.0, stimulus_id="test"))


def submit(s: SchedulerState, first: int, count: int, run_id: str, now: float = 0.0, group_size: int = 0) -> list:
    jobs = [JobSpec(job_id=f"{run_id}.{b}", plan=stateful_plan(b)) for b in range(first, first + count)]
    msg = SubmitJobs(run_id=run_id, jobs=jobs, code=CODE, group_size=group_size or count, first_batch=first)
    return receive(s, msg, now, peer=DRIVER)


def handovers(actions) -> dict[str, list[tuple[str, int, int]]]:
    """The checkpoints asked of old owners, by executor."""
    return {a.peer.decode(): a.msg.partitions for a in actions if isinstance(getattr(a, "msg", None), HandOverStates)}


def checkpointed(s: SchedulerState, asked: dict[str, list[tuple[str, int, int]]], now: float = 0.5) -> list:
    actions = []
    for eid, partitions in asked.items():
        actions += receive(s, StateCheckpointed(executor_id=eid, checkpoints=partitions), now, peer=eid.encode())
    return actions


def test_a_joining_executor_gets_partitions_by_checkpoint_handover_without_replay():
    s = state("e0", "e1")
    run_batches(s, 0, 2, "g0")  # partitions 0, 2 on e0; 1, 3 on e1
    join(s, "e2")
    actions = submit(s, 2, 2, "g1")
    assert groups(actions) == []  # held until the old owner's checkpoint after batch 1 is in
    asked = handovers(actions)
    (moved,) = [p for parts in asked.values() for _, p, _ in parts]
    assert [b for parts in asked.values() for _, _, b in parts] == [1]
    old = s.book.states["sum"].owners[moved]
    assert list(asked) == [old]
    assert logs(actions, "state_rebalancing")
    actions = checkpointed(s, asked)
    (launch,) = groups(actions)
    assert [(r.partition, r.up_to) for r in launch["e2"].restores] == [(moved, 1)]  # exactly that checkpoint
    assert owners(launch)[moved] == "e2"
    assert sorted(Counter(owners(launch).values()).values()) == [1, 1, 2]  # spread evenly
    assert {t.batch for m in launch.values() for t in m.tasks} == {2, 3}  # no rebuild group, no replay
    assert all(t.attempt == 0 for m in launch.values() for t in m.tasks)
    assert sends(actions, HandedOver, peer=old.encode()) == [HandedOver(partitions=[("sum", moved)])]
    done = finish_group(s, launch)
    assert [m.job_id for m in sends(done, JobDone, peer=DRIVER)] == ["g1.2", "g1.3"]
    assert not logs(actions + done, "replaying")


def test_the_next_group_of_a_long_run_waits_for_the_group_in_flight_before_the_handover():
    s = state("e0", "e1")
    actions = submit(s, 0, 6, "r", group_size=2)  # three groups of two batches: two in flight of two batches: both in flight
    first, second = groups(actions)
    join(s, "e2")
    more = finish_group(s, first)  # the third group would go out now: a handover after batch 3 first
    assert groups(more) == []
    asked = handovers(more)
    assert {b for parts in asked.values() for _, _, b in parts} == {3}
    assert groups(checkpointed(s, asked)) == []  # batches 2 and 3 are still in flight
    (third,) = groups(finish_group(s, second))
    assert [r.up_to for m in third.values() for r in m.restores] == [3]


def test_decommission_moves_the_state_away_then_lets_the_executor_go_without_replay():
    s = state("e0", "e1", "e2")
    run_batches(s, 0, 1, "g0")
    actions = receive(s, Decommission(executor_id="e1"), 1.0, peer=b"admin")
    (answer,) = sends(actions, DecommissionAnswer, peer=b"admin")
    assert answer.accepted and answer.partitions == 1  # partition 1 of 4 over three executors
    assert [e.leaving for e in status(s, 1.0).executors] == [False, True, False]
    assert sends(tick(s, 1.1), Leave) == []  # it still owns a partition
    actions = submit(s, 1, 1, "g1", now=1.2)
    asked = handovers(actions)
    assert asked == {"e1": [("sum", 1, 0)]}
    actions = checkpointed(s, asked, now=1.3)
    (launch,) = groups(actions)
    assert "e1" not in launch  # no new work there
    assert sends(actions, HandedOver, peer=b"e1") == [HandedOver(partitions=[("sum", 1)])]
    gone = tick(s, 1.4)
    assert sends(gone, Leave, peer=b"e1") == [Leave(executor_id="e1")]
    assert [i.msg for i in gone if isinstance(i, ToShuffleMeta)] == [ForgetExecutor(executor_id="e1")]  # its blocks are forgotten
    assert "e1" not in s.executors and logs(gone, "executor_decommissioned")
    done = finish_group(s, launch) + lose(s, "e1", 1.5)  # its connection drops as it exits: no loss to handle
    assert [m.job_id for m in sends(done, JobDone, peer=DRIVER)] == ["g1.1"]
    assert not logs(done, "replaying") and not logs(done, "executor_lost")


def test_a_leaving_executor_waits_for_its_group_in_flight():
    s = state("e0", "e1")
    (launch,) = groups(submit(s, 0, 1, "g0"))
    receive(s, Decommission(executor_id="e1"), 1.0, peer=b"e1")
    s.book.states["sum"].owners = {p: "e0" for p in range(4)}  # nothing to hand over: only the group holds it
    assert sends(tick(s, 1.1), Leave) == []
    finish_group(s, launch)
    assert sends(tick(s, 1.2), Leave, peer=b"e1") == [Leave(executor_id="e1")]


def test_the_last_executor_taking_work_may_not_leave_and_an_unknown_one_is_named():
    s = state("e0", "e1")
    assert sends(receive(s, Decommission(executor_id="e0"), 0.0, peer=b"a"), DecommissionAnswer)[0].accepted
    (refused,) = sends(receive(s, Decommission(executor_id="e1"), 0.0, peer=b"a"), DecommissionAnswer)
    assert not refused.accepted and "last one taking work" in refused.reason
    (unknown,) = sends(receive(s, Decommission(executor_id="nope"), 0.0, peer=b"a"), DecommissionAnswer)
    assert not unknown.accepted and "'nope'" in unknown.reason


def test_executors_leaving_stay_when_the_last_other_one_is_lost_and_take_over_its_state():
    s = state("e0", "e1")
    run_batches(s, 0, 1, "g0")
    receive(s, Decommission(executor_id="e0"), 0.0, peer=b"e0")
    actions = lose(s, "e1", 1.0)
    assert logs(actions, "executors_staying") and not s.executors["e0"].leaving
    assert set(s.book.states["sum"].owners.values()) == {"e0"}  # e1's partitions are rebuilt there


def test_a_lost_executors_partitions_never_go_to_one_leaving():
    s = state("e0", "e1", "e2")
    run_batches(s, 0, 1, "g0")
    receive(s, Decommission(executor_id="e2"), 0.0, peer=b"e2")
    lose(s, "e0", 1.0)  # it owned partitions 0 and 3
    assert [s.book.states["sum"].owners[p] for p in (0, 3)] == ["e1", "e1"]


def test_a_handover_is_abandoned_when_its_old_owner_is_lost_and_recovery_takes_over():
    s = state("e0", "e1")
    run_batches(s, 0, 1, "g0")
    join(s, "e2")
    asked = handovers(submit(s, 1, 1, "g1"))
    (old,) = asked
    actions = lose(s, old, 1.0)
    assert logs(actions, "state_handover_abandoned") and not s.handovers.pending
    assert groups(actions)  # the held group goes out: recovery rebuilds what the lost owner had


def test_a_handover_whose_checkpoint_never_comes_is_abandoned_after_the_timeout():
    s = state("e0", "e1", handover_timeout=2.0)
    run_batches(s, 0, 1, "g0")
    join(s, "e2")
    assert handovers(submit(s, 1, 1, "g1", now=0.0))
    assert groups(tick(s, 1.0)) == []
    actions = tick(s, 2.5)
    assert logs(actions, "state_handover_abandoned")
    (launch,) = groups(actions)  # goes on with the owners it had
    assert all(not m.restores for m in launch.values())
    assert sorted(set(owners(launch).values())) == ["e0", "e1"]


def test_a_handover_to_an_executor_that_starts_leaving_is_abandoned_and_its_group_goes_on():
    s = state("e0", "e1")
    run_batches(s, 0, 1, "g0")
    join(s, "e2")
    assert handovers(submit(s, 1, 1, "g1"))  # partitions for e2, waiting for their checkpoints
    actions = receive(s, Decommission(executor_id="e2"), 1.0, peer=b"e2")
    assert logs(actions, "state_handover_abandoned")
    (launch,) = groups(actions)
    assert "e2" not in launch and all(not m.restores for m in launch.values())
