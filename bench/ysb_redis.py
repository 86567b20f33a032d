"""The Yahoo Streaming Benchmark with Redis at both ends, as the original YSB has it: a generator
process XADDs JSON ad events into one Redis Stream per partition, the campaign table is a Redis
hash, Squall reads the streams (sources.redis_stream) and writes the window counts back to Redis
exactly once (sinks.RedisSink); a window's latency is the time its count landed in Redis minus
the window's end.

    python -m bench.ysb --source redis [--redis-url redis://host:6379/0] ...  (the whole run)
    python -m bench.ysb_redis generate --rate 20000 --seconds 5              (the generator alone)
    python -m bench.ysb_redis redis-benchmark                                 (Redis's own XADD and XRANGE rates)

Without --redis-url a private redis-server (Debian's package) is started on a free port.
"""

from __future__ import annotations

import argparse
import multiprocessing
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from squall.sinks import RedisSink
from squall.windows import WindowResult
from squall.ysb import PARTITIONS, campaign_table, is_view, make_event, parse

STREAM_KEY = "ysb:events"  # partition p's events are in f"{STREAM_KEY}:{p}"
EVENT_FIELD = "events"  # each entry is {EVENT_FIELD: its events' JSON lines, joined by newlines}
CAMPAIGNS_KEY = "ysb:campaigns"  # hash: ad id -> campaign id
WINDOW_KEY_PREFIX = "ysb:window:"  # hash per window start (repr of the float: "ysb:window:1764727000.0"): campaign id -> views
GENERATOR_TICK = 0.005  # seconds between the generator's pipelined batches
MAX_PIPELINE = 5_000  # events per pipeline at most, when the generator has fallen behind
START_TIMEOUT = 10.0


# --- (a) the event generator: a process of its own ----------------------------------------------


@dataclass(frozen=True)
class GeneratorReport:
    offered: float  # events a second asked for
    events: int  # events written
    seconds: float

    @property
    def achieved(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


def _generate(url: str, rate: float, partitions: int, stop: Any, report: Any, events_per_entry: int) -> None:
    """The generator process: event g happens at start + g / rate and is event g // partitions of
    partition g % partitions (as sources.rate deals them); every GENERATOR_TICK the events due so
    far are XADDed in one pipeline (no transaction), each partition's in entries of at most
    `events_per_entry` events (0: one entry per partition and tick, as a producer that batches
    for GENERATOR_TICK does). Reports (events, seconds) when `stop` is set."""
    import redis

    client = redis.Redis.from_url(url)
    keys = [f"{STREAM_KEY}:{p}" for p in range(partitions)]
    start = time.time()
    written = 0
    while not stop.is_set():
        due = min(int((time.time() - start) * rate), written + MAX_PIPELINE)
        if due > written:
            pipe = client.pipeline(transaction=False)
            for p in range(partitions):
                first = written + (p - written) % partitions  # the tick's first event of partition p
                lines = [make_event(p, g // partitions, start + g / rate) for g in range(first, due, partitions)]
                step = events_per_entry or len(lines) or 1
                for k in range(0, len(lines), step):
                    pipe.xadd(keys[p], {EVENT_FIELD: "\n".join(lines[k:k + step])})
            pipe.execute()
            written = due
        else:
            stop.wait(GENERATOR_TICK)  # paces the generator; it also wakes at once on stop
    report.send((written, time.time() - start))
    client.close()


class EventGenerator:
    """Runs _generate in a process of its own (the GIL of the driver must not limit the rate):
    start(), then stop() -> GeneratorReport."""

    def __init__(self, url: str, rate: float, partitions: int = PARTITIONS, events_per_entry: int = 0) -> None:
        context = multiprocessing.get_context("spawn")
        self.rate = rate
        self._stop = context.Event()
        self._receive, send = context.Pipe(duplex=False)
        self._process = context.Process(target=_generate, args=(url, rate, partitions, self._stop, send, events_per_entry),
                                        daemon=True)

    def start(self) -> EventGenerator:
        self._process.start()
        return self

    def stop(self, timeout: float = 30.0) -> GeneratorReport:
        self._stop.set()
        if not self._receive.poll(timeout):
            self._process.kill()
            raise RuntimeError(f"the YSB event generator did not report within {timeout:g}s")
        events, seconds = self._receive.recv()
        self._process.join(timeout)
        return GeneratorReport(offered=self.rate, events=events, seconds=seconds)


# --- (b) the campaign table in a Redis hash -----------------------------------------------------


def load_campaigns(url: str) -> dict[str, str]:
    """Write the campaign table (ad id -> campaign id) to the hash CAMPAIGNS_KEY; returns it."""
    import redis

    table = campaign_table()
    with redis.Redis.from_url(url) as client:
        client.delete(CAMPAIGNS_KEY)
        client.hset(CAMPAIGNS_KEY, mapping=table)
    return table


def read_campaigns(url: str) -> dict[str, str]:
    """The campaign table as the hash CAMPAIGNS_KEY holds it."""
    import redis

    with redis.Redis.from_url(url, decode_responses=True) as client:
        return dict(client.hgetall(CAMPAIGNS_KEY))


# --- (c) the window counts, written to Redis, with the time each landed -------------------------


class WindowCountSink:
    """Writes each batch's window results (WindowResult(campaign, start, end, views)) to Redis,
    exactly once, with a RedisSink: HINCRBY ysb:window:<start, as repr()> <campaign> <views>. Records when
    each batch's windows landed (after Redis acknowledged them), so that a window's latency is
    its landing time minus its end."""

    def __init__(self, url: str, name: str) -> None:
        self.redis = RedisSink(url, name, mode="hash")
        self.landed: list[tuple[WindowResult, float]] = []  # each result, and its latency at landing
        self.windows = 0

    def __call__(self, batch: int, records: list[WindowResult]) -> None:
        self.redis(batch, [(f"{WINDOW_KEY_PREFIX}{r.start!r}", r.key, int(r.value)) for r in records])
        landed = time.time()
        self.landed.extend((r, landed - r.end) for r in records)
        self.windows += len(records)

    def on_start(self, clock: Any) -> None:
        self.redis.on_start(clock)

    def close(self) -> None:
        self.redis.close()


def ysb_redis_stream(ctx: Any, url: str, window: float, batch_interval: float, sink: WindowCountSink, name: str) -> Any:
    """The YSB job over Redis, as a started stream: events from the STREAM_KEY streams (one per
    partition), the campaign table from Redis (broadcast), view counts per campaign and window into `sink`."""
    from squall import sources

    source = sources.redis_stream(url, STREAM_KEY, partitions=PARTITIONS, name=name, start="now", field=EVENT_FIELD)
    table = ctx.broadcast(read_campaigns(url))
    return (
        ctx.stream(source, batch_interval=batch_interval)
        .flat_map(str.splitlines)  # an entry holds a batch of events, one JSON line each
        .map(parse)
        .filter(is_view)
        .map(lambda event: (table.value[event.ad_id], event.event_time))
        .window(window, event_time=float)
        .count(partitions=PARTITIONS)
        .foreach_batch(sink)
        .start()
    )


def run_redis_ysb(ctx: Any, url: str, rate: int, seconds: float, window: float, batch_interval: float,
                  events_per_entry: int = 0) -> dict[str, Any]:
    """One offered rate over Redis for `seconds` (keys of bench.ysb.run_squall_ysb's result):
    "achieved" is the rate the generator wrote events at (a Squall that falls behind it shows in
    the latencies), p50 and p99 are window latencies measured at landing in Redis."""
    from bench.ysb import settled_overhead, window_latencies
    from bench.ysb_workload import LatencyStats

    name = f"ysb-{rate}-{int(time.time() * 1000)}"  # a fresh source and sink name per run
    load_campaigns(url)
    sink = WindowCountSink(url, name)
    stream = ysb_redis_stream(ctx, url, window, batch_interval, sink, name)
    generator = EventGenerator(url, rate, events_per_entry=events_per_entry).start()
    time.sleep(seconds)  # the run's length, not a wait for a condition
    report = generator.stop()
    stopped_at = time.time()
    stream.stop()
    sink.close()
    state = stream.metrics_state
    elapsed = max(1e-9, stopped_at - state.started)
    latencies, unfinished = window_latencies(sink.landed, state.started, stopped_at, window)
    stats = LatencyStats(tuple(latencies))
    return {
        "offered": rate,
        "achieved": report.achieved,
        "generated": report.events,
        "p50": stats.p50,
        "p99": stats.p99,
        "windows": len(latencies),
        "unfinished": unfinished,
        "output_per_second": state.output_records / elapsed,
        "group_sizes": list(state.group_sizes),
        "overhead": settled_overhead(list(state.overheads)),
        "batches": state.batches,
    }


# --- a private redis-server ---------------------------------------------------------------------


@contextmanager
def local_redis() -> Iterator[str]:
    """A redis-server of Debian's package on a free loopback port, append-only (fsync every
    second), in a temporary directory; yields its URL and stops it on the way out."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (Debian's redis-server package); or give --redis-url")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="squall-ysb-redis-") as directory:
        process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", directory,
                                    "--appendonly", "yes", "--appendfsync", "everysec", "--save", ""],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            url = f"redis://127.0.0.1:{port}/0"
            _wait_for_redis(url, process)
            yield url
        finally:
            process.terminate()
            process.wait(timeout=10)


def _wait_for_redis(url: str, process: subprocess.Popen[bytes]) -> None:
    import redis

    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            if redis.Redis.from_url(url, socket_timeout=0.5).ping():
                return
        except redis.RedisError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"redis-server at {url} did not start (exit status {process.poll()})")
        time.sleep(0.02)  # polling with a deadline


# --- redis-benchmark: what Redis itself does for XADD and XRANGE --------------------------------

_RPS = re.compile(r"([\d.]+) requests per second")


def redis_benchmark(url: str, requests: int = 100_000, pipeline: int = 16, clients: int = 8) -> dict[str, float] | None:
    """Requests per second of XADD (one YSB event per entry) and XRANGE (100 entries) from
    Debian's redis-benchmark against `url`; None when redis-benchmark is not installed."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        return None
    address = urlparse(url)
    base = [binary, "-h", address.hostname or "127.0.0.1", "-p", str(address.port or 6379), "-n", str(requests),
            "-P", str(pipeline), "-c", str(clients), "-q"]
    key = f"{STREAM_KEY}:benchmark"
    commands = {
        "XADD": ["XADD", key, "*", EVENT_FIELD, make_event(0, 0, time.time())],
        "XRANGE": ["XRANGE", key, "-", "+", "COUNT", "100"],
    }
    rates = {}
    for name, command in commands.items():
        output = subprocess.run(base + command, capture_output=True, text=True, timeout=600, check=True).stdout
        found = _RPS.findall(output.replace("\r", "\n"))
        if not found:
            raise RuntimeError(f"redis-benchmark printed no rate for {name}: {output[-200:]!r}")
        rates[name] = float(found[-1])
    return rates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ysb_redis", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["generate", "redis-benchmark"])
    parser.add_argument("--redis-url", default=None, help="a Redis to use (default: start a private redis-server)")
    parser.add_argument("--rate", type=int, default=20_000, help="generate: offered events per second (default 20000)")
    parser.add_argument("--seconds", type=float, default=5.0, help="generate: how long (default 5)")
    parser.add_argument("--requests", type=int, default=100_000, help="redis-benchmark: requests per command (default 100000)")
    args = parser.parse_args(argv)
    if args.command == "redis-benchmark" and shutil.which("redis-benchmark") is None:
        print("redis-benchmark skipped: it is not installed (it comes with Debian's redis-server package)")
        return 0
    with (_given(args.redis_url) if args.redis_url else local_redis()) as url:
        if args.command == "generate":
            generator = EventGenerator(url, args.rate).start()
            time.sleep(args.seconds)  # the run's length
            report = generator.stop()
            print(f"generator: offered {report.offered:,.0f}/s, achieved {report.achieved:,.0f}/s "
                  f"({report.events:,} events in {report.seconds:.1f} s, {PARTITIONS} streams)")
        else:
            rates = redis_benchmark(url, args.requests)
            assert rates is not None
            for command, rps in rates.items():
                print(f"redis-benchmark {command:<7} {rps:>12,.0f} requests/s")
    return 0


@contextmanager
def _given(url: str) -> Iterator[str]:
    yield url


if __name__ == "__main__":
    raise SystemExit(main())
