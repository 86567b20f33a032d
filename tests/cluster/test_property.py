"""Property: two-stage jobs on a 4-executor cluster compute what plain Python computes."""

from __future__ import annotations

import operator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.cluster.helpers import grouped, reduced

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]

JOB_SETTINGS = settings(
    max_examples=50,
    deadline=None,
    derandomize=False,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

parts = st.integers(min_value=1, max_value=6)
ints = st.lists(st.integers(min_value=-1000, max_value=1000), max_size=60)
keys = st.one_of(
    st.integers(min_value=-5, max_value=5),
    st.text(alphabet="abcé", max_size=2),
    st.tuples(st.integers(min_value=0, max_value=2), st.text(alphabet="xy", max_size=1)),
)
pairs = st.lists(st.tuples(keys, st.integers(min_value=-100, max_value=100)), max_size=60)


# Narrow steps before the shuffle: (name, dataset transform, python transform), all with
# picklable closures over plain ints.
def narrow_step(kind: str, a: int, b: int):  # type: ignore[no-untyped-def]
    if kind == "map":
        fn = lambda kv: (kv[0], kv[1] * a + b)  # noqa: E731
        return (lambda ds: ds.map(fn)), (lambda xs: [fn(x) for x in xs])
    if kind == "filter":
        pred = lambda kv: (kv[1] + b) % (abs(a) + 2) != 0  # noqa: E731
        return (lambda ds: ds.filter(pred)), (lambda xs: [x for x in xs if pred(x)])
    if kind == "flat_map":
        dup = lambda kv: [kv] * ((kv[1] + a) % 3)  # noqa: E731
        return (lambda ds: ds.flat_map(dup)), (lambda xs: [y for x in xs for y in dup(x)])
    raise AssertionError(kind)


steps = st.lists(
    st.tuples(st.sampled_from(["map", "filter", "flat_map"]), st.integers(-3, 3), st.integers(-5, 5)),
    max_size=3,
)



def unique_dict(result):  # type: ignore[no-untyped-def]
    d = dict(result)
    assert len(d) == len(result), "a key came out of the shuffle more than once"
    return d


@pytest.fixture(scope="module")
def mctx(cluster):  # type: ignore[no-untyped-def]
    with cluster.connect() as context:
        yield context


@JOB_SETTINGS
@given(data=pairs, narrow=steps, agg=st.sampled_from(["sum", "max", "group"]), m=parts, r=parts)
def test_pairs_through_one_shuffle(mctx, data, narrow, agg, m, r):  # type: ignore[no-untyped-def]
    ds = mctx.parallelize(data, m)
    expected_input = list(data)
    for kind, a, b in narrow:
        on_ds, on_py = narrow_step(kind, a, b)
        ds, expected_input = on_ds(ds), on_py(expected_input)
    if agg == "group":
        got = {k: sorted(vs) for k, vs in unique_dict(ds.group_by_key(r).collect()).items()}
        assert got == grouped(expected_input)
    else:
        fn = operator.add if agg == "sum" else max
        assert unique_dict(ds.reduce_by_key(fn, r).collect()) == reduced(expected_input, fn)


@JOB_SETTINGS
@given(data=ints, m=parts, r=parts, modulus=st.integers(1, 9), threshold=st.integers(-1000, 1000))
def test_ints_keyed_filtered_and_reduced(mctx, data, m, r, modulus, threshold):  # type: ignore[no-untyped-def]
    ds = (
        mctx.parallelize(data, m)
        .filter(lambda x: x >= threshold)
        .map(lambda x: (x % modulus, x))
        .reduce_by_key(operator.add, r)
        .map(lambda kv: (kv[0], kv[1], "done"))
    )
    kept = [x for x in data if x >= threshold]
    expected = {k: (k, v, "done") for k, v in reduced([(x % modulus, x) for x in kept], operator.add).items()}
    got = ds.collect()
    assert sorted(got) == sorted(expected.values())
    assert ds.count() == len(expected)


@JOB_SETTINGS
@given(data=ints, m=parts, narrow=steps)
def test_narrow_only_jobs_keep_order(mctx, data, m, narrow):  # type: ignore[no-untyped-def]
    ds = mctx.parallelize([(0, x) for x in data], m)
    expected = [(0, x) for x in data]
    for kind, a, b in narrow:
        on_ds, on_py = narrow_step(kind, a, b)
        ds, expected = on_ds(ds), on_py(expected)
    assert ds.collect() == expected
    if expected:
        assert ds.map(lambda kv: kv[1]).reduce(operator.add) == sum(v for _, v in expected)


@settings(JOB_SETTINGS, max_examples=30)
@given(data=pairs, m=parts, r1=parts, r2=parts)
def test_two_shuffles(mctx, data, m, r1, r2):  # type: ignore[no-untyped-def]
    ds = (
        mctx.parallelize(data, m)
        .reduce_by_key(operator.add, r1)
        .map(lambda kv: (kv[1] % 3, kv[0]))
        .group_by_key(r2)
        .map(lambda kv: (kv[0], len(kv[1])))
    )
    sums = reduced(data, operator.add)
    expected = reduced([(v % 3, 1) for v in sums.values()], operator.add)
    assert unique_dict(ds.collect()) == expected
