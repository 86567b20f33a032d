"""ListPlan: the persisted datasets a plan reaches, round by round, and the plan with those held
whole cut out of its lineage."""

from __future__ import annotations

import pytest
from squall.common.plan import (
    Aggregator,
    CoGroupNode,
    HeldNode,
    LogicalPlan,
    NarrowNode,
    PersistNode,
    RangeSource,
    ShuffleNode,
    SourceNode,
)
from squall.services.scheduler.plan_sources import ListPlan
from squall.services.scheduler.planner import plan_job

pytestmark = pytest.mark.timeout(30)

SOURCE = SourceNode(source=RangeSource(start=0, stop=100, step=1, partitions=2))


def chain(iterations: int) -> LogicalPlan:
    """An iterative job's lineage: links persisted; each pass joins links with the last ranks,
    reduces by key, and persists the new ranks."""
    nodes: list = [SOURCE, NarrowNode(parent=0, fn="pair"), ShuffleNode(parent=1, partitions=2, aggregator=Aggregator(kind="group")),
                   PersistNode(parent=2, dataset_id="links"), NarrowNode(parent=3, fn="one"), PersistNode(parent=4, dataset_id="ranks0")]
    ranks = 5
    for i in range(1, iterations + 1):
        nodes.append(CoGroupNode(parents=[3, ranks], partitions=2, shuffled=[False, False]))
        nodes.append(NarrowNode(parent=len(nodes) - 1, fn="spread"))
        nodes.append(ShuffleNode(parent=len(nodes) - 1, partitions=2, aggregator=Aggregator(kind="reduce", fn="add")))
        nodes.append(PersistNode(parent=len(nodes) - 1, dataset_id=f"ranks{i}"))
        ranks = len(nodes) - 1
    nodes.append(NarrowNode(parent=ranks, fn="count"))
    return LogicalPlan(nodes=nodes)


def test_each_round_asks_only_about_the_persisted_datasets_at_the_frontier():
    plan = ListPlan(chain(50))
    assert plan.persisted({}) == {"ranks50"}
    assert plan.persisted({"ranks50": 0}) == {"links", "ranks49"}
    assert plan.persisted({"ranks50": 0, "links": 2, "ranks49": 2}) == set()
    assert plan.persisted({"ranks50": 2}) == set()


def test_held_datasets_cut_the_lineage_so_a_long_chain_plans_as_a_short_one():
    long, short = ListPlan(chain(100)), ListPlan(chain(1))
    cut_long = long.resolve({"ranks100": 0, "links": 2, "ranks99": 2})
    cut_short = short.resolve({"ranks1": 0, "links": 2, "ranks0": 2})
    assert len(cut_long.nodes) == len(cut_short.nodes) == 7
    assert sum(isinstance(n, HeldNode) for n in cut_long.nodes) == 2
    assert [type(s.spec.input).__name__ for s in plan_job(cut_long).stages] == ["CoGroupInput", "PersistedInput"]


def test_unknown_datasets_are_resolved_as_not_held():
    plan = ListPlan(chain(3))
    assert plan.resolve({}) is plan.plan  # nothing cut
    assert plan.resolve({"ranks3": 0, "links": 0}).nodes == plan.plan.nodes


def test_a_malformed_plan_is_left_for_the_planner_to_refuse():
    bad = LogicalPlan(nodes=[SOURCE, NarrowNode(parent=5, fn="x"), PersistNode(parent=1, dataset_id="d")])
    assert ListPlan(bad).resolve({"d": 0}) is bad
