"""A histogram of durations with fixed buckets, as Prometheus keeps them: a count per bucket
(cumulative, up to each upper bound), the sum and the count. Pure and small: a service's core
observes into it on its hot path (one bisect and two additions), and its metrics endpoint reads
it when scraped.
"""

from __future__ import annotations

from bisect import bisect_left

# Seconds: from a sub-millisecond task to a minute-long recovery, about three buckets a decade.
DURATION_BUCKETS: tuple[float, ...] = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                                       5.0, 10.0, 30.0, 60.0)


class Histogram:
    def __init__(self, bounds: tuple[float, ...] = DURATION_BUCKETS) -> None:
        if list(bounds) != sorted(set(bounds)) or not bounds:
            raise ValueError(f"bucket bounds must be distinct and increasing, got {bounds!r}")
        self.bounds = bounds
        self._counts = [0] * (len(bounds) + 1)  # the last: above every bound (+Inf only)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self._counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    @property
    def buckets(self) -> list[tuple[float, int]]:
        """(upper bound, observations <= it), cumulative, ending with (inf, count)."""
        out, running = [], 0
        for bound, n in zip((*self.bounds, float("inf")), self._counts, strict=True):
            running += n
            out.append((bound, running))
        return out
