"""The Redis pieces of the YSB benchmark against a real redis-server: the generator process's
events, the campaign hash, window counts landing once, and redis-benchmark's rates."""

from __future__ import annotations

import json
import shutil

import pytest

from bench import ysb_redis
from squall.windows import WindowResult
from squall.ysb import PARTITIONS, campaign_table, expected_counts, make_event
from tests.polling import wait_until
from tests.redis_server import RedisServer

pytestmark = [pytest.mark.timeout(60)]


@pytest.mark.parametrize("events_per_entry", [0, 1, 3])
def test_the_generator_writes_each_partitions_events_in_order(redis_server: RedisServer, events_per_entry: int) -> None:
    client = redis_server.client()
    keys = [f"{ysb_redis.STREAM_KEY}:{p}" for p in range(PARTITIONS)]
    client.delete(*keys)

    def entries(key: str) -> list[list[str]]:
        return [fields[ysb_redis.EVENT_FIELD.encode()].decode().split("\n") for _, fields in client.xrange(key)]

    generator = ysb_redis.EventGenerator(redis_server.url, rate=2000, events_per_entry=events_per_entry).start()
    wait_until(lambda: sum(len(e) for k in keys for e in entries(k)) >= 400, timeout=30, what="400 events")
    report = generator.stop()
    assert report.events == sum(len(e) for k in keys for e in entries(k)) and report.achieved > 0
    for p, key in enumerate(keys):
        batches = entries(key)
        if events_per_entry:
            assert all(len(batch) <= events_per_entry for batch in batches)
        events = [event for batch in batches for event in batch]
        assert events, p
        for index, event in enumerate(events):
            assert event == make_event(p, index, json.loads(event)["event_time"])
        times = [json.loads(e)["event_time"] for e in events]
        assert times == sorted(times)


def test_the_campaign_table_round_trips_through_a_hash(redis_server: RedisServer) -> None:
    assert ysb_redis.load_campaigns(redis_server.url) == campaign_table()
    assert ysb_redis.read_campaigns(redis_server.url) == campaign_table()


def test_window_counts_land_once_with_their_latency(redis_server: RedisServer) -> None:
    sink = ysb_redis.WindowCountSink(redis_server.url, "ysb-test")
    windows = [WindowResult("campaign-01", 10.0, 20.0, 7), WindowResult("campaign-02", 10.0, 20.0, 3)]
    sink(0, windows)
    sink(0, windows)  # a replay
    sink.close()
    assert redis_server.client().hgetall(f"{ysb_redis.WINDOW_KEY_PREFIX}10.0") == {b"campaign-01": b"7", b"campaign-02": b"3"}
    assert len(sink.landed) == 4 and all(latency > 0 for _, latency in sink.landed)


@pytest.mark.skipif(shutil.which("redis-benchmark") is None, reason="redis-benchmark is not installed (Debian's redis-server)")
def test_redis_benchmark_reports_xadd_and_xrange_rates(redis_server: RedisServer) -> None:
    rates = ysb_redis.redis_benchmark(redis_server.url, requests=500, pipeline=4, clients=2)
    assert rates is not None and set(rates) == {"XADD", "XRANGE"} and all(r > 0 for r in rates.values())


@pytest.mark.cluster
def test_the_job_over_redis_counts_every_view_of_the_closed_windows(ctx, redis_server: RedisServer) -> None:  # type: ignore[no-untyped-def]
    result = ysb_redis.run_redis_ysb(ctx, redis_server.url, rate=2000, seconds=4.0, window=1.0, batch_interval=0.1)
    assert result["generated"] > 0 and result["batches"] > 0
    client = redis_server.client()
    events = [line for p in range(PARTITIONS)
              for _, fields in client.xrange(f"{ysb_redis.STREAM_KEY}:{p}")
              for line in fields[ysb_redis.EVENT_FIELD.encode()].decode().split("\n")]
    expected = expected_counts(events, window_seconds=1.0)
    stored = {int(float(key.decode().removeprefix(ysb_redis.WINDOW_KEY_PREFIX))): client.hgetall(key)
              for key in client.keys(f"{ysb_redis.WINDOW_KEY_PREFIX}*")}
    # Windows closed a batch or more before the stream's last batch are complete in Redis.
    closed = [start for start in stored if start + 1.0 <= max(stored)]
    assert len(closed) >= 2
    for start in closed:
        got = {k.decode(): int(v) for k, v in stored[start].items()}
        assert got == {c: n for (c, s), n in expected.items() if round(s) == start}, start
