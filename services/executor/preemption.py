"""What preemption did on this executor, for GetTracked's counters: the core's decisions
(suspensions, resumes, starvation slices, kills and the work kills threw away). They outlive a
write-off of the executor's work (the core starts a new TaskFlow then, with the same counters)."""

from __future__ import annotations

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


def suspension_figures(seconds: Collection[float]) -> dict[str, float]:
    """Suspension latency (a suspend request to the task parked), in ms, over the kept ones."""
    if not seconds:
        return {"suspension_p50_ms": 0.0, "suspension_p99_ms": 0.0, "suspension_max_ms": 0.0}
    values = list(seconds)
    return {"suspension_p50_ms": round(quantile(values, 0.5) * 1000, 4),
            "suspension_p99_ms": round(quantile(values, 0.99) * 1000, 4),
            "suspension_max_ms": round(max(values) * 1000, 4)}
