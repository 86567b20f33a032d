"""squall.recovery_stats: steady latency, recovery time and peak latency around a fault."""

from __future__ import annotations

import pytest

from squall.recovery_stats import (
    batch_points,
    latencies_before,
    latency_bound,
    peak_latency_after,
    recovery_time,
    steady_latency,
)

pytestmark = pytest.mark.timeout(10)

FAULT = 10.0


def points(latencies: list[float], first_end: float = 9.1, interval: float = 0.1) -> list[tuple[float, float]]:
    """Batches ending every `interval` from `first_end` (the fault is at 10.0, after the 10th)."""
    return [(first_end + i * interval, latency) for i, latency in enumerate(latencies)]


# ---------------------------------------------------------------- batch_points, latencies_before


def test_batch_points_puts_each_batch_at_the_end_of_its_interval():
    assert batch_points(100.0, 0.5, [0.01, 0.02]) == [(100.5, 0.01), (101.0, 0.02)]
    assert batch_points(100.0, 0.5, [0.03], first_batch=4) == [(102.5, 0.03)]
    assert batch_points(100.0, 0.5, []) == []


def test_batch_points_refuses_a_non_positive_interval():
    with pytest.raises(ValueError):
        batch_points(0.0, 0.0, [0.1])


def test_latencies_before_keeps_batches_delivered_before_the_fault_within_the_window():
    pts = [(8.0, 0.5), (9.0, 0.02), (9.9, 0.05), (9.95, 0.2), (10.5, 0.01)]
    # (9.9, 0.05) is delivered at 9.95 (before); (9.95, 0.2) at 10.15 (after); (10.5, ..) after
    assert latencies_before(pts, FAULT) == [0.5, 0.02, 0.05]
    assert latencies_before(pts, FAULT, window=1.5) == [0.02, 0.05]
    assert latencies_before([], FAULT) == []


# ---------------------------------------------------------------- steady_latency, latency_bound


def test_steady_latency_is_the_median():
    assert steady_latency([0.03, 0.01, 0.02]) == 0.02
    assert steady_latency([0.01, 0.02, 0.03, 0.04]) == pytest.approx(0.025)
    assert steady_latency([0.5, 0.01, 0.01]) == 0.01  # one outlier does not move it


def test_steady_latency_of_nothing_is_an_error_not_zero():
    with pytest.raises(ValueError, match="no latencies"):
        steady_latency([])


def test_latency_bound_is_the_factor_or_the_absolute_slack_whichever_is_larger():
    assert latency_bound(0.02, factor=1.5, slack=0.005) == pytest.approx(0.03)
    assert latency_bound(0.002, factor=1.5, slack=0.005) == pytest.approx(0.007)
    assert latency_bound(0.0, factor=1.5, slack=0.005) == pytest.approx(0.005)  # steady of 0
    assert latency_bound(0.0, factor=1.5, slack=0.0) == 0.0


@pytest.mark.parametrize("steady, factor, slack", [(-0.1, 1.5, 0.0), (0.1, 0.9, 0.0), (0.1, 1.5, -0.01)])
def test_latency_bound_refuses_nonsense(steady: float, factor: float, slack: float):
    with pytest.raises(ValueError):
        latency_bound(steady, factor, slack)


# ---------------------------------------------------------------- recovery_time


def test_recovery_time_runs_to_the_end_of_the_first_batch_of_the_first_good_run():
    steady = [0.02] * 10  # batches ending 9.1 .. 10.0 (10.0 is not after the fault)
    after = [0.9, 0.8, 0.7, 0.02, 0.02, 0.02, 0.02, 0.02]  # ending 10.1 .. 10.8
    rt = recovery_time(points(steady + after), FAULT, steady=0.02, hold=5)
    assert rt == pytest.approx(0.4)  # batch ending at 10.4 starts the run of five


def test_a_lucky_batch_inside_the_backlog_does_not_count():
    after = [0.9, 0.02, 0.8, 0.02, 0.02, 0.02]  # ending 10.1 .. 10.6
    assert recovery_time(points([0.02] * 10 + after), FAULT, steady=0.02, hold=3) == pytest.approx(0.4)


def test_a_fault_that_changes_nothing_recovers_with_the_first_batch_after_it():
    assert recovery_time(points([0.02] * 20), FAULT, steady=0.02, hold=5) == pytest.approx(0.1)


def test_batches_ending_before_the_fault_cannot_start_the_run():
    # Good batches ending before the fault followed by bad ones after: the run must start after.
    pts = points([0.02] * 10 + [0.5, 0.02, 0.02])
    assert recovery_time(pts, FAULT, steady=0.02, hold=2) == pytest.approx(0.2)


def test_never_recovered_is_none():
    assert recovery_time(points([0.02] * 10 + [0.5] * 10), FAULT, steady=0.02) is None


def test_fewer_than_hold_good_batches_after_the_fault_is_none():
    assert recovery_time(points([0.02] * 10 + [0.02] * 4), FAULT, steady=0.02, hold=5) is None


def test_no_batches_after_the_fault_is_none():
    assert recovery_time(points([0.02] * 10), FAULT, steady=0.02) is None
    assert recovery_time([], FAULT, steady=0.02) is None


def test_a_latency_exactly_at_the_bound_counts_as_recovered():
    assert recovery_time(points([0.03] * 3, first_end=10.1), FAULT, steady=0.02, factor=1.5, hold=3, slack=0.0) == pytest.approx(0.1)


def test_a_steady_latency_of_zero_uses_the_slack_not_an_impossible_bound():
    pts = points([0.004] * 5, first_end=10.1)
    assert recovery_time(pts, FAULT, steady=0.0, hold=5, slack=0.005) == pytest.approx(0.1)
    assert recovery_time(pts, FAULT, steady=0.0, hold=5, slack=0.0) is None


def test_the_factor_sets_how_close_to_steady_counts():
    pts = points([0.05] * 5, first_end=10.1)
    assert recovery_time(pts, FAULT, steady=0.02, factor=1.5, hold=5) is None
    assert recovery_time(pts, FAULT, steady=0.02, factor=3.0, hold=5) == pytest.approx(0.1)


def test_recovery_time_refuses_a_hold_below_one_and_points_out_of_order():
    with pytest.raises(ValueError, match="hold"):
        recovery_time(points([0.02] * 3), FAULT, steady=0.02, hold=0)
    with pytest.raises(ValueError, match="batch order"):
        recovery_time([(10.2, 0.02), (10.1, 0.02)], FAULT, steady=0.02, hold=1)


# ---------------------------------------------------------------- peak_latency_after


def test_peak_counts_a_batch_in_flight_at_the_fault():
    pts = [(9.8, 0.02), (9.9, 1.2), (10.1, 1.0), (10.2, 0.03)]  # 9.9's batch was delivered at 11.1
    assert peak_latency_after(pts, FAULT) == 1.2


def test_peak_ignores_batches_delivered_before_the_fault():
    pts = [(9.0, 0.9), (9.9, 0.02), (10.1, 0.04)]  # the 0.9 was delivered at 9.9
    assert peak_latency_after(pts, FAULT) == 0.04


def test_peak_with_nothing_delivered_after_the_fault_is_none():
    assert peak_latency_after([(9.0, 0.02), (9.5, 0.02)], FAULT) is None
    assert peak_latency_after([], FAULT) is None
