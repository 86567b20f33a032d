"""squall.sources.rate: the rate is the stream's total over its partitions, dealt evenly and
exactly, and every (partition, batch) can be made again."""

from __future__ import annotations

from collections import Counter

import pytest

from squall import sources
from squall.sources import rate_batch


def events(source: sources.StreamSource, batches: int, interval: float, start: float = 0.0) -> dict[int, list]:  # type: ignore[type-arg]
    fn = source.batch_function(start, interval)
    return {p: [e for b in range(batches) for e in fn(p, b)] for p in range(source.partitions)}


def test_the_rate_is_events_per_second_over_all_partitions() -> None:
    made = events(sources.rate(10_000, partitions=4), batches=10, interval=0.1)
    assert sum(len(e) for e in made.values()) == 10_000  # one second of the stream
    assert [len(e) for e in made.values()] == [2500] * 4


@pytest.mark.parametrize("rate,partitions,interval,seconds", [(10, 4, 0.1, 1), (7, 3, 0.05, 2), (333.3, 5, 0.02, 3), (1, 4, 0.3, 3)])
def test_a_rate_that_partitions_do_not_divide_is_split_evenly_and_exactly(rate: float, partitions: int, interval: float, seconds: int) -> None:
    batches = round(seconds / interval)
    made = events(sources.rate(rate, partitions=partitions), batches, interval)
    counts = [len(e) for e in made.values()]
    assert sum(counts) == int(rate * seconds)
    assert max(counts) - min(counts) <= 1


def test_each_event_is_in_its_batch_interval_and_partitions_number_their_events_in_order() -> None:
    rate, partitions, interval, start = 90.0, 4, 0.1, 1000.0
    fn = sources.rate(rate, partitions=partitions).batch_function(start, interval)
    times = []
    for p in range(partitions):
        indices = []
        for b in range(20):
            for partition, index, t in fn(p, b):
                assert partition == p
                assert start + b * interval - 1e-9 <= t < start + (b + 1) * interval
                indices.append(index)
                times.append(t)
        assert indices == list(range(len(indices)))
    gaps = Counter(round(b - a, 9) for a, b in zip(sorted(times), sorted(times)[1:], strict=False))
    assert set(gaps) == {round(1 / rate, 9)}  # the stream's events, evenly spaced at the total rate


def test_a_batch_is_made_again_identically_and_the_driver_knows_its_size() -> None:
    source = sources.rate(1234.5, partitions=3, record=lambda p, i, t: f"{p}:{i}:{t!r}")
    first, again = source.batch_function(50.0, 0.07), source.batch_function(50.0, 0.07)
    for b in (0, 1, 17, 1000):
        made = [first(p, b) for p in range(3)]
        assert made == [again(p, b) for p in reversed(range(3))][::-1]
        assert source.batch_records(b, 0.07) == sum(len(m) for m in made)
    assert rate_batch(1234.5, 3, 0.07, 50.0, None, 2, 5) == rate_batch(1234.5, 3, 0.07, 50.0, None, 2, 5)


def test_sources_that_must_run_to_count_say_so() -> None:
    assert sources.generator(lambda p, b: [p, b], partitions=2).batch_records(0, 0.1) is None
