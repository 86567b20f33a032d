"""Keyed state for streams: the planner's rule, the update itself, batch order, and placement."""

from __future__ import annotations

import pytest
from squall.common.plan import Aggregator, LogicalPlan, NarrowNode, PlanError, RangeSource, ShuffleNode, SourceNode, StateNode
from squall.common.protocol import LaunchGroup, PushBlocks, TaskDescriptor
from squall.services.executor.instructions import RunTask
from squall.services.executor.tasks import TaskOutput, update_state
from squall.services.scheduler.groups import PlannedJob, place_group
from squall.services.scheduler.membership import ExecutorRecord
from squall.services.scheduler.planner import plan_job

from tests.unit.executor_fixtures import Executor

GROUP = Aggregator(kind="group")


def stateful_plan() -> LogicalPlan:
    return LogicalPlan(nodes=[
        SourceNode(source=RangeSource(start=0, stop=10, step=1, partitions=2)),
        NarrowNode(parent=0, fn="pairs"),
        ShuffleNode(parent=1, partitions=2, aggregator=GROUP),
        StateNode(parent=2, fn="update", state_id="s1"),
        NarrowNode(parent=3, fn="after"),
    ])


def test_the_state_step_lands_in_the_reading_stage_before_its_ops():
    reduce_stage = plan_job(stateful_plan()).stages[1].spec
    assert reduce_stage.state is not None and reduce_stage.state.state_id == "s1"
    assert reduce_stage.ops == ["after"]
    assert "update" in reduce_stage.code_keys()


@pytest.mark.parametrize("parent_kind", ["narrow", "reduce"])
def test_state_anywhere_but_right_after_a_grouping_shuffle_is_a_plan_error(parent_kind: str):
    nodes = stateful_plan().nodes[:3]
    if parent_kind == "narrow":
        nodes = [*nodes, NarrowNode(parent=2, fn="x"), StateNode(parent=3, fn="u", state_id="s")]
    else:
        nodes = [nodes[0], nodes[1], ShuffleNode(parent=1, partitions=2, aggregator=Aggregator(kind="reduce", fn="add")),
                 StateNode(parent=2, fn="u", state_id="s")]
    with pytest.raises(PlanError, match="grouping shuffle"):
        plan_job(LogicalPlan(nodes=nodes))


def test_update_state_emits_new_states_and_none_forgets_a_key():
    table = {"a": 1, "b": 5}
    out = update_state([("a", [2, 3]), ("b", [0]), ("c", [7])], table, lambda vs, old: None if vs == [0] else (old or 0) + sum(vs))
    assert out == [("a", 6), ("c", 7)]
    assert table == {"a": 6, "c": 7}


def test_a_failing_update_leaves_the_state_as_it_was():
    table = {"a": 1}

    def boom(values, old):  # type: ignore[no-untyped-def]
        if values == ["bad"]:
            raise ValueError("bad")
        return (old or 0) + len(values)

    with pytest.raises(ValueError):
        update_state([("a", [1, 2]), ("z", ["bad"])], table, boom)
    assert table == {"a": 1}  # nothing half-applied: a replay starts from the same state


def test_batch_b_of_a_state_waits_for_batch_b_minus_1_on_the_executor():
    reduce_spec = plan_job(stateful_plan()).stages[1].spec
    ex = Executor()
    tasks = [TaskDescriptor(job_id=f"j{b}", stage_id=1, partition=0, stage_key=reduce_spec.key(), batch=b) for b in (0, 1)]
    ex.launch_group(LaunchGroup(group_id=1, tasks=tasks, stages={reduce_spec.key(): reduce_spec}), 0.0)

    def complete(job: str) -> list:
        actions = []
        for m in (0, 1):
            actions += ex.pushed(PushBlocks(job_id=job, shuffle_id=2, map_partition=m, reduce_partitions=[0]), [b"blk"], 0.0)
        return [a.task.batch for a in actions if isinstance(a, RunTask)]

    assert complete("j1") == []  # batch 1's inputs are in, but batch 0 has not run
    assert complete("j0") == [0]
    after = ex.task_done(tasks[0], TaskOutput(blocks=[b"r"], is_result=True), 1.0)
    assert [a.task.batch for a in after if isinstance(a, RunTask)] == [1]


def test_stateful_stages_stay_spread_even_when_a_group_rotates_reducers():
    plan = plan_job(stateful_plan())
    executors = [ExecutorRecord(executor_id=f"e{i}", incarnation="1", peer=b"", data_address=f"tcp://e{i}:1", slots=1, pid=0, last_seen=0.0)
                 for i in range(2)]
    jobs = [PlannedJob(f"j{b}", b, plan, [s.spec.key() for s in plan.stages]) for b in range(4)]
    shares = place_group(jobs, executors, "per_batch")
    for eid, tasks in shares.items():
        for t in tasks:
            if t.stage_id == 1:
                assert executors[t.partition % 2].executor_id == eid  # partition p always on the same executor
