"""Stream sources. Each is replayable: the records of any (partition, batch) can be made again,
which is what lets a lost batch be recomputed.

- `directory(path, partitions)`: lines appended to the files of a directory. Each file belongs
  to one partition (a stable hash of its name). When batch b of partition p runs, it reads every
  whole line added since batch b-1 and records the byte ranges it read in an offsets log beside
  the data (created exclusively: the first writer wins), so a replay reads exactly those bytes.

- `generator(fn, partitions)`: records are fn(partition, batch), any deterministic function.
- `rate(events_per_second, partitions, record=None)`: events at a fixed total rate, dealt round
  robin over the partitions (as Spark's rate source does). Event g of the stream happens at
  start + g / events_per_second and goes to partition g % partitions as that partition's event
  i = g // partitions; record(partition, i, event_time) makes it (default: the tuple
  (partition, i, event_time)). Batch b holds the events of its interval, so the partitions together
  emit exactly events_per_second events a second, split evenly (they differ by at most one event).
- `redis_stream(url, streams, partitions)`: entries of Redis Streams, one key per partition, each
  batch's range of entry ids claimed once in Redis (squall/redis_source.py).
"""

from __future__ import annotations

import functools
import json
import math
import os
import uuid
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from squall.stream_source import StreamSource as StreamSource  # re-exported: sources.StreamSource

Record = Callable[[int, int, float], Any]


@dataclass(frozen=True)
class GeneratorStreamSource(StreamSource):
    """Made by generator(): batch b of partition p is fn(p, b)."""

    fn: Callable[[int, int], Iterable[Any]]

    def run_of(self, start: float) -> str:
        return "generator"  # fn(p, b) is the same in every run

    def batch_function(self, start: float, batch_interval: float) -> Callable[[int, int], Iterable[Any]]:
        return self.fn


@dataclass(frozen=True)
class RateStreamSource(StreamSource):
    """Made by rate(): events_per_second over all partitions, dealt round robin."""

    events_per_second: float
    record: Record | None = None

    def batch_function(self, start: float, batch_interval: float) -> Callable[[int, int], Iterable[Any]]:
        return functools.partial(rate_batch, self.events_per_second, self.partitions, batch_interval, start, self.record)

    def batch_records(self, batch: int, batch_interval: float) -> int:
        return rate_batch_size(self.events_per_second, batch_interval, batch)


def rate_batch_size(rate: float, interval: float, batch: int) -> int:
    """How many events batch `batch` holds over all partitions: those of [b * interval, (b+1) * interval)."""
    return _rate_first_event(rate, interval, batch + 1) - _rate_first_event(rate, interval, batch)


def _rate_first_event(rate: float, interval: float, batch: int) -> int:
    # The one expression both neighbouring batches use for their shared boundary, so rounding
    # can neither drop an event between them nor hand it to both.
    return math.floor(rate * batch * interval)


def rate_batch(rate: float, partitions: int, interval: float, start: float, record: Record | None, partition: int,
               batch: int) -> list[Any]:
    """The events of one partition in one batch interval (executed on executors): the stream's
    events g of the interval with g % partitions == partition, as that partition's event g // partitions."""
    first = _rate_first_event(rate, interval, batch)
    last = _rate_first_event(rate, interval, batch + 1)
    own = first + (partition - first) % partitions  # the interval's first event dealt to this partition
    make = record or (lambda p, i, t: (p, i, t))
    return [make(partition, g // partitions, start + g / rate) for g in range(own, last, partitions)]


@dataclass(frozen=True)
class DirectoryStreamSource(StreamSource):
    """Made by directory(): lines appended to the files of `path`, read once per batch."""

    path: str
    name: str  # names the offsets log, so a stream can be resumed under the same name

    def run_of(self, start: float) -> str:
        return f"directory:{self.name}"  # batch b of a resumed stream is remade from the offsets log

    def batch_function(self, start: float, batch_interval: float) -> Callable[[int, int], Iterable[Any]]:
        return functools.partial(directory_batch, self.path, self.name, self.partitions)


OFFSETS_DIR = "_squall_offsets"


def directory_batch(path: str, name: str, partitions: int, partition: int, batch: int) -> list[str]:
    """The lines of one partition's files added during one batch (executed on executors)."""
    root = Path(path)
    ranges = _recorded_ranges(root, name, partition, batch)
    if ranges is None:
        previous = _recorded_ranges(root, name, partition, batch - 1) if batch > 0 else {}
        if previous is None:
            raise RuntimeError(f"directory source {name!r}: batch {batch - 1} of partition {partition} was never read")
        ranges = {}
        for file in sorted(root.iterdir()):
            if file.is_file() and not file.name.startswith((".", "_")) and zlib.crc32(file.name.encode()) % partitions == partition:
                begin = previous.get(file.name, [0, 0])[1]
                ranges[file.name] = [begin, _last_line_end(file, begin)]
        ranges = _record_ranges(root, name, partition, batch, ranges)
    lines: list[str] = []
    for file_name, (begin, end) in sorted(ranges.items()):
        if end > begin:
            with open(root / file_name, "rb") as f:
                f.seek(begin)
                lines.extend(f.read(end - begin).decode("utf-8").splitlines())
    return lines


def _offsets_file(root: Path, name: str, partition: int, batch: int) -> Path:
    return root / OFFSETS_DIR / name / str(partition) / f"{batch:012d}.json"


def _recorded_ranges(root: Path, name: str, partition: int, batch: int) -> dict[str, list[int]] | None:
    try:
        return json.loads(_offsets_file(root, name, partition, batch).read_text())  # type: ignore[no-any-return]
    except FileNotFoundError:
        return None


def _record_ranges(root: Path, name: str, partition: int, batch: int, ranges: dict[str, list[int]]) -> dict[str, list[int]]:
    """Record what a batch reads, unless another run of it recorded first: then read that."""
    target = _offsets_file(root, name, partition, batch)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(ranges))
    try:
        os.link(tmp, target)  # atomic, and fails if a record exists: the first writer wins
    except FileExistsError:
        return _recorded_ranges(root, name, partition, batch) or {}
    finally:
        tmp.unlink(missing_ok=True)
    return ranges


def _last_line_end(file: Path, begin: int) -> int:
    """The offset just past the last newline at or after `begin` (a partial last line waits)."""
    size = file.stat().st_size
    if size <= begin:
        return begin
    with open(file, "rb") as f:
        f.seek(begin)
        data = f.read(size - begin)
    newline = data.rfind(b"\n")
    return begin if newline < 0 else begin + newline + 1


def directory(path: str | os.PathLike[str], partitions: int = 4, name: str | None = None) -> StreamSource:
    """Lines appended to the files in `path` (an existing directory), by batch, in `partitions`
    partitions (default 4): a file belongs to one partition, and batch b of a partition holds the
    whole lines added to its files since batch b - 1 (a partial last line waits). `name` names
    the offsets log under path/_squall_offsets (default: a new random name); give the same name
    to resume where a stream left off. Files whose names start with "." or "_" are ignored.
    Raises ValueError for a missing directory or a partition count that is not positive."""
    _check_partitions(partitions)
    root = Path(path)
    if not root.is_dir():
        raise ValueError(f"directory() needs an existing directory, got {str(path)!r}")
    return DirectoryStreamSource(partitions=partitions, path=str(root.resolve()), name=name or uuid.uuid4().hex[:12])


def generator(fn: Callable[[int, int], Iterable[Any]], partitions: int = 4) -> StreamSource:
    """Records made by fn(partition, batch), in `partitions` partitions (default 4). fn runs on
    the executors and must be deterministic: a lost batch is made again by calling it again.
    Raises TypeError if fn is not callable, ValueError for a partition count that is not positive."""
    _check_partitions(partitions)
    if not callable(fn):
        raise TypeError(f"generator() needs fn(partition, batch), got {type(fn).__name__}")
    return GeneratorStreamSource(partitions=partitions, fn=fn)


def rate(events_per_second: float, partitions: int = 4, record: Record | None = None) -> StreamSource:
    """`events_per_second` events a second in total, dealt round robin over `partitions`
    partitions (default 4): rate(10_000, partitions=4) emits 10,000 events a second, 2,500 from
    each partition. Event g of the stream happens at start + g / events_per_second and is event
    g // partitions of partition g % partitions; `record(partition, index, event_time)` makes it
    (default: the tuple (partition, index, event_time)). Batch b holds the events of its
    interval, exactly floor(rate * (b + 1) * interval) - floor(rate * b * interval) of them.
    Raises ValueError for a rate or a partition count that is not positive."""
    _check_partitions(partitions)
    if not events_per_second > 0:
        raise ValueError(f"rate() needs a positive events_per_second, got {events_per_second!r}")
    return RateStreamSource(partitions=partitions, events_per_second=float(events_per_second), record=record)


def redis_stream(url: str, streams: str | list[str], partitions: int | None = None, *, name: str | None = None,
                 start: str = "now", max_records_per_batch: int = 10_000, field: str | None = None) -> StreamSource:
    """Entries of Redis Streams, one stream key per partition (see squall.redis_source.redis_stream,
    and docs/streams.md's Redis Streams section). Needs the redis extra: pip install 'squall[redis]'."""
    from squall.redis_source import redis_stream as make

    return make(url, streams, partitions, name=name, start=start, max_records_per_batch=max_records_per_batch, field=field)


def _check_partitions(partitions: int) -> None:
    if not isinstance(partitions, int) or partitions < 1:
        raise ValueError(f"a source needs a positive number of partitions, got {partitions!r}")
