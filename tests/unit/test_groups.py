"""squall.services.scheduler.groups: placing every task of a group of micro-batches at once (Drizzle)."""

from __future__ import annotations

import pytest
from squall.common.plan import Aggregator, LogicalPlan, NarrowNode, RangeSource, ShuffleNode, SourceNode, UnionNode
from squall.services.scheduler.groups import GroupRun, PlannedJob, place_group
from squall.services.scheduler.membership import ExecutorRecord
from squall.services.scheduler.planner import plan_job

ADD = Aggregator(kind="reduce", fn="add")


def executors(n: int) -> list[ExecutorRecord]:
    return [ExecutorRecord(executor_id=f"e{i}", incarnation="1", peer=f"e{i}".encode(), data_address=f"tcp://e{i}:1", slots=1, pid=0, last_seen=0.0)
            for i in range(n)]


def planned(job_id: str, batch: int, *partitions: int) -> PlannedJob:
    """A job whose stages have these partition counts (source stage first)."""
    nodes: list = [SourceNode(source=RangeSource(start=0, stop=100, step=1, partitions=partitions[0])), NarrowNode(parent=0, fn="f")]
    for count in partitions[1:]:
        nodes.append(ShuffleNode(parent=len(nodes) - 1, partitions=count, aggregator=ADD))
    plan = plan_job(LogicalPlan(nodes=nodes))
    return PlannedJob(job_id, batch, plan, [s.spec.key() for s in plan.stages])


def test_partition_p_of_every_stage_goes_to_executor_p_mod_n():
    ex = executors(3)
    jobs = [planned("a", 0, 5, 4), planned("b", 1, 2, 7)]
    shares = place_group(jobs, ex)
    seen = []
    for eid, tasks in shares.items():
        for t in tasks:
            assert ex[t.partition % 3].executor_id == eid, t
            seen.append((t.job_id, t.stage_id, t.partition))
    expected = [(j.job_id, s.stage_id, p) for j in jobs for s in j.plan.stages for p in range(s.spec.partitions)]
    assert sorted(seen) == sorted(expected)  # every task placed exactly once
    assert len(seen) == 5 + 4 + 2 + 7


def test_map_tasks_push_to_the_executor_of_each_reduce_partition():
    ex = executors(3)
    job = planned("j", 0, 4, 5, 2)  # three stages: two shuffles
    tasks = [t for share in place_group([job], ex).values() for t in share]
    for t in tasks:
        if t.stage_id == 0:
            assert t.push_to == [ex[r % 3].data_address for r in range(5)]
        elif t.stage_id == 1:
            assert t.push_to == [ex[r % 3].data_address for r in range(2)]
        else:
            assert t.push_to == []  # the result stage pushes nothing
    assert {t.stage_id for t in tasks} == {0, 1, 2}


def test_descriptors_carry_batch_and_stage_key():
    ex = executors(2)
    jobs = [planned("a", 7, 2, 2), planned("b", 8, 2, 2)]
    for share in place_group(jobs, ex).values():
        for t in share:
            job = jobs[0] if t.job_id == "a" else jobs[1]
            assert t.batch == job.batch
            assert t.stage_key == job.stage_keys[t.stage_id] == job.plan.stages[t.stage_id].spec.key()
            assert t.attempt == 0


def test_reducers_are_listed_before_their_mappers_and_batches_in_order():
    ex = executors(2)
    jobs = [planned("a", 0, 3, 3, 3), planned("b", 1, 3, 3, 3)]
    for tasks in place_group(jobs, ex).values():
        order = [(t.batch, -t.stage_id) for t in tasks]
        assert order == sorted(order), order  # by batch, then later stages (readers) first
        for job_id in ("a", "b"):
            stages = [t.stage_id for t in tasks if t.job_id == job_id]
            assert stages == sorted(stages, reverse=True)
            assert stages[0] == 2 and stages[-1] == 0


def test_planned_job_records_the_stages_placed_on_each_executor():
    ex = executors(3)
    job = planned("j", 0, 1, 3)  # one mapper (on e0), three reducers (e0, e1, e2)
    assert job.placed == {}
    place_group([job], ex)
    assert job.placed == {"e0": {0, 1}, "e1": {1}, "e2": {1}}
    assert job.executors == {"e0", "e1", "e2"}


def test_executors_without_tasks_get_no_share():
    ex = executors(4)
    job = planned("j", 0, 2, 1)
    shares = place_group([job], ex)
    assert set(shares) == {"e0", "e1"}
    assert [(t.stage_id, t.partition) for t in shares["e0"]] == [(1, 0), (0, 0)]
    assert [(t.stage_id, t.partition) for t in shares["e1"]] == [(0, 1)]
    assert job.executors == {"e0", "e1"}


def test_placing_on_no_executors_is_an_error():
    with pytest.raises(ValueError, match="no executors"):
        place_group([planned("j", 0, 1)], [])


def test_planned_job_counts_result_partitions_and_knows_when_it_is_over():
    job = planned("j", 0, 4, 3)
    assert job.results_remaining == 3 and not job.over
    job.done = True
    assert job.over
    failed = planned("k", 1, 2)
    failed.failed = True
    assert failed.over and failed.results_remaining == 2


def test_group_run_stats():
    jobs = [planned("a", 0, 2), planned("b", 1, 2)]
    group = GroupRun(group_id=4, run_id="r", jobs=jobs, waiting={"e0"}, started=10.0, launch_bytes=300, code_bytes=50)
    stats = group.stats(12.5, executors=2)
    assert (stats.group_id, stats.jobs, stats.executors, stats.launch_bytes, stats.code_bytes) == (4, 2, 2, 300, 50)
    assert stats.duration == pytest.approx(2.5)
    assert group.stats(9.0, executors=1).duration == 0.0  # never negative


def test_per_batch_placement_puts_a_batchs_reducers_on_one_executor_rotating():
    ex = executors(3)
    jobs = [planned(f"j{b}", b, 4, 3, 2) for b in range(6)]  # two shuffles: two reading stages
    shares = place_group(jobs, ex, "per_batch")
    for eid, tasks in shares.items():
        for t in tasks:
            expected = ex[t.batch % 3] if t.stage_id > 0 else ex[t.partition % 3]
            assert expected.executor_id == eid, t
    for job in jobs:  # each mapper pushes everything to the one executor of its batch
        for t in (t for tasks in shares.values() for t in tasks if t.job_id == job.job_id and t.stage_id < 2):
            assert set(t.push_to) == {ex[job.batch % 3].data_address}
    counts = {eid: sum(1 for t in tasks if t.stage_id > 0) for eid, tasks in shares.items()}
    assert sorted(counts.values()) == [10, 10, 10]  # over the group, every executor gets its share


def test_auto_placement_spreads_small_groups_and_rotates_large_ones():
    ex = executors(4)
    small = place_group([planned("a", 0, 4, 4)], ex, "auto")
    assert {eid for eid, tasks in small.items() if any(t.stage_id == 1 for t in tasks)} == {"e0", "e1", "e2", "e3"}
    large = place_group([planned(f"j{b}", b, 4, 4) for b in range(4)], ex, "auto")
    for eid, tasks in large.items():
        assert {t.batch for t in tasks if t.stage_id == 1} == {int(eid[1:])}


def test_mappers_feeding_a_union_push_to_the_union_task_at_their_branchs_offset():
    ex = executors(3)
    nodes = [SourceNode(source=RangeSource(start=0, stop=100, step=1, partitions=2)), ShuffleNode(parent=0, partitions=2, aggregator=ADD),
             SourceNode(source=RangeSource(start=0, stop=50, step=1, partitions=3)), ShuffleNode(parent=2, partitions=4, aggregator=ADD),
             UnionNode(parents=[1, 3])]
    plan = plan_job(LogicalPlan(nodes=nodes))
    job = PlannedJob("j", 0, plan, [s.spec.key() for s in plan.stages])
    tasks = [t for share in place_group([job], ex, "spread").values() for t in share]
    first = {tuple(t.push_to) for t in tasks if t.stage_id == 0}
    second = {tuple(t.push_to) for t in tasks if t.stage_id == 1}
    assert first == {tuple(ex[p % 3].data_address for p in range(2))}  # union partitions 0, 1
    assert second == {tuple(ex[p % 3].data_address for p in range(2, 6))}  # union partitions 2..5: offset by the first branch
