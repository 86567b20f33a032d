"""A job's logical plan as the scheduler holds it until the job is dispatched: pure.

Where the driver sent the whole plan, it is a ListPlan. The scheduler asks it two things, in
rounds, before planning stages (state.py): which persisted datasets it reaches that the block
directory has not been asked about yet, and then the plan with every persisted dataset the
executors hold whole cut out of its lineage (a HeldNode in its place). Nothing below a held
dataset is walked, so a plan source that keeps its nodes by id (plan deltas) answers in time
proportional to the plan above the cuts, not to its whole lineage.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import msgspec
from squall.common.plan import CoGroupNode, HeldNode, LogicalPlan, PersistNode, PlanNode, SourceNode, UnionNode, node_parents


class PlanSource(Protocol):
    @property
    def broadcasts(self) -> list[str]: ...

    def persisted(self, known: Mapping[str, int]) -> set[str]:
        """The ids of the persisted datasets the plan reaches from its result without passing
        through one `known` holds whole, that are not in `known` (dataset id -> its partition
        count when held whole, 0 when not)."""
        ...

    def resolve(self, known: Mapping[str, int]) -> LogicalPlan:
        """The plan, with a HeldNode in place of each persist node of a dataset `known` holds
        whole, and without the nodes only those reach."""
        ...


class ListPlan:
    """A plan the driver sent whole: walking it is walking its list."""

    def __init__(self, plan: LogicalPlan) -> None:
        self.plan = plan

    @property
    def broadcasts(self) -> list[str]:
        return self.plan.broadcasts

    def persisted(self, known: Mapping[str, int]) -> set[str]:
        found: set[str] = set()
        for node in self._reached(known, look_below_unknown=False).values():
            if isinstance(node, PersistNode) and node.dataset_id not in known:
                found.add(node.dataset_id)
        return found

    def resolve(self, known: Mapping[str, int]) -> LogicalPlan:
        if not any(known.values()):
            return self.plan  # nothing held: nothing to cut (every job of a stream comes this way)
        nodes = self.plan.nodes
        if any(p >= index for index, node in enumerate(nodes) for p in node_parents(node)):
            return self.plan  # malformed: the planner says how
        reached = self._reached(known, look_below_unknown=True)
        if len(reached) == len(nodes) and not any(isinstance(n, HeldNode) for n in reached.values()):
            return self.plan  # nothing cut
        where: dict[int, int] = {}
        kept: list[PlanNode] = []
        for index in sorted(reached):
            where[index] = len(kept)
            kept.append(_renumbered(reached[index], where))
        return LogicalPlan(nodes=kept, broadcasts=self.plan.broadcasts)

    def _reached(self, known: Mapping[str, int], look_below_unknown: bool) -> dict[int, PlanNode]:
        """Index -> node for the nodes reached from the result: a held persist node as a HeldNode
        and nothing below it; below a persist node not in `known`, only if `look_below_unknown`."""
        nodes = self.plan.nodes
        reached: dict[int, PlanNode] = {}
        stack = [len(nodes) - 1] if nodes else []
        while stack:
            index = stack.pop()
            if index in reached:
                continue
            node = nodes[index]
            if isinstance(node, PersistNode) and node.dataset_id in known:
                if known[node.dataset_id]:
                    reached[index] = HeldNode(dataset_id=node.dataset_id, partitions=known[node.dataset_id])
                    continue
            elif isinstance(node, PersistNode) and not look_below_unknown:
                reached[index] = node
                continue  # not looked up yet: what is below may not be needed
            reached[index] = node
            stack.extend(p for p in node_parents(node) if 0 <= p < index)
        return reached


def _renumbered(node: PlanNode, where: Mapping[int, int]) -> PlanNode:
    if isinstance(node, SourceNode | HeldNode):
        return node
    if isinstance(node, UnionNode | CoGroupNode):
        return msgspec.structs.replace(node, parents=[where[p] for p in node.parents])
    return msgspec.structs.replace(node, parent=where[node.parent])
