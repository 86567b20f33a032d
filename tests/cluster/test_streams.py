"""Streams on a real cluster: replayable sources, batch timing, sinks, stop and failures."""

from __future__ import annotations

import math
import operator
import threading
import time
from collections import Counter

import pytest

import squall
from squall import sources
from squall.sources import rate_batch
from tests.cluster.helpers import expected_rate_count, keyed_rate_count
from tests.polling import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(60)]


def collector():  # type: ignore[no-untyped-def]
    got: list[tuple[int, list]] = []
    lock = threading.Lock()

    def sink(batch: int, records: list) -> None:
        with lock:
            got.append((batch, records))

    return got, sink


def count_rate_batches(ctx, rate: float, partitions: int, interval: float, group_size: int, keys: int, batches: int):  # type: ignore[no-untyped-def]
    """Run keyed_rate_count until it has delivered `batches` batches, stop it; the batches and the stream."""
    got, sink = collector()
    stream = keyed_rate_count(ctx, sink, rate, partitions, interval, group_size, keys).start()
    wait_until(lambda: len(got) >= batches, timeout=20, what=f"{batches} batches")
    stream.stop(timeout=20)
    return got, stream


def test_a_rate_stream_counts_exactly_what_the_source_emitted(ctx) -> None:  # type: ignore[no-untyped-def]
    rate, interval, partitions = 1500.0, 0.05, 3
    got, stream = count_rate_batches(ctx, rate, partitions, interval, group_size=4, keys=4, batches=8)
    assert [b for b, _ in got] == list(range(len(got)))  # in order, none lost, none twice
    for batch, records in got:
        assert dict(records) == expected_rate_count(rate, partitions, interval, batch, keys=4), batch
    assert stream.metrics()["batches"] == len(got)


def test_metrics_count_the_records_the_source_produced_and_those_delivered_apart(ctx) -> None:  # type: ignore[no-untyped-def]
    rate, interval, partitions = 1000.0, 0.05, 2
    got, stream = count_rate_batches(ctx, rate, partitions, interval, group_size=2, keys=3, batches=6)
    m = stream.metrics()
    produced = sum(len(rate_batch(rate, partitions, interval, 0.0, None, p, b)) for b in range(len(got)) for p in range(partitions))
    assert m["input_records"] == produced == round(rate * interval) * len(got)
    assert m["output_records"] == sum(len(records) for _, records in got) <= 3 * len(got)  # one per key and batch
    assert m["input_records_per_second"] > 10 * m["output_records_per_second"] > 0
    assert "records_per_second" not in m  # the old name did not say which records it counted


def test_a_generator_stream_reports_output_records_only(ctx) -> None:  # type: ignore[no-untyped-def]
    got, sink = collector()
    stream = ctx.stream(sources.generator(lambda p, b: [b] * 3, partitions=2), batch_interval=0.02, group_size=2)
    stream = stream.foreach_batch(sink).start()
    wait_until(lambda: len(got) >= 2, timeout=20, what="2 batches")
    stream.stop(timeout=20)
    m = stream.metrics()
    assert m["output_records"] == 6 * len(got)
    assert "input_records" not in m and "input_records_per_second" not in m  # only running the source could tell


def test_source_tasks_start_only_once_their_batch_interval_is_over(ctx) -> None:  # type: ignore[no-untyped-def]
    got, sink = collector()
    interval = 0.05
    stream = ctx.stream(sources.generator(lambda p, b: [(b, time.time())], partitions=2), batch_interval=interval, group_size=6)
    stream = stream.foreach_batch(sink).start()
    wait_until(lambda: len(got) >= 6, timeout=20, what="a group of batches")
    stream.stop(timeout=20)
    started = stream.metrics_state.started
    for batch, records in got:
        end = started + (batch + 1) * interval
        for b, made_at in records:
            assert b == batch
            assert made_at >= end - 0.002, f"batch {batch} was read {end - made_at:.3f}s before its interval ended"
    latencies = stream.metrics_state.latencies
    assert max(latencies) < 2.0 and min(latencies) >= 0.0


def test_stop_finishes_the_group_in_flight_and_loses_nothing(ctx) -> None:  # type: ignore[no-untyped-def]
    got, sink = collector()
    stream = ctx.stream(sources.generator(lambda p, b: range(b * 10 + p * 5, b * 10 + p * 5 + 5), partitions=2),
                        batch_interval=0.02, group_size=5)
    stream = stream.map(lambda x: x * 2).foreach_batch(sink).start()
    wait_until(lambda: len(got) >= 2, timeout=20, what="the first batches")
    stream.stop(timeout=20)
    assert len(got) % 5 == 0  # whole groups: every batch a started group held was delivered
    assert [b for b, _ in got] == list(range(len(got)))
    for batch, records in got:
        assert sorted(records) == [2 * x for x in range(batch * 10, batch * 10 + 10)]


def test_a_failing_batch_stops_the_stream_with_an_error_naming_it(ctx) -> None:  # type: ignore[no-untyped-def]
    got, sink = collector()

    def explode_in_batch_3(record):  # type: ignore[no-untyped-def]
        if record[0] == 3:
            raise ValueError("bad record in batch 3")
        return record

    stream = ctx.stream(sources.generator(lambda p, b: [(b, p)], partitions=2), batch_interval=0.02, group_size=2)
    stream = stream.map(explode_in_batch_3).foreach_batch(sink).start()
    with pytest.raises(squall.StreamError, match="batch 3") as info:
        assert stream.await_termination(timeout=20) is not None
    assert isinstance(info.value.cause, squall.TaskError)
    assert [b for b, _ in got] == [0, 1, 2]  # everything before the failure was delivered


def test_a_source_that_cannot_be_shipped_fails_at_start(ctx) -> None:  # type: ignore[no-untyped-def]
    lock = threading.Lock()
    stream = ctx.stream(sources.generator(lambda p, b: [lock], partitions=1), batch_interval=0.05, group_size=1)
    with pytest.raises(Exception, match="cannot"):
        stream.start()


def test_bad_stream_arguments_are_refused(ctx) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError):
        sources.rate(0)
    with pytest.raises(ValueError):
        sources.generator(lambda p, b: [], partitions=0)
    with pytest.raises(ValueError):
        ctx.stream(sources.rate(10), batch_interval=0)
    with pytest.raises(ValueError):
        ctx.stream(sources.rate(10), group_size=0)


def test_auto_group_size_grows_when_boundaries_cost_too_much_and_settles_within_bounds(ctx) -> None:  # type: ignore[no-untyped-def]
    got, sink = collector()
    stream = ctx.stream(sources.generator(lambda p, b: [b], partitions=2), batch_interval=0.002, group_size="auto")
    stream = stream.foreach_batch(sink).start()
    settings = ctx.settings
    cap = int(settings.group_max_seconds / 0.002)

    def settled() -> bool:
        # Three groups in a row inside the band (or at the cap). The tuner reacts to a group only
        # after it ends, so any single group may be out of band on a noisy machine; settling means
        # such excursions end.
        # A group's size is recorded when it is submitted, its overhead when it ends: pair them from
        # the first group (the window of 1,000 groups is not reached before this settles).
        overheads = list(stream.metrics_state.overheads)
        recent = list(zip(stream.metrics_state.group_sizes, overheads, strict=False))[-3:]
        return len(recent) == 3 and all(o <= settings.group_overhead_upper or s == cap for s, o in recent)

    wait_until(lambda: len(stream.metrics_state.group_sizes) >= 12 and settled(), timeout=60, what="settled")
    stream.stop(timeout=20)
    sizes = list(stream.metrics_state.group_sizes)
    assert sizes[0] == 1 and max(sizes) > 1  # at 2 ms batches one batch per group costs too much
    assert all(size <= cap for size in sizes)
    assert [b for b, _ in got] == list(range(len(got)))


def test_a_running_sum_per_key_equals_plain_python_over_the_same_events(ctx) -> None:  # type: ignore[no-untyped-def]
    got, sink = collector()

    def events(partition: int, batch: int) -> list[tuple[str, int]]:
        return [(f"k{(batch * 7 + partition * 3 + i) % 5}", batch * 100 + partition * 10 + i) for i in range(6)]

    stream = (
        ctx.stream(sources.generator(events, partitions=3), batch_interval=0.01, group_size=4)
        .update_state_by_key(lambda values, old: (old or 0) + sum(values), partitions=2)
        .foreach_batch(sink)
        .start()
    )
    wait_until(lambda: len(got) >= 12, timeout=30, what="a dozen batches")
    stream.stop(timeout=20)
    running: Counter[str] = Counter()
    for batch, records in got:  # the reference: the same events, summed in plain Python
        touched = set()
        for p in range(3):
            for key, value in events(p, batch):
                running[key] += value
                touched.add(key)
        assert dict(records) == {k: running[k] for k in touched}, batch


def _reference_windows(events: list[tuple[str, float]], size: float, slide: float) -> dict[tuple[str, int], int]:
    """(key, window index) -> count, windows [index * slide, index * slide + size)."""
    counts: Counter[tuple[str, int]] = Counter()
    for key, t in events:
        index = math.floor(t / slide + 1e-9)  # an event on a boundary opens the new window
        while index * slide + size > t + 1e-9 * slide:
            counts[(key, index)] += 1
            index -= 1
    return dict(counts)


@pytest.mark.parametrize("size,slide", [(0.1, 0.1), (0.1, 0.05)])
def test_a_windowed_count_equals_plain_python_over_the_same_events(ctx, size: float, slide: float) -> None:  # type: ignore[no-untyped-def]
    got, sink = collector()
    rate, interval, partitions = 800.0, 0.02, 2

    def record(p: int, i: int, t: float) -> tuple[str, float]:
        return (f"k{i % 3}", t)

    stream = (
        ctx.stream(sources.rate(rate, partitions=partitions, record=record), batch_interval=interval, group_size=5)
        .key_by(lambda e: e[0])
        .window(size, slide)
        .count(partitions=2)
        .foreach_batch(sink)
        .start()
    )
    wait_until(lambda: len(got) >= 30, timeout=30, what="30 batches")
    stream.stop(timeout=20)
    start = stream.metrics_state.started
    watermark = start + len(got) * interval
    events = [event for b in range(len(got)) for p in range(partitions) for event in rate_batch(rate, partitions, interval, start, record, p, b)]
    expected = {k: v for k, v in _reference_windows(events, size, slide).items() if k[1] * slide + size <= watermark + 1e-9}
    emitted = {(r.key, round(r.start / slide)): r.value for _, records in got for r in records}
    assert emitted == expected
    assert all(r.end - r.start == pytest.approx(size) for _, records in got for r in records)
    assert stream.metrics()["window_latency_p99"] < 2.0


def test_a_broadcast_table_is_shipped_once_and_joins_every_batch(ctx) -> None:  # type: ignore[no-untyped-def]
    campaigns = ctx.broadcast({f"ad{i}": f"campaign{i % 4}" for i in range(200)})
    batches = [
        ctx.range(b * 50, b * 50 + 50, partitions=4).map(lambda x: (campaigns.value[f"ad{x % 200}"], 1)).reduce_by_key(operator.add, 2)
        for b in range(8)
    ]
    results = ctx.run_jobs(batches, group_size=4)
    for b, records in enumerate(results):
        expected = Counter(f"campaign{(x % 200) % 4}" for x in range(b * 50, b * 50 + 50))
        assert dict(records) == dict(expected)
    first, second = sorted(ctx.last_run.groups, key=lambda g: g.group_id)  # listed as they end: the second may end first
    # The table travels once to each executor: the first group takes it to every executor it uses.
    # The second ships it only to an executor the first did not use (placement steers work away
    # from an executor that looks slow on a loaded machine), never to all of them again.
    assert first.code_bytes > 0 and second.code_bytes < first.code_bytes


def test_with_bad_records_skip_a_raising_record_is_skipped_and_counted(cluster) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import fast_settings

    def picky(x):  # type: ignore[no-untyped-def]
        if x % 10 == 3:
            raise ValueError(f"bad record {x}")
        return (x % 2, x)

    with squall.connect(cluster.address, fast_settings(bad_records="skip")) as ctx:
        results = ctx.run_jobs([ctx.range(0, 100, partitions=4).map(picky).reduce_by_key(operator.add, 2)] * 3, group_size=3)
        for records in results:
            assert dict(records) == {k: sum(x for x in range(100) if x % 10 != 3 and x % 2 == k) for k in (0, 1)}
        assert ctx.last_run.skipped == 3 * 10  # counted, never silently dropped
        got, sink = collector()
        stream = ctx.stream(sources.generator(lambda p, b: range(p * 10, p * 10 + 10), partitions=2), batch_interval=0.02, group_size=4)
        stream = stream.map(picky).foreach_batch(sink).start()
        wait_until(lambda: len(got) >= 4, timeout=20, what="a group of batches")
        stream.stop(timeout=20)
        assert stream.metrics()["skipped_records"] == 2 * len(got)  # records 3 and 13 of every batch
        assert all(len(records) == 18 for _, records in got)


def test_a_directory_source_reads_every_appended_line_once_and_replays_exactly(ctx, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from squall.sources import directory_batch

    got, sink = collector()
    files = [tmp_path / f"log-{i}.txt" for i in range(3)]
    for f in files:
        f.write_text("")
    source = sources.directory(tmp_path, partitions=2, name="test-dir")
    stream = ctx.stream(source, batch_interval=0.02, group_size=3).foreach_batch(sink).start()
    written = []
    for n in range(60):  # appended while the stream runs, some lines in two writes
        f = files[n % 3]
        line = f"line {n} of {f.name}"
        with open(f, "a") as out:
            out.write(line[:5])
            out.flush()
            out.write(line[5:] + "\n")
        written.append(line)
        if n % 10 == 0:
            seen = n // 10
            wait_until(lambda seen=seen: len(got) > seen, timeout=10, what="the stream to keep up")
    done = len(got)
    wait_until(lambda: len(got) >= done + 6, timeout=10, what="batches after the last write")
    stream.stop(timeout=20)
    read = [line for _, records in got for line in records]
    assert sorted(read) == sorted(written)  # every line once: none lost, none twice, none torn
    for batch, records in got[:10]:  # a replay of a batch reads exactly what it read
        replayed = directory_batch(str(tmp_path.resolve()), "test-dir", 2, 0, batch) + directory_batch(str(tmp_path.resolve()), "test-dir", 2, 1, batch)
        assert sorted(replayed) == sorted(records)
