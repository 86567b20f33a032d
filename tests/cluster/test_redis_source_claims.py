"""The Redis Streams source's batch claims, against a real Redis: every task of a batch reads the
same entries, batches are claimed in order, and a backlog drains over several batches."""

from __future__ import annotations

import threading
import time

import pytest

from squall import sources
from squall.redis_source import RedisStreamSource, ranges_key, redis_batch
from squall.stream_source import StreamSource
from tests.redis_server import RedisServer

pytestmark = [pytest.mark.timeout(30)]

INTERVAL = 0.05


def source(redis_server: RedisServer, **options: object) -> RedisStreamSource:
    made = sources.redis_stream(redis_server.url, "events", partitions=1, **options)  # type: ignore[arg-type]
    assert isinstance(made, RedisStreamSource)
    return made


def test_two_tasks_claiming_one_batch_read_the_same_entries(redis_server: RedisServer) -> None:
    r = redis_server.client()
    for i in range(50):
        r.xadd("events:0", {"n": str(i)})
    src = source(redis_server, start="beginning", field="n")
    start = time.time()  # after the entries: they are a backlog, read by batch 0 once it ends
    results: list[list[str]] = []
    threads = [threading.Thread(target=lambda: results.append(redis_batch(src, start, INTERVAL, 0, 0))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results[0] == results[1] == [str(i) for i in range(50)]
    assert redis_batch(src, start, INTERVAL, 0, 0) == results[0]  # a replay, later, too


def test_claiming_batch_5_first_claims_0_to_4_in_order(redis_server: RedisServer) -> None:
    r = redis_server.client()
    for i in range(12):
        r.xadd("events:0", {"n": str(i)})
    src = source(redis_server, start="beginning", field="n", max_records_per_batch=2)
    start = time.time()
    assert redis_batch(src, start, INTERVAL, 0, 5) == ["10", "11"]
    assert [redis_batch(src, start, INTERVAL, 0, b) for b in range(5)] == [[str(2 * b), str(2 * b + 1)] for b in range(5)]
    recorded = r.hgetall(ranges_key(src.name, 0))
    assert int(recorded[b"last"]) == 5 and int(recorded[b"claimed"]) == 12


def test_a_backlog_drains_over_several_batches_and_later_entries_follow(redis_server: RedisServer) -> None:
    r = redis_server.client()
    for i in range(25):
        r.xadd("events:0", {"n": str(i)})
    src = source(redis_server, start="beginning", field="n", max_records_per_batch=10)
    start = time.time()
    batches = [redis_batch(src, start, INTERVAL, 0, b) for b in range(3)]
    assert [len(b) for b in batches] == [10, 10, 5]
    r.xadd("events:0", {"n": "25"})
    later = [redis_batch(src, start, INTERVAL, 0, b) for b in range(3, 3 + int(1.0 / INTERVAL) + 2)]  # waits for Redis time
    assert [x for b in batches + later for x in b] == [str(i) for i in range(26)]


def test_start_now_skips_what_the_stream_held_and_a_new_run_resumes(redis_server: RedisServer) -> None:
    r = redis_server.client()
    r.xadd("events:0", {"n": "old"})
    src = source(redis_server, field="n")
    start = time.time() + 0.1
    assert redis_batch(src, start, INTERVAL, 0, 0) == []
    r.xadd("events:0", {"n": "a"})
    assert StreamSource.lag(src) is None and src.lag() == 1  # the old entry counts as passed
    assert redis_batch(src, start, INTERVAL, 0, 1) == ["a"]
    assert src.lag() == 0
    r.xadd("events:0", {"n": "b"})
    restarted = time.time() + 0.05  # the same name, a new run of the stream: it goes on after "a"
    assert redis_batch(src, restarted, INTERVAL, 0, 0) == ["b"]


def test_bad_arguments_are_refused_clearly() -> None:
    with pytest.raises(ValueError, match="start must be"):
        sources.redis_stream("redis://x", "k", start="later")
    with pytest.raises(ValueError, match="2 stream keys but partitions=3"):
        sources.redis_stream("redis://x", ["a", "b"], 3)
    with pytest.raises(ValueError, match="max_records_per_batch"):
        sources.redis_stream("redis://x", "k", max_records_per_batch=0)
    assert sources.redis_stream("redis://x", "k", partitions=2).partitions == 2
