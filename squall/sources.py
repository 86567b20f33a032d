"""Stream sources. Each is replayable: the records of any (partition, batch) can be made again,
which is what lets a lost batch be recomputed.

- `generator(fn, partitions)`: records are fn(partition, batch), any deterministic function.
- `rate(events_per_second, partitions, record=None)`: each partition emits events at a fixed rate;
  event i of a partition happens at start + i / rate, and record(partition, i, event_time) makes
  it (default: the tuple (partition, i, event_time)). Batch b holds the events of its interval.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

Record = Callable[[int, int, float], Any]


@dataclass(frozen=True)
class StreamSource:
    partitions: int

    def batch_function(self, start: float, batch_interval: float) -> Callable[[int, int], Iterable[Any]]:
        """fn(partition, batch) for a stream that started at wall-clock `start`."""
        raise NotImplementedError


@dataclass(frozen=True)
class GeneratorStreamSource(StreamSource):
    fn: Callable[[int, int], Iterable[Any]]

    def batch_function(self, start: float, batch_interval: float) -> Callable[[int, int], Iterable[Any]]:
        return self.fn


@dataclass(frozen=True)
class RateStreamSource(StreamSource):
    events_per_second: float
    record: Record | None = None

    def batch_function(self, start: float, batch_interval: float) -> Callable[[int, int], Iterable[Any]]:
        return functools.partial(rate_batch, self.events_per_second, batch_interval, start, self.record)


def rate_batch(rate: float, interval: float, start: float, record: Record | None, partition: int, batch: int) -> list[Any]:
    """The events of one partition in one batch interval (executed on executors)."""
    first = math.floor(rate * batch * interval)
    last = math.floor(rate * (batch + 1) * interval)
    make = record or (lambda p, i, t: (p, i, t))
    return [make(partition, i, start + i / rate) for i in range(first, last)]


def generator(fn: Callable[[int, int], Iterable[Any]], partitions: int = 4) -> StreamSource:
    _check_partitions(partitions)
    if not callable(fn):
        raise TypeError(f"generator() needs fn(partition, batch), got {type(fn).__name__}")
    return GeneratorStreamSource(partitions=partitions, fn=fn)


def rate(events_per_second: float, partitions: int = 4, record: Record | None = None) -> StreamSource:
    _check_partitions(partitions)
    if not events_per_second > 0:
        raise ValueError(f"rate() needs a positive events_per_second, got {events_per_second!r}")
    return RateStreamSource(partitions=partitions, events_per_second=float(events_per_second), record=record)


def _check_partitions(partitions: int) -> None:
    if not isinstance(partitions, int) or partitions < 1:
        raise ValueError(f"a source needs a positive number of partitions, got {partitions!r}")
