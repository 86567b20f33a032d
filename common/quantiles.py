"""The one definition of a quantile that stream metrics, benchmarks and demos report.

Linear interpolation between the closest ranks: the q-quantile of n sorted values sits at
position (n - 1) * q, between values[floor] and values[floor + 1]. It is numpy's default and
statistics.quantiles(method="inclusive"); its 0.5-quantile is statistics.median. The published
benchmark figures (docs/benchmarks.md) were computed this way. Every reported p50, p90 and p99
comes from here, so figures from different places compare.
"""

from __future__ import annotations

import math
from collections.abc import Iterable


def quantile(values: Iterable[float], q: float) -> float:
    """The q-quantile (0 <= q <= 1) of `values` (in any order), interpolated between the closest
    ranks. Raises ValueError for an empty `values`: what "no sample" reports (0, infinity, NaN)
    is the caller's to say."""
    if not 0 <= q <= 1:
        raise ValueError(f"a quantile is between 0 and 1, got {q!r}")
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values to take a quantile of")
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
