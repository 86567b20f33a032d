"""Streams writing to sinks on a real cluster: batch files committed exactly once, and a publisher."""

from __future__ import annotations

from pathlib import Path

import pytest

import squall
from squall import sources
from squall.sinks import DirectorySink, PubSink, subscribe
from tests.cluster.helpers import expected_rate_count, keyed_rate_count
from tests.polling import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(60)]


def numbers(partition: int, batch: int) -> range:
    return range(batch * 10 + partition * 5, batch * 10 + partition * 5 + 5)


def expected_numbers(batch: int) -> list[int]:
    """What the stream below makes of one batch, in plain Python (partitions in order)."""
    return [2 * x for p in range(2) for x in numbers(p, batch)]


def test_a_stream_commits_one_file_per_batch_with_exactly_its_records(ctx, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with DirectorySink(tmp_path) as sink:
        stream = ctx.stream(sources.generator(numbers, partitions=2), batch_interval=0.02, group_size=3)
        stream = stream.map(lambda x: x * 2).foreach_batch(sink).start()
        wait_until(lambda: len(sink.committed_batches()) >= 6, timeout=20, what="6 committed batches")
        stream.stop(timeout=20)
        n = stream.metrics()["batches"]
        assert sink.committed_batches() == list(range(n))
        for batch in range(n):
            assert sink.read_batch(batch) == expected_numbers(batch), batch
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"batch-{b:012d}.jsonl" for b in range(n)]  # nothing else


def test_a_keyed_rate_stream_writes_what_the_source_emitted(ctx, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rate, interval, partitions = 800.0, 0.05, 2
    with DirectorySink(tmp_path, format="pickle") as sink:
        stream = keyed_rate_count(ctx, sink, rate, partitions, interval, group_size=2, keys=3).start()
        wait_until(lambda: len(sink.committed_batches()) >= 4, timeout=20, what="4 committed batches")
        stream.stop(timeout=20)
        assert sink.committed_batches() == list(range(stream.metrics()["batches"]))
        for batch in sink.committed_batches():
            assert dict(sink.read_batch(batch)) == expected_rate_count(rate, partitions, interval, batch, keys=3), batch


def test_a_record_the_sink_cannot_write_stops_the_stream_naming_the_batch(ctx, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with DirectorySink(tmp_path) as sink:
        stream = ctx.stream(sources.generator(lambda p, b: [{b}] if b == 2 else [b], partitions=1),
                            batch_interval=0.02, group_size=2)
        stream = stream.foreach_batch(sink).start()
        with pytest.raises(squall.StreamError, match="batch 2: record 0 cannot be written as JSON") as info:
            stream.await_termination(timeout=20)
        assert isinstance(info.value.cause, TypeError)
        assert sink.committed_batches() == [0, 1]


def test_a_stream_published_on_a_pub_sink_reaches_a_subscriber(ctx) -> None:  # type: ignore[no-untyped-def]
    with PubSink("tcp://127.0.0.1:*", topic=b"numbers", settings=ctx.settings) as sink, \
            subscribe(sink.endpoint, b"numbers", timeout=10, settings=ctx.settings) as sub:
        wait_until(sink.has_subscribers, timeout=5, what="the subscriber")  # no batch is lost to a slow joiner
        stream = ctx.stream(sources.generator(numbers, partitions=2), batch_interval=0.02, group_size=3)
        stream = stream.map(lambda x: x * 2).foreach_batch(sink).start()
        got = [item for _, item in zip(range(6), sub, strict=False)]
        stream.stop(timeout=20)
        got += [item for _, item in zip(range(stream.metrics()["batches"] - len(got)), sub, strict=False)]
        assert [b for b, _ in got] == list(range(stream.metrics()["batches"]))
        for batch, records in got:
            assert records == expected_numbers(batch), batch
        assert sink.dropped == 0
