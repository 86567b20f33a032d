"""squall.tuning: Drizzle's AIMD group-size tuner (grow x2 above the band, shrink -1 below it)."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from squall.tuning import HISTORY, GroupSizeTuner, TunerBounds, coordination_overhead, next_group_size, size_cap

B = TunerBounds()  # lower 0.05, upper 0.10, x2, -1, sizes 1..1000, groups of at most 2 s
FAST = 0.001  # a batch interval short enough that the duration cap (2000) is above max_size


# ---------------------------------------------------------------- next_group_size


def test_grows_multiplicatively_above_upper():
    sizes = [1]
    for _ in range(3):
        sizes.append(next_group_size(sizes[-1], 0.5, FAST, B))
    assert sizes == [1, 2, 4, 8]


def test_shrinks_additively_below_lower():
    assert next_group_size(10, 0.01, FAST, B) == 9
    assert next_group_size(10, 0.01, FAST, TunerBounds(shrink_step=3)) == 7


def test_holds_inside_the_band_including_its_edges():
    for overhead in (B.lower, 0.07, B.upper):
        assert next_group_size(10, overhead, FAST, B) == 10


def test_never_shrinks_below_min_size():
    assert next_group_size(1, 0.0, FAST, B) == 1
    assert next_group_size(4, 0.0, FAST, TunerBounds(min_size=4)) == 4
    assert next_group_size(5, 0.0, FAST, TunerBounds(min_size=4, shrink_step=3)) == 4


def test_growth_by_a_small_factor_still_adds_at_least_one():
    gentle = TunerBounds(growth=1.01)
    assert next_group_size(1, 0.5, FAST, gentle) == 2
    assert next_group_size(3, 0.5, FAST, TunerBounds(growth=1.5)) == 5  # ceil(4.5)


def test_duration_cap_bounds_a_group_to_max_group_seconds():
    # 0.1 s batches, groups of at most 2 s: never more than 20 batches, however high the overhead.
    assert size_cap(0.1, B) == 20
    assert next_group_size(16, 0.9, 0.1, B) == 20
    assert next_group_size(20, 1.0, 0.1, B) == 20
    assert next_group_size(20, math.inf, 0.1, B) == 20
    assert next_group_size(500, 0.07, 0.1, B) == 20  # a held size above the cap is pulled down too
    # Division that lands a hair under a whole number still gives that number: 0.3 / 0.1 -> 3.
    assert size_cap(0.1, TunerBounds(max_group_seconds=0.3)) == 3


def test_duration_cap_never_goes_below_min_size():
    # One batch already outlasts max_group_seconds: the hard minimum wins.
    assert size_cap(5.0, B) == 1
    assert size_cap(5.0, TunerBounds(min_size=3)) == 3
    assert next_group_size(3, 0.9, 5.0, TunerBounds(min_size=3)) == 3


def test_max_size_caps_growth():
    small = TunerBounds(max_size=10)
    assert next_group_size(8, 0.9, FAST, small) == 10
    assert next_group_size(10, 0.9, FAST, small) == 10
    assert next_group_size(1000, 0.9, FAST, B) == 1000


@pytest.mark.parametrize("bad", [math.nan, -0.5, -math.inf])
def test_nan_or_negative_overhead_counts_as_zero(bad):
    # A measurement error may shrink the group, never grow it.
    assert next_group_size(10, bad, FAST, B) == 9
    assert next_group_size(10, bad, FAST, B) == next_group_size(10, 0.0, FAST, B)


def test_overhead_above_one_counts_as_growth_only():
    assert next_group_size(10, 7.0, FAST, B) == 20


@pytest.mark.parametrize("interval", [0.0, -1.0, math.nan])
def test_batch_interval_must_be_positive(interval):
    with pytest.raises(ValueError, match="batch_interval"):
        next_group_size(10, 0.07, interval, B)


def test_current_size_must_be_positive():
    with pytest.raises(ValueError, match="current"):
        next_group_size(0, 0.07, FAST, B)


# ---------------------------------------------------------------- coordination_overhead


def test_coordination_overhead_is_the_idle_fraction():
    assert coordination_overhead(1.0, 0.75) == pytest.approx(0.25)
    assert coordination_overhead(2.0, 0.0) == 1.0
    assert coordination_overhead(2.0, 2.0) == 0.0


def test_coordination_overhead_clamps_and_refuses_nonsense():
    assert coordination_overhead(1.0, 1.5) == 0.0  # busy longer than the group: clock skew
    assert coordination_overhead(0.0, 0.5) == 0.0  # zero duration
    assert coordination_overhead(-1.0, 0.5) == 0.0
    assert coordination_overhead(math.nan, 0.5) == 0.0
    assert coordination_overhead(1.0, math.nan) == 0.0
    assert coordination_overhead(1.0, -0.5) == 0.0  # negative busy time is an error, not overhead 1
    assert coordination_overhead(math.inf, math.inf) == 0.0


# ---------------------------------------------------------------- TunerBounds validation


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"lower": -0.1}, "lower"),
        ({"lower": 0.2, "upper": 0.1}, "lower"),
        ({"lower": 0.1, "upper": 0.1}, "upper"),
        ({"upper": 1.5}, "upper"),
        ({"lower": math.nan}, "lower"),
        ({"growth": 1.0}, "growth"),
        ({"growth": 0.5}, "growth"),
        ({"growth": math.inf}, "growth"),
        ({"shrink_step": 0}, "shrink_step"),
        ({"shrink_step": 1.5}, "shrink_step"),
        ({"min_size": 0}, "min_size"),
        ({"min_size": 5, "max_size": 4}, "max_size"),
        ({"max_group_seconds": 0.0}, "max_group_seconds"),
        ({"max_group_seconds": math.nan}, "max_group_seconds"),
    ],
)
def test_bounds_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        TunerBounds(**kwargs)


def test_default_bounds_are_valid_and_frozen():
    b = TunerBounds()
    assert (b.lower, b.upper, b.growth, b.shrink_step, b.min_size, b.max_size, b.max_group_seconds) == (0.05, 0.10, 2.0, 1, 1, 1000, 2.0)
    with pytest.raises(AttributeError):
        b.lower = 0.0  # type: ignore[misc]


# ---------------------------------------------------------------- GroupSizeTuner


def test_tuner_records_history_and_changes():
    t = GroupSizeTuner(batch_interval=0.01, initial_size=4)
    assert t.size == 4
    assert t.observe(1.0, 0.5) == 8  # overhead 0.5: grow
    assert t.observe(1.0, 0.93) == 8  # overhead 0.07: hold
    assert t.observe(1.0, 0.99) == 7  # overhead 0.01: shrink
    assert t.size == 7
    assert [(s, n) for s, _, n in t.history] == [(4, 8), (8, 8), (8, 7)]
    assert [o for _, o, _ in t.history] == pytest.approx([0.5, 0.07, 0.01])
    assert t.changes == 2


def test_tuner_clamps_its_initial_size():
    assert GroupSizeTuner(batch_interval=0.1, initial_size=500).size == 20  # duration cap
    assert GroupSizeTuner(batch_interval=FAST, initial_size=5000).size == 1000  # max_size
    assert GroupSizeTuner(batch_interval=0.1, initial_size=1, bounds=TunerBounds(min_size=3)).size == 3
    with pytest.raises(ValueError, match="initial_size"):
        GroupSizeTuner(batch_interval=0.1, initial_size=0)
    with pytest.raises(ValueError, match="batch_interval"):
        GroupSizeTuner(batch_interval=0.0)


def test_tuner_never_exceeds_the_duration_cap_even_under_huge_overhead():
    t = GroupSizeTuner(batch_interval=0.1, initial_size=1)
    for _ in range(50):
        t.observe(10.0, 0.0)  # overhead 1.0, every time
        assert t.size * 0.1 <= 2.0 + 1e-9
    assert t.size == 20
    assert [n for _, _, n in list(t.history)[:6]] == [2, 4, 8, 16, 20, 20]


def test_tuner_measurement_errors_do_not_grow_the_group():
    t = GroupSizeTuner(batch_interval=FAST, initial_size=10)
    for group, busy in [(0.0, 0.0), (math.nan, 1.0), (1.0, math.nan), (1.0, -1.0)]:
        t.observe(group, busy)
    assert t.size == 6
    assert all(o == 0.0 for _, o, _ in t.history)


# ---------------------------------------------------------------- convergence on a simulated system
#
# The fake system pays a fixed coordination cost per group and a fixed amount of work per batch,
# so a group of G batches has overhead fixed / (fixed + G * work), which falls as G grows.
# The property that truly holds for this AIMD rule (x growth above the band, -shrink_step below,
# hold inside) when overhead falls monotonically with G:
#   * a size is a fixed point iff its overhead is in [lower, upper], or it is the cap with overhead
#     still above upper, or it is min_size with overhead still below lower;
#   * with shrink_step 1, the tuner reaches a fixed point whenever one exists, within
#     about log_growth(cap) growth steps plus (overshoot / shrink_step) shrink steps, and then never
#     moves again: no oscillation at all, not even +-1 (the rule is deterministic and a fixed point
#     maps to itself). Growing is fast, shrinking back after an overshoot is slow (one step per group).
#   * if no whole size lands in the band (band too narrow), there is no fixed point and the size
#     cycles: it grows past the band, shrinks back one step at a time, grows again. The excursion
#     stays within [edge, growth * edge]. Widen the band to avoid it.

FIXED, WORK = 0.05, 0.01


def system(size: int, fixed: float = FIXED, work: float = WORK) -> tuple[float, float]:
    """(group_seconds, busy_seconds) of one group of `size` batches."""
    busy = size * work
    return fixed + busy, busy


def run(tuner: GroupSizeTuner, steps: int, **kw: float) -> list[int]:
    sizes = [tuner.size]
    for _ in range(steps):
        sizes.append(tuner.observe(*system(tuner.size, **kw)))
    return sizes


def test_converges_into_the_band_from_below_and_stays():
    # Band [0.05, 0.10] <=> 45 <= G <= 95 here; cap is 200 (0.01 s batches, 2 s groups).
    t = GroupSizeTuner(batch_interval=0.01, initial_size=1)
    sizes = run(t, 20)
    assert sizes[:8] == [1, 2, 4, 8, 16, 32, 64, 64]
    assert len(set(sizes[7:])) == 1  # settled after 6 observations, never moved again
    _, overhead, _ = t.history[-1]
    assert B.lower <= overhead <= B.upper
    assert t.changes == 6


def test_converges_from_above_one_step_at_a_time():
    t = GroupSizeTuner(batch_interval=0.01, initial_size=150)
    sizes = run(t, 100)
    final = sizes[-1]
    # It stops at the largest size whose overhead is not below `lower`: the band's top edge.
    top = max(g for g in range(1, 201) if coordination_overhead(*system(g)) >= B.lower)
    assert final == top and 90 <= top <= 96
    drop = sizes[: sizes.index(final) + 1]
    assert all(a - b == 1 for a, b in itertools.pairwise(drop))  # additive decrease, one batch per group
    assert sizes.count(final) == len(sizes) - len(drop) + 1  # and then it stays
    assert B.lower <= coordination_overhead(*system(final)) <= B.upper


def test_settles_at_the_duration_cap_when_the_band_is_out_of_reach():
    # With 0.1 s batches the cap is 20, where overhead is still 0.05 / 0.25 = 0.2 > upper.
    t = GroupSizeTuner(batch_interval=0.1, initial_size=1)
    sizes = run(t, 20)
    assert max(sizes) == 20
    assert sizes[-10:] == [20] * 10
    assert coordination_overhead(*system(20)) > B.upper


def test_a_band_too_narrow_for_any_whole_size_cycles_within_growth_of_its_edge():
    # Overhead is 0.0735+ at 63 and 0.0725- at 64: no whole size lands in [0.073, 0.0735].
    narrow = TunerBounds(lower=0.073, upper=0.0735)
    assert coordination_overhead(*system(63)) > narrow.upper
    assert coordination_overhead(*system(64)) < narrow.lower
    t = GroupSizeTuner(batch_interval=0.001, initial_size=1, bounds=narrow)
    sizes = run(t, 300)
    tail = sizes[50:]
    assert min(tail) == 63 and max(tail) == 126  # grows 63 -> 126, shrinks back to 63, repeats
    assert len(set(tail)) > 1


@settings(max_examples=60, deadline=None, database=None)
@given(
    fixed=st.floats(0.001, 1.0),
    work=st.floats(0.0005, 0.1),
    lower=st.floats(0.0, 0.5),
    width=st.floats(0.01, 0.5),
    growth=st.floats(1.1, 4.0),
    interval=st.floats(0.001, 0.5),
    max_group=st.floats(0.01, 3.0),
    max_size=st.integers(1, 300),
    initial=st.integers(1, 400),
)
def test_property_monotone_systems_reach_a_fixed_point_and_stay(fixed, work, lower, width, growth, interval, max_group, max_size, initial):
    bounds = TunerBounds(lower=lower, upper=min(1.0, lower + width), growth=growth, max_size=max_size, max_group_seconds=max_group)
    cap = size_cap(interval, bounds)

    def overhead(g: int) -> float:
        return coordination_overhead(*system(g, fixed=fixed, work=work))

    fixed_points = [g for g in range(1, cap + 1) if next_group_size(g, overhead(g), interval, bounds) == g]
    t = GroupSizeTuner(batch_interval=interval, initial_size=initial, bounds=bounds)
    budget = math.ceil(math.log(cap, growth)) + cap + 3 if cap > 1 else 2
    sizes = run(t, 2 * budget, fixed=fixed, work=work)
    # Always inside the hard limits, and a group never outlasts max_group_seconds (or is min_size).
    assert all(1 <= s <= min(cap, max_size) for s in sizes)
    assert all(s == 1 or s * interval <= max_group * (1 + 1e-9) for s in sizes)
    if fixed_points:
        assert sizes[budget] in fixed_points
        assert set(sizes[budget:]) == {sizes[budget]}


@settings(max_examples=60, deadline=None, database=None)
@given(
    current=st.integers(1, 5000),
    overhead=st.floats(allow_nan=True, allow_infinity=True),
    interval=st.floats(1e-6, 100.0),
)
def test_property_result_always_within_limits(current, overhead, interval):
    new = next_group_size(current, overhead, interval, B)
    assert B.min_size <= new <= size_cap(interval, B) <= B.max_size
    if not (overhead > B.upper):  # NaN, negative, in or below the band: never grows
        assert new <= max(current, B.min_size)


def test_history_keeps_only_the_most_recent_groups():
    t = GroupSizeTuner(batch_interval=0.1)
    for _ in range(HISTORY + 500):
        t.observe_overhead(0.0)
    assert len(t.history) == HISTORY
