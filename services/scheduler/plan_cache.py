"""The plan nodes drivers sent, kept by id so that a job's plan delta can name them: pure.

With plan deltas (Settings.plan_deltas) a driver sends each plan node once, and later jobs name
it by id; an iterative job whose lineage grows every round thus sends only its new nodes. The
cache keeps `plan_cache_nodes` nodes, least recently used first out, and no more data than one
message may carry (the records of parallelized collections, a sort's bounds): a driver that
parallelizes a new collection every job must not make the scheduler keep them all. A job that
names a node it no longer holds raises MissingNodes, and its driver sends that job again whole.

A node's id is the hash of its content and its parents' ids (plan.node_id), checked as each node
comes in: a driver's wrong id fails its job's plan, it never makes another job's plan wrong.

A job's plan source (plan_sources.PlanSource) walks the cache from the job's root, and stops at
persisted datasets the executors hold whole: it costs what the plan above them holds, whatever
the lineage below.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping

from squall.common.plan import (
    CollectionSource,
    HeldNode,
    LogicalPlan,
    NodeDef,
    PersistNode,
    PlanDelta,
    PlanError,
    PlanNode,
    ShuffleNode,
    SourceNode,
    node_id,
    node_parents,
    reparented,
)
from squall.common.protocol import JobSpec
from squall.services.scheduler.plan_sources import ListPlan, PlanSource

NAMED_IN_ERRORS = 5  # missing ids an error message names; the rest it counts


class MissingNodes(Exception):
    """A plan delta names nodes the cache does not hold (never sent, or dropped since): `ids`."""

    def __init__(self, ids: list[str]) -> None:
        self.ids = ids
        named = ", ".join(ids[:NAMED_IN_ERRORS])
        more = f" and {len(ids) - NAMED_IN_ERRORS} more" if len(ids) > NAMED_IN_ERRORS else ""
        super().__init__(f"the scheduler does not hold plan nodes {named}{more} (plan_cache_nodes)")


class PlanCache:
    """Node definitions by id, at most `limit` of them holding at most `data_limit` bytes of data
    blocks, the least recently used first out."""

    def __init__(self, limit: int, data_limit: int) -> None:
        if limit < 1:
            raise ValueError(f"a plan cache holds at least one node, not {limit}")
        self.limit = limit
        self.data_limit = data_limit
        self.nodes: OrderedDict[str, NodeDef] = OrderedDict()  # least recently used first
        self.data_bytes = 0  # of the nodes held

    def __len__(self) -> int:
        return len(self.nodes)

    def source(self, spec: JobSpec) -> PlanSource:
        """The job's plan as the scheduler holds it until dispatch: its whole plan, or its delta
        over the cache, whose new nodes the cache keeps from now on. Raises PlanError for a node
        whose id does not match its content or whose shape is wrong (the cache takes none of the
        delta's nodes then), and MissingNodes for the ids the delta names that neither it nor
        the cache holds."""
        if spec.delta is None:
            return ListPlan(spec.plan)
        delta = spec.delta
        own = self._checked(delta)
        missing = [parent for parent in _named(delta) if parent not in own and parent not in self.nodes]
        if missing:
            raise MissingNodes(list(dict.fromkeys(missing)))
        for parent in _named(delta):
            if parent in self.nodes:
                self.nodes.move_to_end(parent)  # in use again: it stays
        for ident, definition in own.items():
            if ident not in self.nodes:
                self.data_bytes += data_bytes(definition.node)
            self.nodes[ident] = definition
            self.nodes.move_to_end(ident)
        while len(self.nodes) > self.limit or (self.data_bytes > self.data_limit and self.nodes):
            _, dropped = self.nodes.popitem(last=False)
            self.data_bytes -= data_bytes(dropped.node)
        return DeltaPlan(self, delta.root, own, delta.broadcasts)

    def get(self, ident: str) -> NodeDef | None:
        """The node of this id, now the most recently used; None when the cache does not hold it."""
        definition = self.nodes.get(ident)
        if definition is not None:
            self.nodes.move_to_end(ident)
        return definition

    def _checked(self, delta: PlanDelta) -> dict[str, NodeDef]:
        """The delta's nodes by id, each checked: parent fields numbered 0, 1, ... as its parents
        are, no HeldNode (the scheduler makes those), the id its content and parents give."""
        own: dict[str, NodeDef] = {}
        for definition in delta.nodes:
            node = definition.node
            if isinstance(node, HeldNode):
                raise PlanError(f"plan node {definition.id} is a held dataset: only the scheduler puts those in a plan")
            if node_parents(node) != list(range(len(definition.parents))):
                raise PlanError(f"plan node {definition.id} does not number its {len(definition.parents)} parents 0, 1, ...")
            if node_id(node, definition.parents) != definition.id:
                raise PlanError(f"plan node {definition.id} is not what its id says (its content or parents differ)")
            own[definition.id] = definition
        return own


def data_bytes(node: PlanNode) -> int:
    """The bytes of data blocks a node carries: a collection's records, a range partitioner's bounds."""
    if isinstance(node, SourceNode) and isinstance(node.source, CollectionSource):
        return sum(len(block) for block in node.source.slices)
    if isinstance(node, ShuffleNode) and node.partitioner is not None:
        return len(node.partitioner.bounds)
    return 0


def _named(delta: PlanDelta) -> Iterable[str]:
    """The ids a delta refers to: its root, and its nodes' parents."""
    yield delta.root
    for definition in delta.nodes:
        yield from definition.parents


class DeltaPlan:
    """A job's plan sent as a delta: its nodes are the cache's, and its own new ones (kept here
    until dispatch, so a job's own nodes are never missing, however small the cache)."""

    def __init__(self, cache: PlanCache, root: str, own: Mapping[str, NodeDef], broadcasts: list[str]) -> None:
        self.cache = cache
        self.root = root
        self.own = own
        self._broadcasts = broadcasts

    @property
    def broadcasts(self) -> list[str]:
        return self._broadcasts

    def persisted(self, known: Mapping[str, int]) -> set[str]:
        found: set[str] = set()
        for _, node in self._walk(known, look_below_unknown=False):
            if isinstance(node, PersistNode) and node.dataset_id not in known:
                found.add(node.dataset_id)
        return found

    def resolve(self, known: Mapping[str, int]) -> LogicalPlan:
        nodes: list[PlanNode] = []
        where: dict[str, int] = {}
        for definition, node in self._walk(known, look_below_unknown=True):
            parents = [] if isinstance(node, HeldNode) else [where[p] for p in definition.parents]
            where[definition.id] = len(nodes)
            nodes.append(reparented(node, parents))
        return LogicalPlan(nodes=nodes, broadcasts=self._broadcasts)

    def _walk(self, known: Mapping[str, int], look_below_unknown: bool) -> list[tuple[NodeDef, PlanNode]]:
        """The nodes reached from the root, each after the nodes it reads (depth first, parents in
        order: the order the driver lists a plan in), with its node as the plan has it: a held
        persist node as a HeldNode, and nothing below it; below a persist node not in `known`,
        only if `look_below_unknown`. Raises MissingNodes when the cache has dropped one."""
        order: list[tuple[NodeDef, PlanNode]] = []
        seen: set[str] = set()
        missing: list[str] = []
        stack: list[tuple[str, NodeDef | None, PlanNode | None]] = [(self.root, None, None)]
        while stack:
            ident, definition, node = stack.pop()
            if definition is not None and node is not None:  # its parents are listed: now it
                order.append((definition, node))
                continue
            if ident in seen:
                continue
            seen.add(ident)
            definition = self.own.get(ident)
            if definition is None:
                definition = self.cache.get(ident)
            if definition is None:
                missing.append(ident)
                continue
            node = definition.node
            below = True
            if isinstance(node, PersistNode) and node.dataset_id in known:
                if known[node.dataset_id]:
                    node, below = HeldNode(dataset_id=node.dataset_id, partitions=known[node.dataset_id]), False
            elif isinstance(node, PersistNode) and not look_below_unknown:
                below = False  # not looked up yet: what is below may not be needed
            stack.append((ident, definition, node))
            if below:
                stack.extend((parent, None, None) for parent in reversed(definition.parents))
        if missing:
            raise MissingNodes(missing)
        return order
