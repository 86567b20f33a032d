"""What preemption did on this executor, for GetTracked's counters: the core's decisions
(suspensions, resumes, starvation slices, kills and the work kills threw away). They outlive a
write-off of the executor's work (the core starts a new TaskFlow then, with the same counters)."""

from __future__ import annotations

import bisect
from collections.abc import Collection
from dataclasses import asdict, dataclass

from squall.common.quantiles import quantile


@dataclass(slots=True)
class PreemptionCounters:
    suspensions: int = 0  # SuspendTask given
    resumes: int = 0  # ResumeTask for good (no latency task left to run)
    slices: int = 0  # ResumeTask for a slice: the batch task was suspended for batch_max_suspension
    kills: int = 0  # PreemptTask given (preemption "kill")
    thrown_away_seconds: float = 0.0  # how long the killed tasks had run

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


# Upper bounds (ms) of the suspension-latency buckets counted for GetTracked: cumulative counts
# ("suspension_le_<bound>ms", as Prometheus histograms count), so that a reader can pool several
# executors' latencies into one distribution, which their percentiles cannot be.
SUSPENSION_BUCKETS_MS = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)


def suspension_figures(seconds: Collection[float]) -> dict[str, float]:
    """Suspension latency (a suspend request to the task parked), in ms, over the kept ones: p50,
    p99, max, and how many there are within each of SUSPENSION_BUCKETS_MS."""
    values = sorted(seconds)
    figures = {"suspension_p50_ms": 0.0, "suspension_p99_ms": 0.0, "suspension_max_ms": 0.0,
               "suspension_count": float(len(values))}
    if values:
        figures.update({"suspension_p50_ms": round(quantile(values, 0.5) * 1000, 4),
                        "suspension_p99_ms": round(quantile(values, 0.99) * 1000, 4),
                        "suspension_max_ms": round(values[-1] * 1000, 4)})
    for bound in SUSPENSION_BUCKETS_MS:
        figures[f"suspension_le_{bound:g}ms"] = float(bisect.bisect_right(values, bound / 1000))
    return figures
