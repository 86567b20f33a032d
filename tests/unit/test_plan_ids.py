"""Plan node ids and the driver's lineage graph: ids stable and content-made (the same operation on
the same parents is the same node), plan node lists as the driver always listed them, and deltas
that carry only the nodes the scheduler lacks, walking no further down than a node it has."""

from __future__ import annotations

import msgspec
import pytest
from squall.common import protocol
from squall.common.plan import (
    Aggregator,
    CoGroupNode,
    LogicalPlan,
    NarrowNode,
    NodeDef,
    PersistNode,
    PlanError,
    RangeSource,
    ShuffleNode,
    SourceNode,
    UnionNode,
    node_id,
)
from squall.common.protocol import JobSpec, SubmitJobs

from squall.lineage import PlanVertex, delta, from_nodes, plan_nodes

pytestmark = pytest.mark.timeout(30)

SOURCE = SourceNode(source=RangeSource(start=0, stop=10, step=1, partitions=2))


def chain(length: int, fn: str = "f") -> PlanVertex:
    vertex = PlanVertex(SOURCE)
    for _ in range(length):
        vertex = PlanVertex(NarrowNode(parent=0, fn=fn), [vertex])
    return vertex


class Asked(set[str]):
    """A set of ids that remembers which ids it was asked about."""

    def __init__(self, ids: set[str]) -> None:
        super().__init__(ids)
        self.asked: list[str] = []

    def __contains__(self, ident: object) -> bool:
        self.asked.append(str(ident))
        return super().__contains__(ident)


def test_an_id_is_the_same_for_the_same_operation_on_the_same_parents() -> None:
    source = PlanVertex(SOURCE)
    assert PlanVertex(SOURCE).id == source.id
    assert PlanVertex(NarrowNode(parent=0, fn="f"), [source]).id == PlanVertex(NarrowNode(parent=5, fn="f"), [PlanVertex(SOURCE)]).id
    assert len(source.id) == 32 and int(source.id, 16) >= 0
    # What a scheduler computes from the node as it arrives, decoded from the wire:
    mapped = PlanVertex(NarrowNode(parent=0, fn="f"), [source])
    arrived = msgspec.msgpack.decode(msgspec.msgpack.encode(mapped.definition()), type=NodeDef)
    assert node_id(arrived.node, arrived.parents) == mapped.id == arrived.id


def test_an_id_differs_when_the_content_or_the_parents_differ() -> None:
    source = PlanVertex(SOURCE)
    other_source = PlanVertex(SourceNode(source=RangeSource(start=0, stop=11, step=1, partitions=2)))
    f, g = (PlanVertex(NarrowNode(parent=0, fn=fn), [source]) for fn in ("f", "g"))
    assert f.id != g.id
    assert f.id != PlanVertex(NarrowNode(parent=0, fn="f"), [other_source]).id
    assert PlanVertex(UnionNode(parents=[0, 1]), [f, g]).id != PlanVertex(UnionNode(parents=[0, 1]), [g, f]).id
    hashed = PlanVertex(ShuffleNode(parent=0, partitions=2, aggregator=Aggregator(kind="group")), [f])
    assert hashed.id != PlanVertex(ShuffleNode(parent=0, partitions=3, aggregator=Aggregator(kind="group")), [f]).id
    assert chain(3).id != chain(4).id


def test_a_node_reading_the_wrong_number_of_parents_is_refused() -> None:
    with pytest.raises(PlanError, match="reads one node, not 2"):
        PlanVertex(NarrowNode(parent=0, fn="f"), [PlanVertex(SOURCE), PlanVertex(SOURCE)])
    with pytest.raises(PlanError, match="reads 2 nodes, not 1"):
        PlanVertex(UnionNode(parents=[0, 1]), [PlanVertex(SOURCE)])


def test_the_node_list_holds_each_node_once_parents_first_as_the_driver_always_listed_it() -> None:
    left = PlanVertex(NarrowNode(parent=0, fn="f"), [PlanVertex(SOURCE)])
    right = PlanVertex(NarrowNode(parent=0, fn="g"), [PlanVertex(SOURCE)])  # its own source vertex, the same node
    both = PlanVertex(CoGroupNode(parents=[0, 1], partitions=2, shuffled=[True, True]), [left, right])
    top = PlanVertex(UnionNode(parents=[0, 1]), [both, left])
    assert plan_nodes(top) == [
        SOURCE,
        NarrowNode(parent=0, fn="f"),
        NarrowNode(parent=0, fn="g"),
        CoGroupNode(parents=[1, 2], partitions=2, shuffled=[True, True]),
        UnionNode(parents=[3, 1]),
    ]
    assert from_nodes(plan_nodes(top)).id == top.id


def test_a_lineage_deeper_than_pythons_recursion_limit_is_walked() -> None:
    deep = chain(5_000)
    nodes = plan_nodes(deep)
    assert len(nodes) == 5_001 and nodes[-1] == NarrowNode(parent=4_999, fn="f")
    assert len(delta(deep, set(), set(), []).nodes) == 5_001


def test_a_delta_carries_only_new_nodes_and_walks_no_further_down_than_a_sent_one() -> None:
    old = chain(1_000)
    sent = Asked({vertex.id for vertex in _lineage(old)})
    new = PlanVertex(PersistNode(parent=0, dataset_id="d1"), [PlanVertex(NarrowNode(parent=0, fn="g"), [old])])
    sending: set[str] = set()
    step = delta(new, sent, sending, ["b"])
    assert [d.id for d in step.nodes] == [new.parents[0].id, new.id]
    assert step.nodes[0] == NodeDef(id=new.parents[0].id, node=NarrowNode(parent=0, fn="g"), parents=[old.id])
    assert step.root == new.id and step.broadcasts == ["b"]
    assert sending == {new.id, new.parents[0].id}
    assert set(sent.asked) <= {new.id, new.parents[0].id, old.id}, "it asked about nothing below the sent node"
    # A later job of the same submission names them by id; after the scheduler forgot all, whole again.
    assert delta(new, sent, sending, []).nodes == []
    assert len(delta(new, set(), set(), []).nodes) == 1_003


def test_a_job_carries_a_whole_plan_or_a_delta_never_both() -> None:
    tip = chain(2)
    whole = LogicalPlan(nodes=plan_nodes(tip))
    with_delta = JobSpec(job_id="j", delta=delta(tip, set(), set(), ["b"]))
    assert with_delta.plan.nodes == [] and with_delta.code_keys() == {"f", "b"}
    assert JobSpec(job_id="j", plan=whole).code_keys() == {"f"}
    raw = {"type": "SubmitJobs", "run_id": "r",
           "jobs": [{"job_id": "j", "plan": msgspec.to_builtins(whole), "delta": msgspec.to_builtins(with_delta.delta)}]}
    with pytest.raises(protocol.ProtocolError, match="both a whole plan and a plan delta"):
        protocol.decode([msgspec.msgpack.encode(raw)], 1 << 20)
    msg, _ = protocol.decode(protocol.encode(SubmitJobs(run_id="r", jobs=[with_delta])), 1 << 20)
    assert isinstance(msg, SubmitJobs) and msg.jobs == [with_delta]


def _lineage(tip: PlanVertex) -> list[PlanVertex]:
    found: dict[str, PlanVertex] = {}
    stack = [tip]
    while stack:
        vertex = stack.pop()
        if vertex.id not in found:
            found[vertex.id] = vertex
            stack.extend(vertex.parents)
    return list(found.values())
