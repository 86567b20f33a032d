"""What a stream has done so far: counters for its whole life, and bounded series of its most
recent samples (latencies, group sizes), summed up by Stream.metrics()."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from squall.common.quantiles import quantile


@dataclass
class StreamMetrics:
    """What a stream has done so far, updated as each batch is delivered (Stream.metrics_state).

    Counters cover the whole stream; the series (latencies, group sizes...) keep only their most
    recent `window` samples (Settings.metrics_window), so a stream that runs for weeks holds a
    constant amount of them and its percentiles describe the recent past."""

    batches: int = 0
    output_records: int = 0  # records delivered to the sink (what the last transformation emitted)
    # Records the source produced in the delivered batches, when the driver can count them without
    # running the source (rate sources); None when it cannot (generator and directory sources).
    input_records: int | None = None
    started: float = 0.0
    skipped: int = 0  # bad records skipped (bad_records="skip")
    source_lag: int | None = None  # records the source holds unread, as it last told (None: it cannot tell)
    window: int = 1_000
    latencies: deque[float] = field(init=False)  # seconds from batch end to sink, one per batch
    window_latencies: deque[float] = field(init=False)  # seconds from window end to sink
    group_sizes: deque[int] = field(init=False)
    submit_seconds: deque[float] = field(init=False)  # driver time to build each group
    overheads: deque[float] = field(init=False)  # auto group size: each group's share of coordination

    def __post_init__(self) -> None:
        for name in ("latencies", "window_latencies", "group_sizes", "submit_seconds", "overheads"):
            setattr(self, name, deque(maxlen=self.window))

    @property
    def first_latency_batch(self) -> int:
        """The batch whose latency is latencies[0] (older ones have left the window)."""
        return self.batches - len(self.latencies)

    def summary(self) -> dict[str, float]:
        """The figures Stream.metrics() returns (see there)."""
        elapsed = max(1e-9, time.time() - self.started) if self.started else 0.0
        lat, windows = self.latencies, self.window_latencies
        extra = {"window_latency_p50": quantile(windows, 0.5), "window_latency_p99": quantile(windows, 0.99)} if windows else {}
        if self.source_lag is not None:
            extra["source_lag"] = self.source_lag
        if self.input_records is not None:
            extra["input_records"] = self.input_records
            extra["input_records_per_second"] = self.input_records / elapsed if elapsed else 0.0
        return {
            **extra,
            "batches": self.batches,
            "output_records": self.output_records,
            "skipped_records": self.skipped,
            "output_records_per_second": self.output_records / elapsed if elapsed else 0.0,
            "latency_p50": quantile(lat, 0.5) if lat else 0.0,
            "latency_p99": quantile(lat, 0.99) if lat else 0.0,
            "group_size": self.group_sizes[-1] if self.group_sizes else 0,
        }
