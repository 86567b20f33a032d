"""Stream sinks: where each micro-batch's result goes.

A sink is a callable `sink(batch, records)`, so `stream.foreach_batch(sink)` runs it on the driver
once per completed batch, in batch order. Every sink also has `close()` and works as a context
manager.

- `DirectorySink(path, format)`: one file per batch, committed atomically. Writing a batch again
  with the same records changes nothing, so a replayed batch is still written exactly once.
- `PubSink(address, topic)`: publishes each batch on a ZeroMQ PUB socket, best-effort.
  `subscribe(address, topic)` is the matching reader.
- `RedisSink(url, name, mode, key)`: each batch's writes (hash increments, sorted-set scores or
  stream entries) and its commit marker in one Lua script, so a replayed batch writes nothing.

docs/sources-and-sinks.md is the contract a sink of your own must meet to be exactly-once.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import msgspec
import zmq

from squall.common import security
from squall.common.serialization import dumps_block, loads_block
from squall.common.settings import Settings
from squall.common.transport import bind
from squall.errors import SquallError

BATCH_DIGITS = 12  # batch-000000000042.jsonl: lexical order is batch order up to 10**12 batches


class SinkError(SquallError):
    """A sink could not take a batch: a failed write, a closed sink, a malformed message."""


class ReplayMismatchError(SinkError):
    """A batch that is already committed was written again with different records."""


# --- DirectorySink ------------------------------------------------------------------------------


class _ClosedOnExit:
    """Sinks and subscriptions are context managers: `with` closes them on the way out."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class _Format:
    suffix: str
    encode: Callable[[int, list[Any]], bytes]
    decode: Callable[[bytes], list[Any]]


def _encode_jsonl(batch: int, records: list[Any]) -> bytes:
    """One JSON document per line; tuples become lists. Strict JSON: NaN and infinities are refused."""
    encoder = json.JSONEncoder(allow_nan=False, separators=(",", ":"))
    lines = []
    for i, record in enumerate(records):
        try:
            lines.append(encoder.encode(record) + "\n")
        except (TypeError, ValueError) as exc:
            raise TypeError(f"batch {batch}: record {i} cannot be written as JSON: {exc}") from exc
    return "".join(lines).encode()


def _decode_jsonl(data: bytes) -> list[Any]:
    return [json.loads(line) for line in data.splitlines()]


def _encode_pickle(batch: int, records: list[Any]) -> bytes:
    try:
        return pickle.dumps(list(records), protocol=5)
    except Exception as exc:
        raise TypeError(f"batch {batch}: records cannot be pickled: {type(exc).__name__}: {exc}") from exc


_FORMATS = {
    "jsonl": _Format("jsonl", _encode_jsonl, _decode_jsonl),
    "pickle": _Format("pickle", _encode_pickle, pickle.loads),
}


class DirectorySink(_ClosedOnExit):
    """Writes every batch to its own file in `path`: batch-000000000042.jsonl (or .pickle).

    A batch is committed atomically: its bytes go to a temporary file in the same directory, are
    flushed to disk, and the file is renamed into place; a reader never sees half a batch. A batch
    written again (a replay) must carry the same records: then the committed file is kept as it is,
    so there is exactly one copy. Different records for a committed batch raise
    ReplayMismatchError and also keep the committed file, because exactly-once output needs a
    replay to reproduce the original. "Same" means identical bytes (compared by SHA-256) or bytes
    that decode to equal records (pickle bytes depend on which objects are shared, JSON text on
    dict order). Records must come in a deterministic order for a replay to match.

    One writer per directory: temporary files left by a crashed writer are removed on opening.
    `path` is created if missing; `format` is "jsonl" (default; records must be JSON: tuples come
    back as lists) or "pickle" (any picklable record). Raises ValueError for another format.
    """

    def __init__(self, path: str | os.PathLike[str], format: str = "jsonl") -> None:
        if format not in _FORMATS:
            raise ValueError(f"DirectorySink format must be one of {sorted(_FORMATS)}, got {format!r}")
        self.path = Path(path)
        self.format = format
        self._format = _FORMATS[format]
        self._name = re.compile(rf"batch-(\d{{{BATCH_DIGITS}}})\.{self._format.suffix}")
        self.path.mkdir(parents=True, exist_ok=True)
        self._remove_temporaries()
        self._dir_fd: int | None = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)

    def __call__(self, batch: int, records: list[Any]) -> None:
        if self._dir_fd is None:
            raise SinkError(f"batch {batch}: the DirectorySink at {self.path} is closed")
        target = self.file_for(batch)
        data = self._format.encode(batch, records)
        committed = _read_if_present(target)
        if committed is None:
            self._commit(batch, target, data)
        elif not self._same_records(committed, data):
            raise ReplayMismatchError(
                f"batch {batch} is already committed at {target} with different records "
                f"(committed sha256 {_digest(committed)}, replay sha256 {_digest(data)}); "
                "a replayed batch must reproduce its original output"
            )

    def file_for(self, batch: int) -> Path:
        """The path of batch `batch`'s file (whether committed or not); ValueError for a bad index."""
        if not isinstance(batch, int) or not 0 <= batch < 10**BATCH_DIGITS:
            raise ValueError(f"a batch index must be an integer in [0, 10**{BATCH_DIGITS}), got {batch!r}")
        return self.path / f"batch-{batch:0{BATCH_DIGITS}d}.{self._format.suffix}"

    def committed_batches(self) -> list[int]:
        """The batches that have a committed file, in order."""
        return sorted(int(m.group(1)) for f in self.path.iterdir() if (m := self._name.fullmatch(f.name)))

    def read_batch(self, batch: int) -> list[Any]:
        """The records of a committed batch (JSON arrays come back as lists)."""
        return self._format.decode(self.file_for(batch).read_bytes())

    def close(self) -> None:
        """Release the directory; writing a batch afterwards raises SinkError."""
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None

    def _commit(self, batch: int, target: Path, data: bytes) -> None:
        """Temporary file, flush and fsync, rename over the target, fsync the directory."""
        temporary = None
        try:
            fd, temporary = tempfile.mkstemp(dir=self.path, prefix=f".{target.name}.", suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temporary, target)
            temporary = None
            assert self._dir_fd is not None
            os.fsync(self._dir_fd)
        except OSError as exc:
            raise SinkError(f"batch {batch}: cannot write {target}: {exc}") from exc
        finally:
            if temporary is not None:
                _remove_if_present(temporary)

    def _same_records(self, committed: bytes, data: bytes) -> bool:
        return _digest(committed) == _digest(data) or self._format.decode(committed) == self._format.decode(data)

    def _remove_temporaries(self) -> None:
        for leftover in self.path.glob(".batch-*.tmp"):
            _remove_if_present(leftover)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_if_present(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _remove_if_present(path: str | Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# --- PubSink and subscribe ----------------------------------------------------------------------


class BatchHeader(msgspec.Struct):
    """The second frame of a published batch (a msgpack map {"batch": b, "count": n})."""

    batch: int
    count: int


class PubSink(_ClosedOnExit):
    """Publishes every batch as [topic, header, payload] on a ZeroMQ publisher bound at `address`.

    The header is msgpack {"batch": b, "count": n}; the payload is the records as a Squall block
    (common.serialization.loads_block reads it; `subscribe` does it for you). `endpoint` is the
    bound address, with the real port when `address` ends in ":*".

    Best-effort by nature: a subscriber only gets what is published after it has connected and
    subscribed, and publishing never waits. When a subscriber falls `high_water_mark` messages
    behind, the batch is not sent (to anyone) and counted in `dropped`. Use a DirectorySink where
    every batch must arrive. Not thread-safe: use it from one thread at a time.

    Secured like the cluster: with `settings` holding a key pair (`ctx.settings` shares the
    cluster's), it speaks CurveZMQ and serves only subscribers holding the same pair (they unpickle
    what it sends, so they must know who sent it); plaintext only with plaintext set, on loopback.
    Defaults: topic b"squall", high_water_mark 1000 messages, linger 1 s (see close), the process's
    shared ZeroMQ context, settings from SQUALL_* in the environment. Raises zmq.ZMQError if
    `address` cannot be bound.
    """

    def __init__(self, address: str, topic: bytes = b"squall", high_water_mark: int = 1000,
                 linger: float = 1.0, context: zmq.SyncContext | None = None, settings: Settings | None = None) -> None:
        self.topic = topic
        self.dropped = 0
        self._subscribed: set[bytes] = set()  # prefixes subscribers asked for
        ctx = context or zmq.Context.instance()
        settings = _secured(settings, address)
        # XPUB with NODROP behaves as PUB but refuses a message (zmq.Again) instead of silently
        # losing it, so that drops can be counted; it also tells us about subscriptions.
        self._sock = ctx.socket(zmq.XPUB)
        security.configure(self._sock, settings, server=True)
        _authenticate(ctx, settings)
        self._sock.setsockopt(zmq.LINGER, int(linger * 1000))
        self._sock.setsockopt(zmq.SNDHWM, high_water_mark)
        self._sock.setsockopt(zmq.XPUB_NODROP, 1)
        try:
            self.endpoint = bind(self._sock, address)
        except zmq.ZMQError:
            self._sock.close(0)
            raise

    def __call__(self, batch: int, records: list[Any]) -> None:
        if self._sock.closed:
            raise SinkError(f"batch {batch}: the PubSink at {self.endpoint} is closed")
        header = msgspec.msgpack.encode(BatchHeader(batch=batch, count=len(records)))
        self._read_subscriptions()
        try:
            self._sock.send_multipart([self.topic, header, dumps_block(records)], flags=zmq.NOBLOCK)
        except zmq.Again:
            self.dropped += 1

    def has_subscribers(self) -> bool:
        """Whether some subscriber is listening to this sink's topic right now. Wait for this
        before the first batch when the first batches matter (ZeroMQ's slow joiner)."""
        self._read_subscriptions()
        return any(self.topic.startswith(prefix) for prefix in self._subscribed)

    def close(self) -> None:
        """Close the socket; batches still queued get `linger` seconds to leave."""
        self._sock.close()

    def _read_subscriptions(self) -> None:
        """Take the (un)subscribe notices the socket queued: b"\\x01" or b"\\x00" + prefix."""
        while True:
            try:
                notice = self._sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if notice[:1] == b"\x01":
                self._subscribed.add(notice[1:])
            elif notice[:1] == b"\x00":
                self._subscribed.discard(notice[1:])


class Subscription(_ClosedOnExit):
    """Batches published by a PubSink: iterate for (batch, records), or `receive()` one.

    Subscribes at once, when created. Iteration ends after `timeout` seconds without a batch, so
    it never hangs. Messages on other topics that merely share the prefix are skipped.
    Made by subscribe() (see there for the parameters).
    """

    def __init__(self, address: str, topic: bytes = b"squall", timeout: float = 5.0,
                 context: zmq.SyncContext | None = None, settings: Settings | None = None) -> None:
        self.topic = topic
        self.timeout = timeout
        settings = _secured(settings, address)
        self._sock = (context or zmq.Context.instance()).socket(zmq.SUB)
        security.configure(self._sock, settings, server=False)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.SUBSCRIBE, topic)
        try:
            self._sock.connect(address)
        except zmq.ZMQError:
            self._sock.close()
            raise

    def receive(self, timeout: float | None = None) -> tuple[int, list[Any]] | None:
        """The next (batch, records), or None after `timeout` seconds (default: self.timeout)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while self._sock.poll(int(max(0.0, deadline - time.monotonic()) * 1000)):
            frames = self._sock.recv_multipart()
            if frames[0] == self.topic:
                return _decode_published(frames)
            if time.monotonic() >= deadline:
                break
        return None

    def __iter__(self) -> Iterator[tuple[int, list[Any]]]:
        while (item := self.receive()) is not None:
            yield item

    def close(self) -> None:
        """Close the socket: batches not yet received are dropped."""
        self._sock.close()


def subscribe(address: str, topic: bytes = b"squall", timeout: float = 5.0, settings: Settings | None = None) -> Subscription:
    """Subscribe to a PubSink's batches: `for batch, records in subscribe(sink.endpoint): ...`.

    `topic` (default b"squall") must be the sink's. Iteration stops after `timeout` seconds
    (default 5) without a batch. Close it (or use `with`) when done.
    `settings` carries the key pair the sink uses (default: SQUALL_* from the environment)."""
    return Subscription(address, topic, timeout, settings=settings)


_authenticators: dict[int, Any] = {}  # one ZAP handler per ZeroMQ context that serves a PubSink


def _secured(settings: Settings | None, address: str) -> Settings:
    """The settings to secure a sink's socket with; keys are required unless plaintext is set
    (and then only on loopback), as for the cluster's own sockets."""
    settings = settings if settings is not None else Settings.from_env()
    try:
        security.check(settings, [address])
    except security.SecurityError as exc:
        raise SinkError(f"{address}: {exc}") from None
    return settings


def _authenticate(ctx: zmq.SyncContext, settings: Settings) -> None:
    if not settings.plaintext and id(ctx) not in _authenticators:
        _authenticators[id(ctx)] = security.start_authenticator(ctx, settings)


def _decode_published(frames: list[bytes]) -> tuple[int, list[Any]]:
    if len(frames) != 3:
        raise SinkError(f"a published batch has 3 frames (topic, header, payload), got {len(frames)}")
    try:
        header = msgspec.msgpack.decode(frames[1], type=BatchHeader)
    except msgspec.DecodeError as exc:
        raise SinkError(f"a published batch has a malformed header: {exc}") from exc
    return header.batch, loads_block(frames[2])


# --- RedisSink ----------------------------------------------------------------------------------

REDIS_INSTALL_HINT = "pip install 'squall[redis]'"
MAX_BATCH_RECORDS = 100_000  # a script blocks every other Redis client while it runs (~1 us a write)
MAX_BATCH_BYTES = 64 * 2**20  # the batch's arguments, well within Redis's 1 GiB query buffer
MAX_STREAM_FIELDS = 1000  # fields of one stream entry: Lua's unpack() needs a stack slot for each
RETRY_TIMEOUT = 30.0
_MODES = ("hash", "zset", "stream")

# One script for every mode. KEYS[1] is the commit marker, KEYS[2..] the keys the batch writes.
# ARGV: batch, operation, stream MAXLEN ("" for none), then the writes: for hincrby, zadd and
# zincrby triples (index into KEYS, field or member, increment or score); for xadd
# (index into KEYS, n, n field/value pairs). Redis runs a script atomically but does not undo
# the writes before a failing command, so every check that can fail comes before the first write:
# the Python side validates the records, the script the types of the keys and, for HINCRBY, that
# the fields it adds to hold integers.
REDIS_SINK_SCRIPT = """
-- ARGV[1] and the marker: "<batch>" or "<batch> <run>" (a run numbers its batches from 0, so a
-- marker of another run says nothing about this run's batches).
local batch, run = string.match(ARGV[1], '^(%d+) ?(.*)$')
batch = tonumber(batch)
local committed = redis.call('GET', KEYS[1])
if committed then
  local done, done_run = string.match(committed, '^(%d+) ?(.*)$')
  if done_run == run and tonumber(done) >= batch then return 0 end
end
local op = ARGV[2]
local wanted = ({hincrby = 'hash', zadd = 'zset', zincrby = 'zset', xadd = 'stream'})[op]
for k = 2, #KEYS do
  local held = redis.call('TYPE', KEYS[k])['ok']
  if held ~= 'none' and held ~= wanted then
    return redis.error_reply('WRONGTYPE ' .. KEYS[k] .. ' holds a ' .. held .. ', not a ' .. wanted)
  end
end
if op == 'hincrby' then
  for i = 4, #ARGV, 3 do
    local old = redis.call('HGET', KEYS[tonumber(ARGV[i])], ARGV[i + 1])
    if old and not string.match(old, '^-?%d+$') then
      return redis.error_reply('field ' .. ARGV[i + 1] .. ' of ' .. KEYS[tonumber(ARGV[i])] .. ' holds ' .. old .. ', not an integer')
    end
  end
  for i = 4, #ARGV, 3 do redis.call('HINCRBY', KEYS[tonumber(ARGV[i])], ARGV[i + 1], ARGV[i + 2]) end
elseif op == 'zadd' then
  for i = 4, #ARGV, 3 do redis.call('ZADD', KEYS[tonumber(ARGV[i])], ARGV[i + 2], ARGV[i + 1]) end
elseif op == 'zincrby' then
  for i = 4, #ARGV, 3 do redis.call('ZINCRBY', KEYS[tonumber(ARGV[i])], ARGV[i + 2], ARGV[i + 1]) end
else
  local i = 4
  while i <= #ARGV do
    local key, n = KEYS[tonumber(ARGV[i])], tonumber(ARGV[i + 1])
    if ARGV[3] == '' then
      redis.call('XADD', key, '*', unpack(ARGV, i + 2, i + 1 + 2 * n))
    else
      redis.call('XADD', key, 'MAXLEN', '~', ARGV[3], '*', unpack(ARGV, i + 2, i + 1 + 2 * n))
    end
    i = i + 2 + 2 * n
  end
end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"""

_Scalar = str | bytes


class RedisSink(_ClosedOnExit):
    """Writes every batch to Redis exactly once: the batch's writes and the sink's commit marker
    `squall:sink:<name>:committed` (the last batch written, and the stream run that wrote it) go
    in one Lua script, which Redis runs atomically. The script writes nothing when the marker
    already holds this batch or a later one of the same run, so a replayed batch (after a lost
    executor or a restarted scheduler, a retried call) leaves the output as it was. A stream
    tells the sink its run when it starts (on_start): a stream started again over a source that
    goes on with new records (rate, redis_stream) is a new run, numbered from 0 and written in
    full; one over a source that makes its old batches again (directory, generator) is the same
    run, and its old batches are not written twice. `name` must differ between streams writing
    to one Redis. Called without a stream (no on_start), batches are those of one run.

    Modes (records of a batch, all checked before anything is written):
    - "hash": (field, increment) pairs, HINCRBY on `key` (counters, such as views per campaign);
      or (key, field, increment) triples to spread over keys. Increments are integers.
    - "zset": (member, score) pairs (or (key, member, score) triples), ZADD; with
      `increment=True` ZINCRBY. Scores are finite numbers.
    - "stream": each record XADDed to `key` (entry id "*"): a dict of field -> value (str,
      bytes or numbers) as the entry's fields, any other record as {"value": its JSON};
      `maxlen` trims the stream to about that many entries.
    Fields, members and keys are str, bytes or numbers.

    A batch is at most `max_batch_records` records and `max_batch_bytes` of arguments (defaults
    100,000 and 64 MiB): the script that makes it atomic keeps every other client of that Redis
    waiting while it runs, so a larger batch raises SinkError, naming the limit, before writing
    anything (make batches smaller: a shorter batch_interval, or aggregate before the sink).

    When Redis cannot be reached (down, restarting, loading its append-only file) a batch is
    tried again with backoff for up to `retry_timeout` seconds (default 30), then SinkError
    stops the stream; by the atomicity nothing is half-written, and a batch whose reply was lost
    is not written twice. The script is loaded once (SCRIPT LOAD) and loaded again when Redis
    answers NOSCRIPT, as after a restart. Needs the redis client library (the squall[redis]
    extra). Not thread-safe: use it from one thread at a time.
    """

    def __init__(self, url: str, name: str, mode: str = "hash", key: str | None = None, *,
                 increment: bool = False, maxlen: int | None = None,
                 max_batch_records: int = MAX_BATCH_RECORDS, max_batch_bytes: int = MAX_BATCH_BYTES,
                 retry_timeout: float = RETRY_TIMEOUT, socket_timeout: float = 10.0) -> None:
        if mode not in _MODES:
            raise ValueError(f"RedisSink mode must be one of {list(_MODES)}, got {mode!r}")
        if not isinstance(name, str) or not name:
            raise ValueError(f"RedisSink needs a non-empty name (it names the commit marker), got {name!r}")
        if mode == "stream" and key is None:
            raise ValueError("RedisSink mode 'stream' needs key= (the stream to XADD to)")
        if maxlen is not None and (mode != "stream" or maxlen < 1):
            raise ValueError(f"maxlen is a positive entry count for mode 'stream', got {maxlen!r} for mode {mode!r}")
        if increment and mode != "zset":
            raise ValueError("increment=True is for mode 'zset' (hash mode always increments)")
        redis = _import_redis()
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.url, self.name, self.mode, self.key = url, name, mode, key
        self.marker = f"squall:sink:{name}:committed"
        self.max_batch_records, self.max_batch_bytes = max_batch_records, max_batch_bytes
        self.retry_timeout = retry_timeout
        self.retries = 0  # attempts repeated because Redis could not be reached
        self.written = 0  # batches this sink wrote
        self.skipped = 0  # batches it found already committed
        self._operation = {"hash": "hincrby", "zset": "zincrby" if increment else "zadd", "stream": "xadd"}[mode]
        self._maxlen = "" if maxlen is None else str(maxlen)
        self._redis = redis
        # The retries are ours (with a deadline), so the client's own are off.
        self._client: Any = redis.Redis.from_url(url, socket_timeout=socket_timeout,
                                                 socket_connect_timeout=min(socket_timeout, 5.0),
                                                 retry=Retry(NoBackoff(), 0))
        self._sha: str | None = None
        self._closed = False
        self._run_id = ""  # the stream run whose batches these are ("" until a stream starts with the sink)

    def on_start(self, clock: Any) -> None:
        """A stream starts with this sink: its batches from now on are those of run clock.run (a
        squall.stream.StreamClock; StreamSource.run_of says which), numbered from 0."""
        self._run_id = str(clock.run).replace(" ", "_")

    def __call__(self, batch: int, records: list[Any]) -> None:
        if self._closed:
            raise SinkError(f"batch {batch}: the RedisSink {self.name!r} at {self.url} is closed")
        if not isinstance(batch, int) or isinstance(batch, bool) or batch < 0:
            raise ValueError(f"a batch index must be a non-negative integer, got {batch!r}")
        keys, writes = self._encode(batch, records)
        arguments = [f"{batch} {self._run_id}" if self._run_id else str(batch), self._operation, self._maxlen, *writes]
        if self._run(batch, [self.marker, *keys], arguments):
            self.written += 1
        else:
            self.skipped += 1

    def committed_batch(self) -> int | None:
        """The last batch this sink's name has committed in Redis (by whichever run), or None before the first."""
        value = self._with_retries("reading the commit marker", lambda: self._client.get(self.marker))
        return None if value is None else int(value.split()[0])

    def close(self) -> None:
        """Close the connection; writing a batch afterwards raises SinkError."""
        if not self._closed:
            self._closed = True
            self._client.close()

    # The records become KEYS and ARGV for the script, every one of them checked first.

    def _encode(self, batch: int, records: list[Any]) -> tuple[list[_Scalar], list[_Scalar]]:
        if len(records) > self.max_batch_records:
            raise SinkError(f"batch {batch}: {len(records):,} records is more than the RedisSink's max_batch_records "
                            f"({self.max_batch_records:,}); make batches smaller (a shorter batch_interval) or aggregate first")
        key_index: dict[_Scalar, int] = {}
        writes: list[_Scalar] = []

        def index_of(key: _Scalar) -> str:
            return str(key_index.setdefault(key, len(key_index) + 2))  # KEYS[1] is the marker

        for i, record in enumerate(records):
            if self.mode == "stream":
                fields = self._stream_fields(batch, i, record)
                writes += [index_of(self.key or ""), str(len(fields) // 2), *fields]
            else:
                key, member, amount = self._triple(batch, i, record)
                writes += [index_of(key), member, amount]
        size = sum(len(w) for w in writes) + sum(len(k) for k in key_index)  # characters: about the bytes
        if size > self.max_batch_bytes:
            raise SinkError(f"batch {batch}: {size:,} bytes of writes is more than the RedisSink's max_batch_bytes "
                            f"({self.max_batch_bytes:,}); make batches smaller (a shorter batch_interval) or aggregate first")
        return list(key_index), writes

    def _triple(self, batch: int, i: int, record: Any) -> tuple[_Scalar, _Scalar, str]:
        what = "(field, increment)" if self.mode == "hash" else "(member, score)"
        if not isinstance(record, tuple | list) or len(record) not in (2, 3):
            raise SinkError(f"batch {batch}: record {i} is {record!r}, not a {what} pair or a (key, ...) triple")
        if len(record) == 2:
            if self.key is None:
                raise SinkError(f"batch {batch}: record {i} is a pair but the RedisSink has no key=; "
                                "give key= or write (key, ...) triples")
            key, member, amount = self.key, record[0], record[1]
        else:
            key, member, amount = record
        return _scalar(batch, i, "key", key), _scalar(batch, i, "field" if self.mode == "hash" else "member", member), \
            self._amount(batch, i, amount)

    def _amount(self, batch: int, i: int, amount: Any) -> str:
        if isinstance(amount, bool) or not isinstance(amount, int | float):
            raise SinkError(f"batch {batch}: record {i} has {amount!r} as its "
                            f"{'increment' if self.mode == 'hash' else 'score'}, not a number")
        if self.mode == "hash":
            if not isinstance(amount, int):
                raise SinkError(f"batch {batch}: record {i} has increment {amount!r}; HINCRBY takes integers")
            if not -2**63 <= amount < 2**63:
                raise SinkError(f"batch {batch}: record {i} has increment {amount}, outside Redis's 64-bit integers")
            return str(amount)
        if not math.isfinite(amount):
            raise SinkError(f"batch {batch}: record {i} has score {amount!r}; scores must be finite")
        return repr(float(amount))

    def _stream_fields(self, batch: int, i: int, record: Any) -> list[_Scalar]:
        if not isinstance(record, dict):
            try:
                record = {"value": json.dumps(record, allow_nan=False, separators=(",", ":"))}
            except (TypeError, ValueError) as exc:
                raise SinkError(f"batch {batch}: record {i} is not a dict and cannot be written as JSON: {exc}") from exc
        if not record:
            raise SinkError(f"batch {batch}: record {i} is an empty dict; a stream entry needs a field")
        if len(record) > MAX_STREAM_FIELDS:
            raise SinkError(f"batch {batch}: record {i} has {len(record)} fields, more than {MAX_STREAM_FIELDS}")
        fields: list[_Scalar] = []
        for field, value in record.items():
            fields += [_scalar(batch, i, "field name", field), _scalar(batch, i, f"value of field {field!r}", value)]
        return fields

    # Running the script, through NOSCRIPT and lost connections.

    def _run(self, batch: int, keys: list[_Scalar], arguments: list[_Scalar]) -> bool:
        def attempt() -> bool:
            if self._sha is None:
                self._sha = self._client.script_load(REDIS_SINK_SCRIPT)
            try:
                return bool(self._client.evalsha(self._sha, len(keys), *keys, *arguments))
            except self._redis.exceptions.NoScriptError:
                self._sha = None  # Redis restarted (or SCRIPT FLUSH): load it again, then run
                raise _TryAgain from None

        return bool(self._with_retries(f"batch {batch}", attempt))

    def _with_retries(self, what: str, attempt: Callable[[], Any]) -> Any:
        errors = self._redis.exceptions
        deadline = time.monotonic() + self.retry_timeout
        delay = 0.05
        while True:
            try:
                return attempt()
            except _TryAgain:
                continue
            except (errors.ConnectionError, errors.TimeoutError) as exc:  # also LOADING (BusyLoadingError)
                if time.monotonic() + delay > deadline:
                    raise SinkError(f"{what}: Redis at {self.url} could not be reached for {self.retry_timeout:g}s "
                                    f"({type(exc).__name__}: {exc}); the batch is written whole or not at all") from exc
                self.retries += 1
                time.sleep(delay)  # backoff between attempts, not a wait for a condition
                delay = min(2 * delay, 1.0)
            except errors.RedisError as exc:
                raise SinkError(f"{what}: Redis at {self.url} refused it ({exc}); nothing of it was written") from exc


class _TryAgain(Exception):
    """The script was not loaded: load it and try at once."""


def _scalar(batch: int, i: int, what: str, value: Any) -> _Scalar:
    """A key, field, member or value as Redis takes it: str and bytes as they are, numbers as text."""
    if isinstance(value, str | bytes):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return repr(value)
    raise SinkError(f"batch {batch}: record {i} has {what} {value!r}; Redis takes str, bytes or numbers")


def _import_redis() -> Any:
    try:
        import redis
    except ImportError as exc:
        raise ImportError(f"RedisSink needs the redis client library: {REDIS_INSTALL_HINT}") from exc
    return redis
