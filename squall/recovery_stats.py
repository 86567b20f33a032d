"""How a stream's batch latency behaves around a fault: pure arithmetic, no I/O.

Shared by bench.recovery and the chaos harness, so that "recovered" means the same everywhere.
A stream's history is a sequence of points (end, latency), one per batch in batch order: `end` is
the wall-clock time the batch's interval closed, `latency` the seconds from then until it reached
the sink, so end + latency is when it was delivered.

- steady latency: the median latency of batches before the fault (the caller picks the window, so
  warm-up batches can be left out);
- the bound a recovered batch must meet: max(factor * steady, steady + slack). The absolute slack
  keeps a near-zero steady latency (a fast machine, a coarse clock) from making every batch late;
- recovery time: seconds from the fault to the end of the first batch, among those ending after
  it, that starts a run of `hold` consecutive batches all within the bound. Requiring a run, not
  one batch, keeps a lucky batch in the middle of the backlog from counting as recovered. None when
  no such run was delivered (the stream never recovered, or stopped too soon to tell);
- peak latency: the worst latency of a batch delivered after the fault. Batches whose interval
  closed before the fault but were still in flight count: they are the ones replayed.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

Point = tuple[float, float]  # (batch end, wall clock; latency, seconds)

DEFAULT_FACTOR = 1.5
DEFAULT_HOLD = 5
DEFAULT_SLACK = 0.005


def batch_points(started: float, interval: float, latencies: Sequence[float], first_batch: int = 0) -> list[Point]:
    """(end, latency) per batch of a stream that started at `started` (StreamMetrics.started):
    batch b covers [started + b * interval, started + (b + 1) * interval)."""
    if not interval > 0:
        raise ValueError(f"interval must be positive, got {interval!r}")
    return [(started + (first_batch + i + 1) * interval, latency) for i, latency in enumerate(latencies)]


def latencies_before(points: Sequence[Point], fault_at: float, window: float | None = None) -> list[float]:
    """Latencies of batches delivered before the fault (end + latency <= fault_at); with `window`,
    only those whose interval closed within `window` seconds before it (skips the warm-up)."""
    earliest = fault_at - window if window is not None else float("-inf")
    return [latency for end, latency in points if end + latency <= fault_at and end >= earliest]


def steady_latency(latencies_before: Sequence[float]) -> float:
    """The median latency before the fault. Raises ValueError when there is none: a recovery time
    measured against no baseline would mean nothing."""
    if not latencies_before:
        raise ValueError("no latencies before the fault to take a steady latency from")
    return float(statistics.median(latencies_before))


def latency_bound(steady: float, factor: float = DEFAULT_FACTOR, slack: float = DEFAULT_SLACK) -> float:
    """The latency a batch must not exceed to count as recovered: max(factor * steady, steady + slack)."""
    if steady < 0 or factor < 1 or slack < 0:
        raise ValueError(f"need steady >= 0, factor >= 1 and slack >= 0, got {steady!r}, {factor!r}, {slack!r}")
    return max(factor * steady, steady + slack)


def recovery_time(
    points: Sequence[Point],
    fault_at: float,
    steady: float,
    factor: float = DEFAULT_FACTOR,
    hold: int = DEFAULT_HOLD,
    slack: float = DEFAULT_SLACK,
) -> float | None:
    """Seconds from the fault until the end of the first batch ending after it from which `hold`
    consecutive batches all have latency <= latency_bound(steady, factor, slack); None if the
    points never show such a run (fewer than `hold` batches after the fault counts as never)."""
    if hold < 1:
        raise ValueError(f"hold must be at least 1, got {hold!r}")
    bound = latency_bound(steady, factor, slack)
    _check_order(points)
    after = [(end, latency) for end, latency in points if end > fault_at]
    run = 0
    for i, (_, latency) in enumerate(after):
        run = run + 1 if latency <= bound else 0
        if run == hold:
            return after[i - hold + 1][0] - fault_at
    return None


def peak_latency_after(points: Sequence[Point], fault_at: float) -> float | None:
    """The worst latency of a batch delivered after the fault (end + latency > fault_at), whether
    its interval closed before or after it; None if no batch was delivered after the fault."""
    delivered = [latency for end, latency in points if end + latency > fault_at]
    return max(delivered) if delivered else None


def _check_order(points: Sequence[Point]) -> None:
    """A run of consecutive batches only means something in batch order."""
    for (earlier, _), (later, _) in zip(points, points[1:], strict=False):
        if later < earlier:
            raise ValueError(f"points must be in batch order: a batch ending at {later} follows one ending at {earlier}")
