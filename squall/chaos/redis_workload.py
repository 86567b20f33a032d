"""The chaos harness's job with `--source redis`: records from Redis Streams, counted by key, the
counts written back to Redis, and what plain Python says Redis must hold at the end.

- A writer process XADDs keyed records into one Redis Stream per partition while the trial runs;
  record n (its sequence number) is a function of the trial's seed and n alone.
- A stream reads them (sources.redis_stream, start="beginning"), keeps a running count per key
  (update_state_by_key: a killed executor's state must be recovered exactly) and writes through
  RedisSink(mode="hash") two hashes: `<prefix>:counts`, each batch's count per key (HINCRBY), and
  `<prefix>:running`, field "<key>@<batch>" = the key's running count after that batch.
- After the faults the writer stops and the stream drains every entry written. Then the counts
  must equal plain Python's over every record written (nothing lost, nothing applied twice), and
  each key's running count after its last batch must equal its count (the state survived).
"""

from __future__ import annotations

import multiprocessing
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from squall import sinks, sources
from squall.chaos.workload import Collected

KEYS = 13
PARTITIONS = 3
STATE_PARTITIONS = 4
RECORDS_PER_TICK = 6  # the writer XADDs this many records (one pipeline) every TICK seconds
TICK = 0.01
WRITER_START_TIMEOUT = 30.0
WRITER_STOP_TIMEOUT = 10.0


def record_key(seed: int, seq: int) -> str:
    """The key of record `seq` of the trial with this seed."""
    return f"k{(seq * 2654435761 + seed * 97) % 1000003 % KEYS}"


def record_partition(seq: int) -> int:
    return seq % PARTITIONS


def write_records(url: str, streams: list[str], seed: int, stop: Any, written: Any) -> None:
    """The writer process: XADD record after record until `stop` is set; `written` holds how many
    Redis has acknowledged, so the records written are exactly seq 0 .. written - 1."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=10.0)
    seq = 0
    while not stop.is_set():
        pipe = client.pipeline(transaction=False)
        for n in range(seq, seq + RECORDS_PER_TICK):
            pipe.xadd(streams[record_partition(n)], {"key": record_key(seed, n), "seq": str(n)})
        pipe.execute()
        seq += RECORDS_PER_TICK
        written.value = seq
        stop.wait(TICK)  # the writing rate; a set stop ends the wait at once
    client.close()


def _count(values: list[int], old: tuple[int, int] | None) -> tuple[int, int]:
    """(this batch's count, the running count) of a key."""
    return (len(values), (old[1] if old else 0) + len(values))


def _by_key(record: dict[str, str]) -> tuple[str, int]:
    return (record["key"], 1)


@dataclass
class RedisTrial:
    url: str
    seed: int
    prefix: str  # every Redis key of this trial starts with it (an existing Redis may be shared)
    stream: Any = None
    delivered: Collected = field(default_factory=Collected)
    writer: Any = None
    _stop: Any = None
    _written: Any = None
    _sink: Any = None

    @property
    def streams(self) -> list[str]:
        return [f"{self.prefix}:in:{p}" for p in range(PARTITIONS)]

    @classmethod
    def start(cls, ctx: Any, url: str, seed: int, interval: float, group_size: int) -> RedisTrial:
        """Start the writer process, then the counting stream."""
        trial = cls(url, seed, f"squall-chaos:{seed}:{uuid.uuid4().hex[:8]}")
        spawn = multiprocessing.get_context("spawn")  # not fork: the driver runs threads
        trial._stop, trial._written = spawn.Event(), spawn.Value("q", 0)
        trial.writer = spawn.Process(target=write_records, args=(url, trial.streams, seed, trial._stop, trial._written),
                                     name="squall-chaos-writer", daemon=True)
        trial.writer.start()
        try:
            trial._await_first_write()
            trial._sink = sinks.RedisSink(url, f"{trial.prefix}:counts", mode="hash")
            source = sources.redis_stream(url, trial.streams, name=trial.prefix, start="beginning")
            trial.stream = (
                ctx.stream(source, batch_interval=interval, group_size=group_size)
                .map(_by_key)
                .update_state_by_key(_count, partitions=STATE_PARTITIONS)
                .foreach_batch(trial._deliver)
                .start()
            )
        except BaseException:
            trial.close(shared=False)  # no writer left behind
            raise
        return trial

    def _await_first_write(self) -> None:
        """Poll until the writer has written (a spawned process takes a while to import), so the
        stream reads from its first batch on; RuntimeError if it dies or takes WRITER_START_TIMEOUT."""
        deadline = time.monotonic() + WRITER_START_TIMEOUT
        while self.written == 0:
            if not self.writer.is_alive():
                raise RuntimeError(f"the writer process exited with status {self.writer.exitcode} before writing")
            if time.monotonic() > deadline:
                self.stop_writer()
                raise RuntimeError(f"the writer process wrote nothing within {WRITER_START_TIMEOUT:g}s")
            time.sleep(0.01)

    def _deliver(self, batch: int, records: list[tuple[str, tuple[int, int]]]) -> None:
        """The sink (on the driver's stream thread): both hashes in one atomic RedisSink batch."""
        writes = [(f"{self.prefix}:counts", key, n) for key, (n, _) in records]
        writes += [(f"{self.prefix}:running", f"{key}@{batch}", running) for key, (_, running) in records]
        self._sink(batch, writes)
        self.delivered.sink(batch, records)

    def stop_writer(self) -> str:
        """Stop the writer; "" or what went wrong with it."""
        if self.writer is None:
            return ""
        self._stop.set()
        self.writer.join(WRITER_STOP_TIMEOUT)
        if self.writer.is_alive():
            self.writer.kill()
            self.writer.join(WRITER_STOP_TIMEOUT)
            return f"the writer process did not stop within {WRITER_STOP_TIMEOUT:g}s"
        return "" if self.writer.exitcode == 0 else f"the writer process exited with status {self.writer.exitcode}"

    @property
    def written(self) -> int:
        return int(self._written.value) if self._written is not None else 0

    def drained(self) -> bool:
        """Whether the records delivered reach the records written (call after stop_writer)."""
        with self.delivered.lock:
            return bool(sum(n for _, records in self.delivered.batches for _, (n, _) in records) >= self.written)

    def differences(self) -> list[str]:
        """Where Redis's counts differ from plain Python's over every record written."""
        client = self._sink._client  # noqa: SLF001 - the sink's connection: no second one to close
        problems = []
        held = sum(int(client.xlen(key)) for key in self.streams)
        if held != self.written:
            problems.append(f"redis: the streams hold {held} entries, the writer acknowledged {self.written}")
        expected = Counter(record_key(self.seed, n) for n in range(self.written))
        counts = {k.decode(): int(v) for k, v in client.hgetall(f"{self.prefix}:counts").items()}
        if counts != dict(expected):
            wrong = sorted(k for k in set(counts) | set(expected) if counts.get(k, 0) != expected.get(k, 0))
            problems.append(f"redis counts: {len(wrong)} of {len(expected)} keys differ from plain Python over "
                            f"{self.written} records, e.g. " + ", ".join(
                                f"{k}: {counts.get(k, 0)} not {expected.get(k, 0)}" for k in wrong[:3]))
        last: dict[str, tuple[int, int]] = {}
        for name, value in client.hgetall(f"{self.prefix}:running").items():
            key, batch = name.decode().rsplit("@", 1)
            last[key] = max(last.get(key, (-1, 0)), (int(batch), int(value)))
        lost = sorted(k for k in expected if last.get(k, (0, 0))[1] != expected[k])
        if lost:
            problems.append(f"running counts: {len(lost)} keys' last running count differs from plain Python, e.g. "
                            + ", ".join(f"{k}: {last.get(k, (0, 0))[1]} not {expected[k]}" for k in lost[:3]))
        return problems

    def close(self, shared: bool) -> None:
        """Stop the writer and close the sink; on a shared Redis (--redis-url) delete the trial's keys."""
        self.stop_writer()
        if self._sink is None:
            return
        if shared:
            client = self._sink._client  # noqa: SLF001
            client.delete(*self.streams, f"{self.prefix}:counts", f"{self.prefix}:running", self._sink.marker,
                          *(f"squall:source:{self.prefix}:{p}" for p in range(PARTITIONS)))
        self._sink.close()
