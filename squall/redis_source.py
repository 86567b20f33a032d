"""Redis Streams as a replayable stream source (made by squall.sources.redis_stream).

Batch ranges are claimed, not computed. Per partition a Redis hash `squall:source:<name>:<p>`
records every batch's range of entry ids (field = batch number, value = "<exclusive start id>
<last id read> <count>"), the last batch claimed, the last id read and the entries claimed so far.
One Lua script claims batch b atomically: if b is recorded it returns that range; otherwise it
claims every unclaimed batch k up to b in order, k's range starting after k-1's last id and taking
at most max_records_per_batch entries with ids below k's end. Every task of a batch (first
attempt, replay, speculative copy, on any executor) therefore reads the same entries.

Clocks: the driver's wall clock defines batch ends (batch k ends at the stream's start +
(k + 1) * batch_interval); Redis's clock assigns entry ids (milliseconds, and they only grow when
producers use auto ids, XADD *). Once Redis's clock (TIME) has passed a batch's end, no entry
below that end can come any more, so the script refuses to claim before then and the task waits.

The recorded ranges are as durable as Redis: exactly once across a Redis restart needs
appendonly (with appendfsync always, or a claim acknowledged just before a crash may be lost).
"""

from __future__ import annotations

import functools
import hashlib
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import structlog

from squall.stream_source import StreamSource

RECONNECT_SECONDS = 30.0  # how long a task keeps retrying a lost Redis before failing
CLOCK_SKEW_SECONDS = 5.0  # how far Redis's clock may lag this machine's before a batch fails
READ_CHUNK = 1_000  # entries per XRANGE call when a task reads its range
MAX_SEQ = "18446744073709551615"  # the largest sequence number of an entry id

log = structlog.get_logger()

# KEYS: the partition's ranges hash, its stream. ARGV: batch, the run's start (seconds), batch
# interval (seconds), "beginning" | "now", max records per batch. Returns {"range", recorded} or
# {"wait", Redis's time in ms, the batch's end in ms} (the batch's end has not passed yet).
CLAIM_SCRIPT = """
local ranges, stream = KEYS[1], KEYS[2]
local batch = tonumber(ARGV[1])
local start = tonumber(ARGV[2])
local interval = tonumber(ARGV[3])
local first = ARGV[4]
local max_records = tonumber(ARGV[5])

local function end_ms(k) return math.floor((start + (k + 1) * interval) * 1000) end
local function ms(x) return string.format('%.0f', x) end
local function id_below(m) return ms(m - 1) .. '-' .. '""" + MAX_SEQ + """' end

local run = redis.call('HGET', ranges, 'run')
if not run or tonumber(run) < start then
  -- a new run under this name: it goes on after the last entry read (a fresh name: from its start)
  local last_id = redis.call('HGET', ranges, 'last_id')
  local claimed = redis.call('HGET', ranges, 'claimed')
  if not last_id then
    if first == 'beginning' then last_id = '0-0' else last_id = id_below(math.floor(start * 1000)) end
    local info = redis.pcall('XINFO', 'STREAM', stream)
    local added, after = 0, 0
    if not info.err then
      for i = 1, #info, 2 do if info[i] == 'entries-added' then added = info[i + 1] end end
      if first == 'beginning' then after = redis.call('XLEN', stream)
      else after = #redis.call('XRANGE', stream, '(' .. last_id, '+') end
    end
    claimed = added - after  -- entries before the first range count as claimed, for the lag
  end
  redis.call('DEL', ranges)
  redis.call('HSET', ranges, 'run', ARGV[2], 'last', -1, 'last_id', last_id, 'claimed', claimed)
elseif tonumber(run) > start then
  return redis.error_reply('a newer run of this stream has taken over its name')
else
  local recorded = redis.call('HGET', ranges, ARGV[1])
  if recorded then return {'range', recorded} end
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now < end_ms(batch) then return {'wait', ms(now), ms(end_ms(batch))} end

local last = tonumber(redis.call('HGET', ranges, 'last'))
if batch <= last then return redis.error_reply('batch ' .. ARGV[1] .. ' was claimed but its range is gone') end
local from = redis.call('HGET', ranges, 'last_id')
local claimed = tonumber(redis.call('HGET', ranges, 'claimed'))
local recorded
for k = last + 1, batch do
  local entries = redis.call('XRANGE', stream, '(' .. from, id_below(end_ms(k)), 'COUNT', max_records)
  local to = from
  if #entries > 0 then to = entries[#entries][1] end
  recorded = from .. ' ' .. to .. ' ' .. #entries
  redis.call('HSET', ranges, tostring(k), recorded)
  from = to
  claimed = claimed + #entries
end
redis.call('HSET', ranges, 'last', batch, 'last_id', from, 'claimed', ms(claimed))
return {'range', recorded}
"""


def _redis() -> Any:
    try:
        import redis
    except ImportError as exc:
        raise ImportError("Redis Streams sources need the redis client library: pip install 'squall[redis]'") from exc
    return redis


@dataclass
class _Client:
    redis: Any
    claim: Any  # the claim script, registered once (redis-py loads it again after a Redis restart)


_clients: dict[str, _Client] = {}
_clients_lock = threading.Lock()


def client(url: str) -> _Client:
    """This process's client for `url` (executors run many tasks: one connection pool each)."""
    with _clients_lock:
        found = _clients.get(url)
        if found is None:
            r = _redis().Redis.from_url(url, socket_timeout=5.0, socket_connect_timeout=2.0)
            found = _clients[url] = _Client(r, r.register_script(CLAIM_SCRIPT))
        return found


def ranges_key(name: str, partition: int) -> str:
    return f"squall:source:{name}:{partition}"


@dataclass(frozen=True)
class RedisStreamSource(StreamSource):
    """Made by redis_stream(): entries of one Redis Stream per partition, claimed by batch."""

    url: str
    keys: tuple[str, ...]
    name: str
    start: str  # "now" or "beginning"
    max_records_per_batch: int
    field: str | None

    def batch_function(self, start: float, batch_interval: float) -> Callable[[int, int], Iterable[Any]]:
        return functools.partial(redis_batch, self, start, batch_interval)

    def lag(self) -> int | None:
        """Entries added to the streams and not claimed by a batch yet; None when Redis cannot
        tell (older than 7, unreachable, or no batch claimed yet)."""
        redis = _redis()
        try:
            r = client(self.url).redis
            pipe = r.pipeline(transaction=False)
            for p, key in enumerate(self.keys):
                pipe.exists(key)
                pipe.hget(ranges_key(self.name, p), "claimed")
            answers = pipe.execute()
            added = 0
            for p, key in enumerate(self.keys):
                if answers[2 * p + 1] is None:
                    return None
                if answers[2 * p]:
                    info = r.xinfo_stream(key)
                    if "entries-added" not in info:
                        return None
                    added += int(info["entries-added"])
            return max(0, added - sum(int(answers[2 * p + 1]) for p in range(len(self.keys))))
        except redis.RedisError:
            return None


_outages: set[str] = set()  # URLs this process is retrying: one warning per outage, not one per task


def redis_batch(source: RedisStreamSource, start: float, interval: float, partition: int, batch: int) -> list[Any]:
    """The entries of one partition's stream in one batch (executed on executors). A lost Redis
    is retried for RECONNECT_SECONDS: the claim is idempotent, so a retry neither repeats nor loses."""
    redis = _redis()
    deadline = time.monotonic() + RECONNECT_SECONDS
    backoff = 0.05
    while True:
        try:
            records = _read_batch(source, start, interval, partition, batch)
            with _clients_lock:
                back = source.url in _outages
                _outages.discard(source.url)
            if back:
                log.info("redis_reconnected", url=source.url, partition=partition, batch=batch)
            return records
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as exc:
            with _clients_lock:
                first = source.url not in _outages
                _outages.add(source.url)
            if first:
                log.warning("redis_unreachable", url=source.url, partition=partition, batch=batch, error=str(exc),
                            retrying_for=RECONNECT_SECONDS)
            if time.monotonic() > deadline:
                raise ConnectionError(f"Redis at {source.url} unreachable for {RECONNECT_SECONDS:g}s: {exc}") from exc
            time.sleep(backoff)
            backoff = min(1.0, backoff * 2)


def _read_batch(source: RedisStreamSource, start: float, interval: float, partition: int, batch: int) -> list[Any]:
    c = client(source.url)
    key = source.keys[partition]
    first, last, count = _claim(c, source, start, interval, partition, batch).split(" ")
    records: list[Any] = []
    cursor = "(" + first
    remaining = int(count)
    while remaining > 0:
        entries = c.redis.xrange(key, cursor, last, count=min(READ_CHUNK, remaining))
        if not entries:
            break  # entries of the range were deleted (XDEL, trimming): they are gone for every replay alike
        records.extend(_record(source.field, key, entry_id, fields) for entry_id, fields in entries)
        remaining -= len(entries)
        cursor = "(" + entries[-1][0].decode()
    return records


def _claim(c: _Client, source: RedisStreamSource, start: float, interval: float, partition: int, batch: int) -> str:
    """The batch's recorded range, claiming it once its end has passed on Redis's clock."""
    args = [str(batch), repr(start), repr(interval), source.start, str(source.max_records_per_batch)]
    while True:
        answer = c.claim(keys=[ranges_key(source.name, partition), source.keys[partition]], args=args)
        kind = answer[0].decode()
        if kind == "range":
            return str(answer[1].decode())
        redis_ms, end_ms = int(answer[1]), int(answer[2])
        behind = time.time() - redis_ms / 1000
        if behind > CLOCK_SKEW_SECONDS:
            raise RuntimeError(
                f"Redis's clock at {source.url} is {behind:.1f}s behind this machine's (more than "
                f"{CLOCK_SKEW_SECONDS:g}s): batch ends are set by the driver's clock and entry ids by Redis's, "
                "so synchronize the clocks (NTP)")
        time.sleep(min(1.0, (end_ms - redis_ms) / 1000 + 0.001))


def _record(field: str | None, key: str, entry_id: bytes, fields: dict[bytes, bytes]) -> Any:
    values = {k.decode(): v.decode() for k, v in fields.items()}
    if field is None:
        return values
    if field not in values:
        raise KeyError(f"entry {entry_id.decode()} of Redis stream {key!r} has no field {field!r} "
                       f"(it has {sorted(values)})")
    return values[field]


def redis_stream(url: str, streams: str | list[str], partitions: int | None = None, *, name: str | None = None,
                 start: str = "now", max_records_per_batch: int = 10_000, field: str | None = None) -> StreamSource:
    """Entries of Redis Streams, one stream key per partition: `streams` is a list of keys, or
    one key with `partitions=N` (keys f"{key}:{p}"), or one key alone (one partition). Each
    record is the entry's fields as a dict of str -> str, or with `field` that field's value.
    `start="now"` reads entries added from the stream's start on, `"beginning"` every entry the
    streams hold. `name` (default: derived from the keys) names the ranges recorded in Redis; a
    name that has recorded ranges resumes after the last entry read, whatever `start` says. A
    batch reads at most `max_records_per_batch` entries per partition (a backlog drains over
    several batches). Raises ValueError for bad arguments, ImportError without the redis library."""
    _redis()
    if isinstance(streams, str):
        keys = [f"{streams}:{p}" for p in range(partitions)] if partitions is not None else [streams]
        if partitions is not None and (not isinstance(partitions, int) or partitions < 1):
            raise ValueError(f"redis_stream() needs a positive number of partitions, got {partitions!r}")
    else:
        keys = list(streams)
        if not keys or not all(isinstance(k, str) and k for k in keys):
            raise ValueError(f"redis_stream() needs stream keys (non-empty strings), got {streams!r}")
        if partitions is not None and partitions != len(keys):
            raise ValueError(f"redis_stream() got {len(keys)} stream keys but partitions={partitions!r}")
    if len(set(keys)) != len(keys):
        raise ValueError(f"redis_stream() got a stream key twice: {keys!r}")
    if start not in ("now", "beginning"):
        raise ValueError(f'redis_stream() start must be "now" or "beginning", got {start!r}')
    if not isinstance(max_records_per_batch, int) or max_records_per_batch < 1:
        raise ValueError(f"redis_stream() needs a positive max_records_per_batch, got {max_records_per_batch!r}")
    if name is None:
        joined = ",".join(keys)
        name = joined if len(joined) <= 64 else hashlib.sha1(joined.encode()).hexdigest()[:16]
    return RedisStreamSource(partitions=len(keys), url=url, keys=tuple(keys), name=name, start=start,
                             max_records_per_batch=max_records_per_batch, field=field)
