"""squall.stream_metrics.StreamMetrics: counters for the whole stream, series bounded by their window."""

from __future__ import annotations

import pytest

from squall.stream_metrics import StreamMetrics


def test_series_keep_only_the_most_recent_window_of_samples() -> None:
    metrics = StreamMetrics(window=100)
    for batch in range(1_000):
        metrics.batches += 1
        metrics.output_records += 3
        metrics.latencies.append(batch / 1000)
        metrics.window_latencies.extend([batch / 1000] * 2)
        metrics.group_sizes.append(1)
        metrics.overheads.append(0.01)
        metrics.submit_seconds.append(0.001)
    for series in (metrics.latencies, metrics.window_latencies, metrics.group_sizes, metrics.overheads, metrics.submit_seconds):
        assert len(series) == 100
    assert metrics.output_records == 3_000  # counters are not windowed
    assert metrics.first_latency_batch == 900 and metrics.latencies[0] == 0.9
    summary = metrics.summary()
    assert summary["batches"] == 1_000 and 0.9 <= summary["latency_p50"] <= 1.0


def test_a_short_stream_keeps_every_sample() -> None:
    metrics = StreamMetrics()
    metrics.batches, _ = 3, metrics.latencies.extend([0.1, 0.2, 0.3])
    assert metrics.first_latency_batch == 0 and list(metrics.latencies) == [0.1, 0.2, 0.3]


def test_summary_percentiles_interpolate_as_every_reported_quantile_does() -> None:
    metrics = StreamMetrics()
    metrics.batches = 4
    metrics.latencies.extend([0.4, 0.1, 0.3, 0.2])
    summary = metrics.summary()
    assert summary["latency_p50"] == pytest.approx(0.25)  # between the two middle samples
    assert summary["latency_p99"] == pytest.approx(0.397)
    assert "window_latency_p50" not in summary  # no window delivered yet
    assert StreamMetrics().summary()["latency_p99"] == 0.0  # nothing delivered yet
