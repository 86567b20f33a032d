"""The chaos harness's job: two stateful streams, and what plain Python says they must output.

- a running sum per key (update_state_by_key), from a generator source seeded by the trial;
- a windowed count per key (tumbling event-time windows), from a rate source;
- with a slow_executor fault, also a stateless stream (each batch's sum per key): the one whose
  micro-batches speculation may copy, so the one whose latency says what it is worth.

Both are deterministic functions of (seed, partition, batch), so a replayed batch makes the same
records and the reference can be computed after the run for the batches that were delivered.
"""

from __future__ import annotations

import math
import operator
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from squall import sources
from squall.sources import rate_batch

KEYS = 13
SUM_PARTITIONS = 3
STATE_PARTITIONS = 4
RECORDS_PER_PARTITION = 8
WINDOW_SECONDS = 0.5
WINDOW_RATE = 400.0  # events per second, over all WINDOW_PARTITIONS
WINDOW_PARTITIONS = 2


def sum_events(seed: int, partition: int, batch: int) -> list[tuple[str, int]]:
    return [
        (f"k{(batch * 7 + partition * 3 + i + seed) % KEYS}", (seed * 31 + batch * 100 + partition * 10 + i) % 1000)
        for i in range(RECORDS_PER_PARTITION)
    ]


def _window_record(partition: int, index: int, event_time: float) -> tuple[str, float]:
    return (f"w{(index + partition) % 5}", event_time)


def _add(values: list[int], old: int | None) -> int:
    return (old or 0) + sum(values)


@dataclass
class Collected:
    """What a stream's sink received, batch by batch (the sink runs on the driver's stream thread)."""

    batches: list[tuple[int, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def sink(self, batch: int, records: list[Any]) -> None:
        with self.lock:
            self.batches.append((batch, records))

    def __len__(self) -> int:
        return len(self.batches)


def start_streams(ctx: Any, seed: int, interval: float, group_size: int) -> tuple[Any, Collected, Any, Collected]:
    sums, windows = Collected(), Collected()

    def events(partition: int, batch: int) -> list[tuple[str, int]]:
        return sum_events(seed, partition, batch)

    sum_stream = (
        ctx.stream(sources.generator(events, partitions=SUM_PARTITIONS), batch_interval=interval, group_size=group_size)
        .update_state_by_key(_add, partitions=STATE_PARTITIONS)
        .foreach_batch(sums.sink)
        .start()
    )
    window_stream = (
        ctx.stream(sources.rate(WINDOW_RATE, partitions=WINDOW_PARTITIONS, record=_window_record),
                   batch_interval=interval, group_size=group_size)
        .key_by(lambda e: e[0])
        .window(WINDOW_SECONDS)
        .count(partitions=STATE_PARTITIONS)
        .foreach_batch(windows.sink)
        .start()
    )
    return sum_stream, sums, window_stream, windows


def start_stateless(ctx: Any, seed: int, interval: float, group_size: int) -> tuple[Any, Collected]:
    got = Collected()

    def events(partition: int, batch: int) -> list[tuple[str, int]]:
        return sum_events(seed, partition, batch)

    stream = (
        ctx.stream(sources.generator(events, partitions=SUM_PARTITIONS), batch_interval=interval, group_size=group_size)
        .reduce_by_key(operator.add, partitions=STATE_PARTITIONS)
        .foreach_batch(got.sink)
        .start()
    )
    return stream, got


def batch_sum_differences(seed: int, got: Collected) -> list[str]:
    """Where the stateless stream's per-batch sums differ from plain Python."""
    problems = []
    batches = [b for b, _ in got.batches]
    if batches != list(range(len(batches))):
        problems.append(f"batch sums: batches delivered out of order, repeated or lost: {batches[:50]}")
    for batch, records in got.batches:
        expected: Counter[str] = Counter()
        for p in range(SUM_PARTITIONS):
            for key, value in sum_events(seed, p, batch):
                expected[key] += value
        if sorted(records) != sorted(expected.items()):
            problems.append(f"batch sums: batch {batch} differs from plain Python")
    return problems


def sum_differences(seed: int, got: Collected) -> list[str]:
    """Where the running sums differ from plain Python (empty: exactly right, each batch once)."""
    problems = []
    batches = [b for b, _ in got.batches]
    if batches != list(range(len(batches))):
        problems.append(f"running sum: batches delivered out of order, repeated or lost: {batches[:50]}")
    running: Counter[str] = Counter()
    for batch, records in sorted(got.batches, key=lambda item: item[0]):
        touched = set()
        for p in range(SUM_PARTITIONS):
            for key, value in sum_events(seed, p, batch):
                running[key] += value
                touched.add(key)
        expected = {k: running[k] for k in touched}
        if dict(records) != expected or len(records) != len(expected):
            problems.append(f"running sum: batch {batch} differs from plain Python")
    return problems


def window_differences(got: Collected, started: float, interval: float) -> list[str]:
    """Where the windowed counts differ from plain Python over the delivered batches' events."""
    problems = []
    batches = [b for b, _ in got.batches]
    if batches != list(range(len(batches))):
        problems.append(f"windows: batches delivered out of order, repeated or lost: {batches[:50]}")
    expected: Counter[tuple[str, int]] = Counter()
    for b in range(len(batches)):
        for p in range(WINDOW_PARTITIONS):
            for key, t in rate_batch(WINDOW_RATE, WINDOW_PARTITIONS, interval, started, _window_record, p, b):
                expected[(key, math.floor(t / WINDOW_SECONDS + 1e-9))] += 1
    watermark = started + len(batches) * interval
    closed = {k: n for k, n in expected.items() if (k[1] + 1) * WINDOW_SECONDS <= watermark + 1e-9}
    emitted: dict[tuple[str, int], int] = {}
    for _, records in got.batches:
        for r in records:
            slot = (r.key, round(r.start / WINDOW_SECONDS))
            if slot in emitted:
                problems.append(f"windows: window {slot} emitted twice")
            emitted[slot] = r.value
    if emitted != closed:
        wrong = sorted(set(emitted.items()) ^ set(closed.items()))[:5]
        problems.append(f"windows: {len(set(emitted.items()) ^ set(closed.items()))} counts differ from plain Python, e.g. {wrong}")
    return problems
