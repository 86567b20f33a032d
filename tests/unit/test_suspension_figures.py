"""The executor's suspension-latency figures: percentiles of its own, and cumulative bucket
counts that several executors' figures can be pooled by."""

from __future__ import annotations

from squall.services.executor.preemption import SUSPENSION_BUCKETS_MS, suspension_figures


def test_no_suspensions_give_zeros_and_empty_buckets() -> None:
    figures = suspension_figures([])
    assert figures["suspension_count"] == 0 and figures["suspension_p99_ms"] == 0
    assert all(figures[f"suspension_le_{b:g}ms"] == 0 for b in SUSPENSION_BUCKETS_MS)


def test_buckets_count_cumulatively_at_their_upper_bound() -> None:
    seconds = [0.00001, 0.00005, 0.0003, 0.001, 0.003, 0.2]  # 0.01, 0.05, 0.3, 1, 3 and 200 ms
    figures = suspension_figures(seconds)
    assert figures["suspension_count"] == 6
    assert figures["suspension_le_0.02ms"] == 1
    assert figures["suspension_le_0.05ms"] == 2  # a latency on a bound counts in its bucket
    assert figures["suspension_le_0.5ms"] == 3
    assert figures["suspension_le_1ms"] == 4
    assert figures["suspension_le_5ms"] == 5
    assert figures["suspension_le_100ms"] == 5  # 200 ms is past the last bound: only the count has it
    assert figures["suspension_max_ms"] == 200.0
    counts = [figures[f"suspension_le_{b:g}ms"] for b in SUSPENSION_BUCKETS_MS]
    assert counts == sorted(counts)
