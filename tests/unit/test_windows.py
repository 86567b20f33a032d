"""squall.windows: window assignment, map-side folding, and closing windows at the watermark."""

from __future__ import annotations

import operator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from squall.windows import (
    Aggregation,
    WindowOperator,
    WindowResult,
    WindowSpec,
    _Empty,
    _ReduceAdd,
    _ReduceMerge,
    default_event_time,
    window_fold,
)

COUNT = Aggregation(int, lambda acc, v: acc + 1, operator.add)


def spec(size: float, slide: float) -> WindowSpec:
    return WindowSpec(size, slide, lambda v: v)


@pytest.mark.parametrize("t,size,slide,starts", [
    (12.3, 10, 10, [10.0]),
    (12.3, 10, 5, [10.0, 5.0]),
    (10.0, 10, 5, [10.0, 5.0]),  # a window includes its start, excludes its end
    (9.999, 10, 5, [5.0, 0.0]),
    (0.25, 0.1, 0.05, [0.25, 0.2]),
])
def test_an_event_belongs_to_every_window_that_contains_it(t: float, size: float, slide: float, starts: list[float]):
    assert spec(size, slide).starts(t) == pytest.approx(starts)


def test_map_side_folds_one_partial_per_key_and_window():
    out = sorted(window_fold(spec(10, 5), COUNT, iter([("a", 1.0), ("a", 2.0), ("b", 7.0), ("a", 6.0)])))
    assert out == [("a", (-5.0, 2)), ("a", (0.0, 3)), ("a", (5.0, 1)), ("b", (0.0, 1)), ("b", (5.0, 1))]


@given(times=st.lists(st.one_of(st.floats(-1e6, 1e6), st.integers(-1000, 1000).map(lambda k: k * 0.1)), max_size=50),
       size=st.sampled_from([0.1, 0.3, 1.0, 10.0, 7.0]))
def test_tumbling_windows_fold_as_starts_assigns_them(times: list[float], size: float):
    # Tumbling windows take a quicker path than starts(); boundaries (multiples of 0.1) included.
    tumbling = spec(size, size)
    expected: dict = {}
    for t in times:
        for start in tumbling.starts(t):
            expected[("k", start)] = expected.get(("k", start), 0) + 1
    out = window_fold(tumbling, COUNT, iter([("k", t) for t in times]))
    assert {(key, start): n for key, (start, n) in out} == expected


def test_windows_close_at_the_batch_watermark_across_every_key():
    op = WindowOperator(spec(1.0, 1.0), COUNT, stream_start=100.0, batch_interval=0.5)
    table: dict = {}
    assert op.apply([("a", [(100.0, 2)])], table, batch=0) == []  # watermark 100.5: nothing closed
    out = op.apply([("b", [(100.0, 1), (101.0, 4)])], table, batch=1)  # watermark 101.0
    assert out == [WindowResult("a", 100.0, 101.0, 2), WindowResult("b", 100.0, 101.0, 1)]
    assert table == {"b": {101.0: 4}}  # closed windows leave the state; keys with none left too
    assert op.apply([], table, batch=3) == [WindowResult("b", 101.0, 102.0, 4)]  # no new values needed
    assert table == {}


def test_a_failing_merge_leaves_the_window_state_as_it_was():
    def merge(a, b):  # type: ignore[no-untyped-def]
        if b == "bad":
            raise ValueError("bad")
        return a + b

    op = WindowOperator(spec(1.0, 1.0), Aggregation(int, operator.add, merge), 0.0, 10.0)
    table: dict = {"a": {0.0: 1}}
    with pytest.raises(ValueError):
        op.apply([("a", [(0.0, 2)]), ("z", [(0.0, 1), (0.0, "bad")])], table, batch=0)
    assert table == {"a": {0.0: 1}}


def test_reduce_uses_its_first_value_as_the_start():
    add, merge = _ReduceAdd(max), _ReduceMerge(max)
    assert add(_Empty(), 3) == 3 and add(3, 5) == 5
    assert merge(_Empty(), 4) == 4 and merge(4, _Empty()) == 4 and merge(4, 9) == 9


def test_a_window_spec_refuses_sizes_and_slides_that_would_lose_events() -> None:
    assert WindowSpec.of(10) == WindowSpec(10.0, 10.0, default_event_time)  # tumbling by default
    for size, slide in [(0, None), (10, 0), (-1, None), (5, 10)]:
        with pytest.raises(ValueError, match="positive|skip events"):
            WindowSpec.of(size, slide)
