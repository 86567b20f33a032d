"""RedisSink against a real redis-server: each mode writes what it should, a batch is written
once however often it comes (replays, retries, a Redis restarted or briefly down), and a batch
that cannot be written whole is not written at all."""

from __future__ import annotations

import json
import operator
import threading
from collections import Counter

import pytest

from squall import sources
from squall.sinks import RedisSink, SinkError
from squall.stream import StreamClock
from tests.polling import wait_until
from tests.redis_server import RedisServer

pytestmark = [pytest.mark.timeout(60)]


def test_hash_mode_adds_increments_to_the_key_or_to_the_key_of_each_triple(redis_server: RedisServer) -> None:
    with RedisSink(redis_server.url, "views", key="counts") as sink:
        sink(0, [("campaign-01", 3), ("campaign-02", 1)])
        sink(1, [("campaign-01", 2)])
    with RedisSink(redis_server.url, "spread") as sink:
        sink(0, [("window:10", "campaign-01", 4), ("window:20", "campaign-01", 5), ("window:10", "campaign-01", 1)])
    client = redis_server.client()
    assert client.hgetall("counts") == {b"campaign-01": b"5", b"campaign-02": b"1"}
    assert client.hgetall("window:10") == {b"campaign-01": b"5"}
    assert client.hgetall("window:20") == {b"campaign-01": b"5"}
    assert client.get("squall:sink:views:committed") == b"1"


def test_zset_mode_sets_scores_or_adds_to_them(redis_server: RedisServer) -> None:
    with RedisSink(redis_server.url, "set", mode="zset", key="latest") as sink:
        sink(0, [("a", 1.5), ("b", 2)])
        sink(1, [("a", 7)])
    with RedisSink(redis_server.url, "add", mode="zset", key="totals", increment=True) as sink:
        sink(0, [("a", 1.5), ("b", 2)])
        sink(1, [("a", 7)])
    client = redis_server.client()
    assert client.zrange("latest", 0, -1, withscores=True) == [(b"b", 2.0), (b"a", 7.0)]
    assert client.zrange("totals", 0, -1, withscores=True) == [(b"b", 2.0), (b"a", 8.5)]


def test_stream_mode_adds_an_entry_per_record(redis_server: RedisServer) -> None:
    with RedisSink(redis_server.url, "out", mode="stream", key="results") as sink:
        sink(0, [{"campaign": "c1", "count": 3}, ("c2", 4)])
    entries = [fields for _, fields in redis_server.client().xrange("results")]
    assert entries == [{b"campaign": b"c1", b"count": b"3"}, {b"value": b'["c2",4]'}]
    assert json.loads(entries[1][b"value"]) == ["c2", 4]


def test_a_batch_written_again_or_after_a_later_one_changes_nothing(redis_server: RedisServer) -> None:
    client = redis_server.client()
    with RedisSink(redis_server.url, "once", key="counts") as sink:
        sink(0, [("a", 1)])
        sink(1, [("a", 10)])
        sink(1, [("a", 10)])  # a retried call
        sink(0, [("a", 1)])  # an older batch after a newer one
        assert (sink.written, sink.skipped) == (2, 2)
    with RedisSink(redis_server.url, "once", key="counts") as resumed:  # a driver resuming the stream
        resumed(1, [("a", 10)])
        assert resumed.committed_batch() == 1
        resumed(2, [("a", 100)])
    with RedisSink(redis_server.url, "once-stream", mode="stream", key="entries") as stream_sink:  # other name, own marker
        stream_sink(0, [{"v": "x"}])
        stream_sink(0, [{"v": "x"}])
    assert client.hgetall("counts") == {b"a": b"111"}
    assert client.xlen("entries") == 1


def test_a_restarted_redis_keeps_the_marker_and_the_data_and_the_sink_goes_on(redis_server: RedisServer) -> None:
    with RedisSink(redis_server.url, "durable", key="counts", retry_timeout=10) as sink:
        sink(0, [("a", 1)])
        redis_server.restart()  # SIGKILL: what survives is in the append-only file; the script is gone
        sink(0, [("a", 1)])  # the replay is still known
        sink(1, [("a", 2)])  # NOSCRIPT, loaded again, written
        assert sink.committed_batch() == 1
    assert redis_server.client().hgetall("counts") == {b"a": b"3"}


def test_a_batch_sent_while_redis_is_down_lands_once_when_it_is_back(redis_server: RedisServer) -> None:
    with RedisSink(redis_server.url, "patient", key="counts", retry_timeout=20) as sink:
        sink(0, [("a", 1)])
        redis_server.stop()
        errors: list[BaseException] = []

        def write() -> None:
            try:
                sink(1, [("a", 5)])
            except BaseException as exc:  # reported to the test below
                errors.append(exc)

        writer = threading.Thread(target=write)
        writer.start()
        wait_until(lambda: sink.retries >= 2, timeout=10, what="the sink retrying while Redis is down")
        redis_server.start()
        writer.join(timeout=30)
        assert not writer.is_alive() and errors == []
        sink(1, [("a", 5)])
    assert redis_server.client().hgetall("counts") == {b"a": b"6"}


def test_redis_down_past_the_retry_timeout_raises_a_sink_error(redis_server: RedisServer) -> None:
    with RedisSink(redis_server.url, "gone", key="counts", retry_timeout=0.5) as sink:
        redis_server.stop()
        with pytest.raises(SinkError, match=r"batch 0: Redis at .* could not be reached for 0.5s"):
            sink(0, [("a", 1)])


def test_a_bad_record_fails_the_batch_before_anything_is_written(redis_server: RedisServer) -> None:
    client = redis_server.client()
    with RedisSink(redis_server.url, "strict", key="counts") as sink:
        for bad, message in [([("a", 1), "oops"], "record 1 is 'oops', not a"), ([("a", 1), ("b", 1.5)], "HINCRBY takes integers"),
                             ([("a", 1), ({"x"}, 1)], "record 1 has field"), ([("a", 1), ("b", True)], "not a number")]:
            with pytest.raises(SinkError, match=message):
                sink(0, bad)
        client.set("taken", "a string")
        client.hset("words", "w", "not a number")
        with pytest.raises(SinkError, match="WRONGTYPE taken holds a string"):
            sink(0, [("counts", "a", 1), ("taken", "a", 1)])
        with pytest.raises(SinkError, match="field w of words holds not a number"):
            sink(0, [("counts", "a", 1), ("words", "w", 1)])
        assert sink.committed_batch() is None
    assert client.exists("counts", "squall:sink:strict:committed") == 0
    with RedisSink(redis_server.url, "zs", mode="zset", key="z") as zsink, pytest.raises(SinkError, match="finite"):
        zsink(0, [("a", 1.0), ("b", float("nan"))])
    assert client.exists("z") == 0


def test_a_batch_over_the_limit_is_refused_naming_it(redis_server: RedisServer) -> None:
    with RedisSink(redis_server.url, "small", key="counts", max_batch_records=3) as sink:
        with pytest.raises(SinkError, match=r"4 records is more than the RedisSink's max_batch_records \(3\)"):
            sink(0, [("a", 1)] * 4)
        sink(0, [("a", 1)] * 3)
    with RedisSink(redis_server.url, "narrow", mode="stream", key="s", max_batch_bytes=100) as sink, \
            pytest.raises(SinkError, match="max_batch_bytes"):
        sink(0, [{"v": "x" * 200}])
    assert redis_server.client().hgetall("counts") == {b"a": b"3"}
    assert redis_server.client().exists("s") == 0


def test_bad_arguments_are_refused_at_once(redis_server: RedisServer) -> None:
    with pytest.raises(ValueError, match="mode must be one of"):
        RedisSink(redis_server.url, "x", mode="list")
    with pytest.raises(ValueError, match="needs key="):
        RedisSink(redis_server.url, "x", mode="stream")
    with pytest.raises(ValueError, match="non-empty name"):
        RedisSink(redis_server.url, "")
    sink = RedisSink(redis_server.url, "x", key="k")
    sink.close()
    with pytest.raises(SinkError, match="closed"):
        sink(0, [("a", 1)])


def words(partition: int, batch: int) -> list[str]:
    return [f"w{(partition * 7 + batch * 3 + i) % 5}" for i in range(10 + partition)]


@pytest.mark.cluster
def test_a_stream_counting_into_redis_equals_plain_python_and_its_old_batches_are_not_written_again(ctx, redis_server: RedisServer) -> None:  # type: ignore[no-untyped-def]
    # generator() makes batch b alike in every run: a stream started again under the sink's name
    # is the same run, so the batches the first run wrote are skipped and only later ones added.
    with RedisSink(redis_server.url, "word-counts", key="words") as sink:
        batches = []
        for run in range(2):
            written = sink.written
            stream = (ctx.stream(sources.generator(words, partitions=2), batch_interval=0.02, group_size=3)
                      .map(lambda w: (w, 1))
                      .reduce_by_key(operator.add, 2)
                      .foreach_batch(sink)
                      .start())
            wait_until(lambda target=written + 6 + 6 * run: sink.written + sink.skipped >= target, timeout=20, what=f"run {run}'s batches")
            stream.stop(timeout=20)
            batches.append(stream.metrics()["batches"])
        assert sink.committed_batch() == max(batches) - 1
        assert (sink.written, sink.skipped) == (max(batches), min(batches))
    expected = Counter(w for b in range(max(batches)) for p in range(2) for w in words(p, b))
    got = {k.decode(): int(v) for k, v in redis_server.client().hgetall("words").items()}
    assert got == dict(expected)


class _Tally:
    """A RedisSink with a count of what it was handed, beside it."""

    def __init__(self, sink: RedisSink) -> None:
        self.sink, self.handed = sink, Counter[str]()

    def on_start(self, clock: object) -> None:
        self.sink.on_start(clock)

    def __call__(self, batch: int, records: list[tuple[str, int]]) -> None:
        self.sink(batch, records)
        self.handed.update(dict(records))


@pytest.mark.cluster
def test_a_stream_started_again_over_a_source_with_new_records_is_written_in_full(ctx, redis_server: RedisServer) -> None:  # type: ignore[no-untyped-def]
    # rate() events carry the run's times: a new run's batch 0 holds new records, numbered from 0
    with RedisSink(redis_server.url, "rate-counts", key="partitions") as sink:
        tally = _Tally(sink)
        for run in range(2):
            written = sink.written
            stream = (ctx.stream(sources.rate(400, partitions=2), batch_interval=0.02, group_size=3)
                      .map(lambda event: (f"p{event[0]}", 1))
                      .reduce_by_key(operator.add, 2)
                      .foreach_batch(tally)
                      .start())
            wait_until(lambda target=written + 6: sink.written >= target, timeout=20, what=f"6 batches of run {run} written")
            stream.stop(timeout=20)
        assert sink.skipped == 0
    got = {k.decode(): int(v) for k, v in redis_server.client().hgetall("partitions").items()}
    assert got == dict(tally.handed) and sum(got.values()) > 0


def test_a_run_marker_skips_only_that_runs_batches(redis_server: RedisServer) -> None:
    client = redis_server.client()
    with RedisSink(redis_server.url, "runs", key="counts") as sink:
        sink.on_start(StreamClock(100.0, 0.1, run="100.0"))
        sink(0, [("a", 1)])
        sink(1, [("a", 10)])
        sink(0, [("a", 1)])  # a replay in the same run
        sink.on_start(StreamClock(200.0, 0.1, run="200.0"))
        sink(0, [("a", 100)])  # the next run's first batch
        sink(0, [("a", 100)])
        assert (sink.written, sink.skipped) == (3, 2)
        assert client.get(sink.marker) == b"0 200.0"
    assert client.hgetall("counts") == {b"a": b"111"}


def test_without_the_redis_library_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "redis", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r"pip install 'squall\[redis\]'"):
        RedisSink("redis://127.0.0.1:1/0", "x", key="k")
