"""The scheduler around persisted datasets: it asks the block directory before planning a job
that reaches one, cuts the lineage of those held whole, places readers on holders (telling them
where each block is), keeps mappers from pushing to readers of blocks, plans a job again when a
block is gone, and drops datasets when unpersisted or when their driver goes."""

from __future__ import annotations

import pytest
from squall.common.core import ToShuffleMeta
from squall.common.plan import (
    Aggregator,
    LogicalPlan,
    NarrowNode,
    PersistedInput,
    PersistNode,
    RangeSource,
    ShuffleNode,
    SourceNode,
)
from squall.common.protocol import (
    ForgetPersisted,
    LaunchGroup,
    LaunchTasks,
    LookupPersisted,
    PersistedLocations,
    RegisterExecutor,
    TaskFailed,
)
from squall.common.settings import Settings
from squall.services.scheduler.persisted_plans import MAX_REPLANS

from tests.unit.scheduler_runs import DRIVER, checked, driver_gone, finish_group, launches, receive, sends, state, submit, tick

pytestmark = pytest.mark.timeout(30)


def persisted_plan(dataset_id: str = "ds", partitions: int = 3) -> LogicalPlan:
    """range -> fn -> reduce by key into `partitions` -> persisted -> fn: the job reads the persisted dataset."""
    return LogicalPlan(nodes=[
        SourceNode(source=RangeSource(start=0, stop=100, step=1, partitions=2)),
        NarrowNode(parent=0, fn="fn"),
        ShuffleNode(parent=1, partitions=partitions, aggregator=Aggregator(kind="reduce", fn="add")),
        PersistNode(parent=2, dataset_id=dataset_id),
        NarrowNode(parent=3, fn="fn"),
    ])


def lookups(actions) -> list[LookupPersisted]:
    return [a.msg for a in actions if isinstance(a, ToShuffleMeta) and isinstance(a.msg, LookupPersisted)]


def answer(s, lookup: LookupPersisted, holders: dict[str, dict[int, list[str]]], partitions: dict[str, int], now: float = 0.0):
    return receive(s, PersistedLocations(request_id=lookup.request_id, holders=holders, partitions=partitions), now, peer=b"meta")


def tasks_of(launch: dict[str, LaunchGroup]):
    return [(eid, t) for eid, msg in launch.items() for t in msg.tasks]


def test_a_job_reaching_a_persisted_dataset_waits_for_the_directory_and_then_computes_what_no_one_holds():
    s = state("e1", "e2", "e3")
    actions = submit(s, 1, 1, plan=persisted_plan())
    assert launches(actions) == {}
    (lookup,) = lookups(actions)
    assert lookup.dataset_ids == ["ds"]
    launch = launches(answer(s, lookup, {}, {}))
    result_stage = [t for _, t in tasks_of(launch) if not t.push_to]
    assert len(result_stage) == 3 and all(t.persisted == {} for t in result_stage)
    spec = next(m.stages for m in launch.values() if m.stages)
    reader = [sp for sp in spec.values() if isinstance(sp.input, PersistedInput)]
    assert reader and reader[0].input.fallback is not None  # computed from its lineage, and kept


def test_a_dataset_held_whole_is_read_from_its_holders_and_its_lineage_is_not_planned():
    s = state("e1", "e2", "e3")
    (lookup,) = lookups(submit(s, 1, 1, plan=persisted_plan()))
    launch = launches(answer(s, lookup, {"ds": {0: ["e2"], 1: ["e3"], 2: ["e1"]}}, {"ds": 3}))
    placed = {t.partition: (eid, t) for eid, t in tasks_of(launch)}
    assert len(placed) == 3, "only the reading stage runs: the shuffle and the source below are cut"
    assert {p: eid for p, (eid, _) in placed.items()} == {0: "e2", 1: "e3", 2: "e1"}
    assert placed[0][1].persisted == {"ds": "tcp://e2:1"}
    spec = next(iter(next(m.stages for m in launch.values() if m.stages).values()))
    assert isinstance(spec.input, PersistedInput) and spec.input.fallback is None


def test_partly_held_the_held_partitions_are_read_and_mappers_push_only_to_the_others():
    s = state("e1", "e2", "e3")
    (lookup,) = lookups(submit(s, 1, 1, plan=persisted_plan()))
    launch = launches(answer(s, lookup, {"ds": {1: ["e3"]}}, {"ds": 3}))
    readers = {t.partition: (eid, t) for eid, t in tasks_of(launch) if not t.push_to}
    mappers = [t for _, t in tasks_of(launch) if t.push_to]
    assert readers[1][0] == "e3" and readers[1][1].persisted == {"ds": "tcp://e3:1"}
    assert readers[0][1].persisted == {} and readers[2][1].persisted == {}
    assert mappers and all(t.push_to[1] == "" and t.push_to[0] and t.push_to[2] for t in mappers)


def test_holders_that_are_gone_do_not_count():
    s = state("e1", "e2")
    (lookup,) = lookups(submit(s, 1, 1, plan=persisted_plan(partitions=2)))
    launch = launches(answer(s, lookup, {"ds": {0: ["e1"], 1: ["gone"]}}, {"ds": 2}))
    readers = {t.partition: t for _, t in tasks_of(launch) if not t.push_to}
    assert readers[0].persisted == {"ds": "tcp://e1:1"} and readers[1].persisted == {}


def test_a_block_gone_at_run_time_plans_the_job_again_and_past_the_bound_it_reads_no_blocks():
    s = state("e1", "e2")
    (lookup,) = lookups(submit(s, 1, 1, plan=persisted_plan(partitions=2)))
    launch = launches(answer(s, lookup, {"ds": {0: ["e1"], 1: ["e2"]}}, {"ds": 2}))
    for _ in range(MAX_REPLANS):
        eid, task = tasks_of(launch)[0]
        actions = receive(s, TaskFailed(executor_id=eid, job_id=task.job_id, stage_id=task.stage_id, partition=task.partition,
                                        attempt=task.attempt, kind="block", error_type="BlockLost", message="gone"), 1.0)
        assert not [m for m in sends(actions) if type(m).__name__ == "JobFailed"], "a lost block never fails the job"
        (lookup,) = lookups(actions)
        launch = launches(answer(s, lookup, {"ds": {0: ["e1"], 1: ["e2"]}}, {"ds": 2}))
        assert all(t.job_id != task.job_id for _, t in tasks_of(launch)), "a new attempt, under a new id"
    eid, task = tasks_of(launch)[0]
    actions = receive(s, TaskFailed(executor_id=eid, job_id=task.job_id, stage_id=task.stage_id, partition=task.partition,
                                    attempt=task.attempt, kind="block", error_type="BlockLost", message="gone"), 1.0)
    assert not lookups(actions), "past the bound the job is planned from lineage alone"
    launch = launches(actions)
    assert launch and all(t.persisted == {} for _, t in tasks_of(launch))
    job_id = tasks_of(launch)[0][1].job_id
    done = finish_group(s, launch)
    assert [m for m in sends(done, peer=DRIVER) if type(m).__name__ == "JobDone" and m.job_id == job_id.split("~")[0]]


def test_an_unanswered_lookup_plans_from_lineage_after_the_deadline():
    s = checked(Settings(heartbeat_interval=10.0, shuffle_lookup_timeout=0.5, shuffle_meta_address="tcp://meta:1"))
    receive(s, RegisterExecutor(executor_id="e1", incarnation="e1-1", data_address="tcp://e1:1", slots=1), 0.0, peer=b"e1")
    actions = submit(s, 1, 1, plan=persisted_plan(partitions=1))
    assert lookups(actions) and not launches(actions)
    assert not launches(tick(s, 0.4))
    late = tick(s, 0.6)
    assert launches(late) and [i for i in late if getattr(i, "event", "") == "block_lookup_timed_out"]


def test_unpersist_tells_the_directory_and_every_executor_and_later_plans_pass_through():
    s = state("e1", "e2")
    actions = receive(s, ForgetPersisted(dataset_ids=["ds"]), 0.0, peer=DRIVER)
    assert [a.msg for a in actions if isinstance(a, ToShuffleMeta)] == [ForgetPersisted(dataset_ids=["ds"])]
    assert {a.peer for a in actions if not isinstance(a, ToShuffleMeta) and isinstance(a.msg, ForgetPersisted)} == {b"e1", b"e2"}
    actions = submit(s, 1, 1, plan=persisted_plan())
    assert not lookups(actions), "an unpersisted dataset is not looked up"
    specs = [sp for m in launches(actions).values() for sp in m.stages.values()]
    assert specs and not any(isinstance(sp.input, PersistedInput) for sp in specs)


def test_a_drivers_datasets_are_dropped_when_it_goes():
    s = state("e1")
    (lookup,) = lookups(submit(s, 1, 1, plan=persisted_plan(partitions=1)))
    finish_group(s, launches(answer(s, lookup, {}, {})))
    assert s.tracked()["driver_datasets"] == 1
    actions = driver_gone(s, DRIVER, 2.0)
    assert [a.msg for a in actions if isinstance(a, ToShuffleMeta)] == [ForgetPersisted(dataset_ids=["ds"])]
    assert s.tracked()["driver_datasets"] == 0


def test_bsp_tasks_are_told_where_the_blocks_they_read_are():
    s = state("e1", "e2")
    (lookup,) = lookups(submit(s, 1, 1, plan=persisted_plan(partitions=2), preschedule=False))
    actions = answer(s, lookup, {"ds": {0: ["e1"], 1: ["e2"]}}, {"ds": 2})
    launched = [t for m in sends(actions, LaunchTasks) for t in m.tasks]
    assert {t.partition for t in launched} == {0, 1}
    assert all(set(t.persisted) == {"ds"} for t in launched)


def test_each_group_of_a_run_is_planned_around_the_blocks_held_when_it_goes_out():
    s = state("e1", "e2")
    (first,) = lookups(submit(s, 3, 1, plan=persisted_plan(partitions=2)))
    actions = answer(s, first, {}, {})
    assert len(launches(actions)) > 0
    (second,) = lookups(actions)  # the next group waits for its own answer, not the first's
    assert [g for g in (launches(actions),)] and second.request_id != first.request_id
    actions = answer(s, second, {"ds": {0: ["e1"], 1: ["e2"]}}, {"ds": 2})
    readers = [t for m in launches(actions).values() for t in m.tasks]
    assert readers and all(t.persisted for t in readers) and all(t.job_id == "r.1" for t in readers)
