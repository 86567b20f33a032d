"""Judging a YSB run: window-latency percentiles and the search for the highest offered rate an
engine sustains (it takes in at least SUSTAINED_FRACTION of the rate and its p99 window latency
stays within a bound). The workload itself is squall.ysb.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from squall.common.quantiles import quantile

SUSTAINED_FRACTION = 0.95


@dataclass(frozen=True)
class LatencyStats:
    """Percentiles of window latencies, in seconds (squall.common.quantiles). With no latency at
    all, every percentile is infinite: a run that emitted no window has not shown any latency bound."""

    seconds: Sequence[float] = field(default_factory=tuple)

    def _quantile(self, q: float) -> float:
        return quantile(self.seconds, q) if self.seconds else math.inf

    @property
    def p50(self) -> float:
        return self._quantile(0.5)

    @property
    def p99(self) -> float:
        return self._quantile(0.99)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.seconds) if self.seconds else math.inf


RateRunner = Callable[[int], Mapping[str, Any]]


def is_sustained(result: Mapping[str, Any], latency_bound: float, min_fraction: float = SUSTAINED_FRACTION) -> bool:
    """Whether a run result (keys offered, achieved, p99; "skipped" if it did not run) sustained
    its offered rate: achieved >= min_fraction * offered and p99 window latency <= latency_bound."""
    if result.get("skipped"):
        return False
    return result["achieved"] >= min_fraction * result["offered"] and result["p99"] <= latency_bound


def highest_sustained_rate(
    rates: Iterable[int],
    run_rate: RateRunner,
    latency_bound: float,
    min_fraction: float = SUSTAINED_FRACTION,
    stop_at_first_failure: bool = True,
) -> tuple[int | None, list[Mapping[str, Any]]]:
    """Run `run_rate(rate)` for each offered rate, lowest first, and find the highest sustained one.

    Returns (highest sustained rate or None, the results in the order run). By default the search
    stops at the first rate that is not sustained, since a higher rate is not expected to be.
    """
    best: int | None = None
    results: list[Mapping[str, Any]] = []
    for rate in sorted(rates):
        result = run_rate(rate)
        results.append(result)
        if is_sustained(result, latency_bound, min_fraction):
            best = rate
        elif stop_at_first_failure:
            break
    return best, results
