"""Event-time windows over a stream of (key, value) records.

A window [start, start + size) exists for every start that is a multiple of `slide` (tumbling
when slide == size). Each batch, map tasks fold their records into one accumulator per (key,
window) (zero, then add(acc, value)); the shuffle brings every key's partial accumulators to the
executor that owns the key's partition, which merges them into the window's running accumulator
(merge(a, b)) kept in that executor's keyed state. The end of batch b is the watermark: every
window that ends at or before it is complete, is emitted as WindowResult(key, start, end, value)
and leaves the state. Sources here stamp events inside their batch's interval, so no event is
ever late; an event for a window already emitted would start that window's accumulator again
and be emitted on its own at the next batch (nothing is dropped).

This module is the window logic alone, what map tasks and executors run; it knows nothing of
streams. Stream.window (squall.stream.WindowedStream) builds a stream's windowed stage from it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

_EPSILON = 1e-9


class WindowResult(NamedTuple):
    """One closed window: the aggregate `value` of `key`'s events with event time in [start, end)."""

    key: Any
    start: float
    end: float
    value: Any


@dataclass(frozen=True)
class Aggregation:
    """How a window aggregates: zero() starts an accumulator, add(acc, value) takes a value,
    merge(a, b) joins two partial accumulators."""

    zero: Callable[[], Any]
    add: Callable[[Any, Any], Any]
    merge: Callable[[Any, Any], Any]


@dataclass(frozen=True)
class WindowSpec:
    """Windows of `size` seconds every `slide` seconds, over event_time(value)."""

    size: float
    slide: float
    event_time: Callable[[Any], float]

    @classmethod
    def of(cls, size: float, slide: float | None = None, event_time: Callable[[Any], float] | None = None) -> WindowSpec:
        """Tumbling windows of `size` (sliding every `slide`), over event_time (default:
        default_event_time). Raises ValueError for a size or slide that is not positive, or a
        slide longer than the size."""
        slide = size if slide is None else slide
        if not (size > 0 and slide > 0):
            raise ValueError(f"window size and slide must be positive, got size={size!r} slide={slide!r}")
        if slide > size:
            raise ValueError(f"a slide ({slide}) longer than the window ({size}) would skip events")
        return cls(float(size), float(slide), event_time or default_event_time)

    def starts(self, t: float) -> list[float]:
        """Starts of the windows that contain event time t, each computed as index * slide (one
        float per window, whoever computes it). An event on a boundary (within float rounding)
        opens the new window: t = 0.3 is in [0.3, ...), not in [..., 0.3)."""
        last = math.floor(t / self.slide + _EPSILON)
        starts = []
        index = last
        while index * self.slide + self.size > t + _EPSILON * self.slide:
            starts.append(index * self.slide)
            index -= 1
        return starts


def window_fold(spec: WindowSpec, agg: Aggregation, records: Iterator[Any]) -> Iterable[Any]:
    """Map side: (key, value) records -> (key, (window start, partial accumulator))."""
    partial: dict[tuple[Any, float], Any] = {}
    event_time, add, zero = spec.event_time, agg.add, agg.zero
    if spec.slide != spec.size:
        for record in records:
            key, value = record
            for start in spec.starts(event_time(value)):
                slot = (key, start)
                partial[slot] = add(partial[slot] if slot in partial else zero(), value)
        return [(key, (start, acc)) for (key, start), acc in partial.items()]
    # Tumbling windows, every record of a map task goes through here: the one window's start is
    # computed inline, as starts() computes it (a record on a boundary opens the new window).
    size = spec.size
    floor = math.floor
    for record in records:
        key, value = record
        t = event_time(value)
        index = floor(t / size + _EPSILON)
        if index * size + size > t + _EPSILON * size:
            slot = (key, index * size)
            partial[slot] = add(partial[slot] if slot in partial else zero(), value)
        else:  # float rounding put t past the window floor() found: starts() says which it is in
            for start in spec.starts(t):
                slot = (key, start)
                partial[slot] = add(partial[slot] if slot in partial else zero(), value)
    return [(key, (start, acc)) for (key, start), acc in partial.items()]


@dataclass(frozen=True)
class WindowOperator:
    """Reduce side, run by executors as a state step of kind "window"."""

    spec: WindowSpec
    agg: Aggregation
    stream_start: float
    batch_interval: float

    def apply(self, groups: Iterable[Any], table: dict[Any, Any], batch: int) -> list[WindowResult]:
        """Merge a batch's partial accumulators into `table`, then emit (and forget) every window
        that ends by the end of batch `batch`, ordered by end and key."""
        merged: dict[Any, dict[float, Any]] = {}  # new accumulators, committed only if all succeed
        for key, partials in groups:
            windows = dict(table.get(key, {}))
            for start, acc in partials:
                windows[start] = self.agg.merge(windows[start], acc) if start in windows else acc
            merged[key] = windows
        table.update(merged)
        watermark = self.stream_start + (batch + 1) * self.batch_interval
        out = []
        for key in list(table):
            windows = table[key]
            for start in [s for s in windows if s + self.spec.size <= watermark + 1e-9]:
                out.append(WindowResult(key, start, start + self.spec.size, windows.pop(start)))
            if not windows:
                del table[key]
        out.sort(key=lambda r: (r.end, repr(r.key)))
        return out


def default_event_time(value: Any) -> float:
    """An `event_time` attribute or key, or the last element of a tuple."""
    if hasattr(value, "event_time"):
        return float(value.event_time)
    if isinstance(value, dict) and "event_time" in value:
        return float(value["event_time"])
    if isinstance(value, tuple) and value:
        return float(value[-1])
    raise TypeError(f"cannot tell the event time of {value!r:.100}; pass window(..., event_time=fn)")


def _count_add(acc: int, value: Any) -> int:
    return acc + 1


def _plus(a: Any, b: Any) -> Any:
    return a + b


class _Empty:
    """The zero of a reduce: replaced by the first value."""


class _ReduceAdd:
    def __init__(self, fn: Callable[[Any, Any], Any]) -> None:
        self.fn = fn

    def __call__(self, acc: Any, value: Any) -> Any:
        return value if isinstance(acc, _Empty) else self.fn(acc, value)


class _ReduceMerge(_ReduceAdd):
    def __call__(self, a: Any, b: Any) -> Any:
        if isinstance(a, _Empty):
            return b
        if isinstance(b, _Empty):
            return a
        return self.fn(a, b)


COUNT = Aggregation(int, _count_add, _plus)


def reducing(fn: Callable[[Any, Any], Any]) -> Aggregation:
    """The aggregation of values combined with fn(a, b); a window's first value is its start."""
    return Aggregation(_Empty, _ReduceAdd(fn), _ReduceMerge(fn))
