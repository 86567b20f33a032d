"""The scheduler's plan cache, driven directly: nodes kept by id up to a bound, least recently used
first out; a node whose id does not match its content refused; missing nodes named; and a job's
plan read from the cache as the whole plan would be (ListPlan), for any persisted datasets held
whole, walking nothing below them."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from squall.common.plan import (
    Aggregator,
    CoGroupNode,
    CollectionSource,
    HeldNode,
    LogicalPlan,
    NarrowNode,
    NodeDef,
    PersistNode,
    PlanDelta,
    PlanError,
    RangeSource,
    ShuffleNode,
    SourceNode,
    UnionNode,
)
from squall.common.protocol import JobSpec
from squall.services.scheduler.plan_cache import MissingNodes, PlanCache
from squall.services.scheduler.plan_sources import ListPlan

from squall.lineage import PlanVertex, delta, from_nodes, plan_nodes

pytestmark = pytest.mark.timeout(60)
DATA_LIMIT = 1 << 20


def source(stop: int = 10, partitions: int = 2) -> PlanVertex:
    return PlanVertex(SourceNode(source=RangeSource(start=0, stop=stop, step=1, partitions=partitions)))


def narrow(parent: PlanVertex, fn: str = "f") -> PlanVertex:
    return PlanVertex(NarrowNode(parent=0, fn=fn), [parent])


def persist(parent: PlanVertex, dataset_id: str) -> PlanVertex:
    return PlanVertex(PersistNode(parent=0, dataset_id=dataset_id), [parent])


def job(tip: PlanVertex, sent: set[str] | None = None, broadcasts: list[str] | None = None) -> JobSpec:
    return JobSpec(job_id="j", delta=delta(tip, sent or set(), set(), broadcasts or []))


def test_a_whole_plan_is_a_list_plan_and_touches_no_cache() -> None:
    cache = PlanCache(10, DATA_LIMIT)
    plan = LogicalPlan(nodes=plan_nodes(narrow(source())))
    held = cache.source(JobSpec(job_id="j", plan=plan))
    assert isinstance(held, ListPlan) and held.resolve({}) == plan and len(cache) == 0


def test_a_delta_over_nodes_sent_before_resolves_to_the_whole_plan() -> None:
    cache = PlanCache(100, DATA_LIMIT)
    first = persist(narrow(source()), "d1")
    cache.source(job(first))
    second = narrow(narrow(first, "g"), "h")
    step = job(second, sent={first.id, first.parents[0].id, first.parents[0].parents[0].id}, broadcasts=["b"])
    assert step.delta is not None and len(step.delta.nodes) == 2
    held = cache.source(step)
    assert held.broadcasts == ["b"]
    assert held.resolve({}) == LogicalPlan(nodes=plan_nodes(second), broadcasts=["b"])
    assert held.persisted({}) == {"d1"}
    assert len(cache) == 5


def test_the_cache_keeps_its_bound_dropping_the_least_recently_used_first() -> None:
    cache = PlanCache(3, DATA_LIMIT)
    sources = [source(stop) for stop in range(1, 6)]
    for vertex in sources[:3]:
        cache.source(job(vertex))
    assert cache.get(sources[0].id) is not None  # used again: now the most recent
    for vertex in sources[3:]:
        cache.source(job(vertex))
    assert len(cache) == 3
    assert set(cache.nodes) == {sources[0].id, sources[3].id, sources[4].id}


def test_the_cache_keeps_no_more_collection_records_than_its_data_limit() -> None:
    cache = PlanCache(100, data_limit=250)
    collections = [PlanVertex(SourceNode(source=CollectionSource(slices=[bytes([i]) * 100]))) for i in range(4)]
    for vertex in collections:
        cache.source(job(vertex))
    assert set(cache.nodes) == {collections[2].id, collections[3].id} and cache.data_bytes == 200
    alone = PlanVertex(SourceNode(source=CollectionSource(slices=[b"x" * 1_000])))
    held = cache.source(job(alone))  # more than the limit alone: its job still has it
    assert len(cache) == 0 and cache.data_bytes == 0
    assert held.resolve({}) == LogicalPlan(nodes=[alone.node])


def test_a_jobs_own_new_nodes_stay_with_it_however_small_the_cache() -> None:
    cache = PlanCache(1, DATA_LIMIT)
    tip = narrow(narrow(source()), "g")
    held = cache.source(job(tip))
    assert len(cache) == 1
    assert held.resolve({}) == LogicalPlan(nodes=plan_nodes(tip))


def test_a_node_whose_id_does_not_match_its_content_fails_the_plan_and_is_not_kept() -> None:
    cache = PlanCache(10, DATA_LIMIT)
    tip = narrow(source())
    good = job(tip).delta
    assert good is not None
    lying = NodeDef(id=tip.id, node=NarrowNode(parent=0, fn="evil"), parents=[tip.parents[0].id])
    for bad in (
        [good.nodes[0], lying],  # another node under a known id
        [good.nodes[0], msgspec.structs.replace(good.nodes[1], id="0" * 32)],  # a made-up id
        [good.nodes[0], msgspec.structs.replace(good.nodes[1], node=NarrowNode(parent=3, fn="f"))],  # parents not numbered 0, 1, ...
        [NodeDef(id="1" * 32, node=HeldNode(dataset_id="d", partitions=2))],  # only the scheduler holds datasets
    ):
        with pytest.raises(PlanError, match="plan node"):
            cache.source(JobSpec(job_id="j", delta=PlanDelta(nodes=bad, root=bad[-1].id)))
    assert len(cache) == 0


def test_missing_parents_and_roots_are_named() -> None:
    cache = PlanCache(10, DATA_LIMIT)
    base = narrow(source())
    top = narrow(base, "g")
    with pytest.raises(MissingNodes) as missing:
        cache.source(job(top, sent={base.id}))
    assert missing.value.ids == [base.id] and base.id in str(missing.value)
    with pytest.raises(MissingNodes) as missing:
        cache.source(JobSpec(job_id="j", delta=PlanDelta(nodes=[], root=top.id)))
    assert missing.value.ids == [top.id]
    assert len(cache) == 0, "a job whose parents are missing leaves nothing behind"


def test_resolving_raises_missing_nodes_when_the_cache_dropped_one_since_intake() -> None:
    cache = PlanCache(2, DATA_LIMIT)
    first = narrow(narrow(source()), "g")
    cache.source(job(first))  # the cache keeps the last 2 of its 3 nodes
    top = narrow(first, "h")
    later = cache.source(job(top, sent={first.id}))  # whose new node pushes out another
    assert set(cache.nodes) == {first.id, top.id}
    with pytest.raises(MissingNodes) as missing:
        later.resolve({})
    assert missing.value.ids == [first.parents[0].id]


def test_nothing_below_a_dataset_held_whole_is_walked_so_its_lineage_may_be_gone() -> None:
    cache = PlanCache(3, DATA_LIMIT)
    long_lineage = source()
    for _ in range(1_000):
        long_lineage = narrow(long_lineage)
    kept = persist(long_lineage, "d1")
    cache.source(job(kept))  # all but the last 3 nodes dropped at once
    top = narrow(kept, "g")
    held = cache.source(job(top, sent={kept.id}))
    assert held.persisted({}) == {"d1"}
    assert held.resolve({"d1": 2}) == LogicalPlan(nodes=[HeldNode(dataset_id="d1", partitions=2), NarrowNode(parent=0, fn="g")])
    with pytest.raises(MissingNodes):
        held.resolve({"d1": 0})  # known, not held whole: its lineage is needed and gone


# --- the same answers as the whole plan's ------------------------------------------------------

STEPS = st.lists(
    st.tuples(st.sampled_from(["source", "narrow", "shuffle", "persist", "union", "cogroup"]), st.lists(st.integers(0, 1_000), min_size=1, max_size=3)),
    min_size=1, max_size=25,
)


def random_plan(steps: list[tuple[str, list[int]]]) -> tuple[PlanVertex, list[str]]:
    """A DAG made of these steps, each reading earlier vertices picked by the numbers; its last
    vertex and the persisted datasets in it."""
    vertices: list[PlanVertex] = [source()]
    datasets: list[str] = []
    for kind, picks in steps:
        picked = [vertices[p % len(vertices)] for p in picks]
        if kind == "source":
            vertex = source(picks[0] % 3 + 1)
        elif kind == "narrow":
            vertex = narrow(picked[0], f"f{picks[0] % 2}")
        elif kind == "shuffle":
            vertex = PlanVertex(ShuffleNode(parent=0, partitions=picks[0] % 3 + 1, aggregator=Aggregator(kind="group")), picked[:1])
        elif kind == "persist":
            datasets.append(f"d{len(datasets)}")
            vertex = persist(picked[0], datasets[-1])
        elif kind == "union":
            vertex = PlanVertex(UnionNode(parents=list(range(len(picked)))), picked)
        else:
            vertex = PlanVertex(CoGroupNode(parents=list(range(len(picked))), partitions=2, shuffled=[True] * len(picked)), picked)
        vertices.append(vertex)
    return vertices[-1], datasets


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(STEPS, st.data())
def test_a_delta_plan_answers_as_the_whole_plan_does_for_any_datasets_held(steps: list[tuple[str, list[int]]], data: st.DataObject) -> None:
    tip, datasets = random_plan(steps)
    whole = ListPlan(LogicalPlan(nodes=plan_nodes(tip), broadcasts=["b"]))
    cache = PlanCache(10_000, DATA_LIMIT)
    split = data.draw(st.integers(0, len(plan_nodes(tip))))  # some nodes sent by an earlier job
    earlier = from_nodes(plan_nodes(tip)[:split]) if split else None
    sent: set[str] = set()
    if earlier is not None:
        cache.source(JobSpec(job_id="j0", delta=delta(earlier, set(), sent, [])))
    held = cache.source(JobSpec(job_id="j1", delta=delta(tip, sent, set(), ["b"])))
    known = data.draw(st.dictionaries(st.sampled_from(datasets), st.integers(0, 3)) if datasets else st.just({}))
    assert held.persisted(known) == whole.persisted(known)
    resolved, expected = held.resolve(known), whole.resolve(known)
    assert resolved.broadcasts == expected.broadcasts
    assert len(resolved.nodes) == len(expected.nodes)
    # The same DAG (node lists may differ in order where a cut reorders a depth-first walk):
    assert from_nodes(resolved.nodes).id == from_nodes(expected.nodes).id
    if not any(isinstance(n, HeldNode) for n in expected.nodes):
        assert resolved == expected
