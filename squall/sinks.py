"""Stream sinks: where each micro-batch's result goes.

A sink is a callable `sink(batch, records)`, so `stream.foreach_batch(sink)` runs it on the driver
once per completed batch, in batch order. Every sink also has `close()` and works as a context
manager.

- `DirectorySink(path, format)`: one file per batch, committed atomically. Writing a batch again
  with the same records changes nothing, so a replayed batch is still written exactly once.
- `PubSink(address, topic)`: publishes each batch on a ZeroMQ PUB socket, best-effort.
  `subscribe(address, topic)` is the matching reader.
"""

from __future__ import annotations

import hashlib
import json
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
