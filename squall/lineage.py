"""A dataset's lineage as the driver holds it: a graph of plan nodes, each knowing its parents.

Every node has an id (plan.node_id: its content and its parents' ids), so the same operation on
the same datasets is the same node wherever it is reached: a dataset used on both sides of a
join is planned once. A job's plan is a walk of the graph from the dataset's node: the whole of
it as a LogicalPlan, or (plan deltas) only the nodes the scheduler has not had from this driver,
a walk that stops at nodes it has, so it costs what is new, not the length of the lineage.
Walks are iterative: an iterative job's lineage may be many thousands of nodes deep.
"""

from __future__ import annotations

from collections.abc import Container, Sequence

from squall.common.plan import NodeDef, PlanDelta, PlanNode, node_id, node_parents, reparented


class PlanVertex:
    """A plan node with the vertices it reads, in order, and its id. `node` numbers its parent
    fields 0, 1, ... as `parents` are (whatever the node given numbered them)."""

    __slots__ = ("id", "node", "parents")

    def __init__(self, node: PlanNode, parents: Sequence[PlanVertex] = ()) -> None:
        self.node: PlanNode = reparented(node, range(len(parents)))
        self.parents: tuple[PlanVertex, ...] = tuple(parents)
        self.id: str = node_id(self.node, [parent.id for parent in self.parents])

    def __repr__(self) -> str:
        return f"<PlanVertex {type(self.node).__name__} {self.id}>"

    def definition(self) -> NodeDef:
        """The node as a plan delta carries it."""
        return NodeDef(id=self.id, node=self.node, parents=[parent.id for parent in self.parents])


def from_nodes(nodes: Sequence[PlanNode]) -> PlanVertex:
    """The vertex of the last of `nodes`, a plan's int-indexed node list (parents before the
    nodes that read them)."""
    if not nodes:
        raise ValueError("a dataset has at least one plan node")
    vertices: list[PlanVertex] = []
    for node in nodes:
        vertices.append(PlanVertex(node, [vertices[parent] for parent in node_parents(node)]))
    return vertices[-1]


def plan_nodes(tip: PlanVertex) -> list[PlanNode]:
    """The lineage of `tip` as a plan's node list: each node after those it reads, `tip` last,
    each node once, parent fields as list indices."""
    index: dict[str, int] = {}
    nodes: list[PlanNode] = []
    for vertex in _post_order(tip, ()):
        index[vertex.id] = len(nodes)
        nodes.append(reparented(vertex.node, [index[parent.id] for parent in vertex.parents]))
    return nodes


def delta(tip: PlanVertex, sent: Container[str], sending: set[str], broadcasts: list[str]) -> PlanDelta:
    """The plan delta of a job returning `tip`: the nodes of its lineage in neither `sent` (the
    scheduler has them) nor `sending` (an earlier job of the same submission carries them),
    whose ids are added to `sending`. The walk goes no further down than such a node."""
    fresh = _post_order(tip, _Either(sent, sending))
    sending.update(vertex.id for vertex in fresh)
    return PlanDelta(nodes=[vertex.definition() for vertex in fresh], root=tip.id, broadcasts=broadcasts)


class _Either:
    """Ids in either of two containers (without copying either)."""

    def __init__(self, first: Container[str], second: Container[str]) -> None:
        self.first = first
        self.second = second

    def __contains__(self, ident: object) -> bool:
        return ident in self.first or ident in self.second


def _post_order(tip: PlanVertex, skip: Container[str]) -> list[PlanVertex]:
    """The vertices reached from `tip` without going through one in `skip`, each once, after
    those it reads (depth first, parents in order)."""
    order: list[PlanVertex] = []
    seen: set[str] = set()
    stack: list[tuple[PlanVertex, bool]] = [(tip, False)]
    while stack:
        vertex, expanded = stack.pop()
        if expanded:
            order.append(vertex)
            continue
        if vertex.id in seen or vertex.id in skip:
            continue
        seen.add(vertex.id)
        stack.append((vertex, True))
        stack.extend((parent, False) for parent in reversed(vertex.parents))
    return order
