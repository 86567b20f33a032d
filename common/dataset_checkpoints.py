"""Dataset checkpoints (Dataset.checkpoint): each partition of a dataset written whole to the
checkpoint store by the task that computes it, and read back by the tasks of later jobs in place
of the lineage that made it.

Keys: datasets/<checkpoint id>/<partition, five digits>. An object is a header (magic, body
length, CRC-32 of the body) and the partition's records as one data block, so a reader tells a
missing or damaged partition from a whole one and fails its task saying which. The store's writes
are atomic and durable (temp file, fsync, rename), and a task writes before it returns: when the
job that checkpoints a dataset is done, every partition is in the store.

The store is the executors' (their checkpoint_dir, which the driver's settings need not name):
an executor installs it before it runs tasks, and so does its batch process. A process without
one (a driver, a bare test) gets a DatasetCheckpointError saying so.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Iterator
from typing import Any

from squall.common.checkpoint_store import CheckpointStore
from squall.common.serialization import SerializationError, dumps_block, loads_block

from squall.errors import SquallError

_HEADER = struct.Struct("<4sQI")  # magic, body length, CRC-32 of the body
_MAGIC = b"SQDS"

_store: CheckpointStore | None = None


class DatasetCheckpointError(SquallError):
    """A dataset checkpoint that cannot be written or read: missing, damaged, or no store here."""


def install(store: CheckpointStore | None) -> None:
    """The checkpoint store of this process's tasks (an executor's, or its batch process's)."""
    global _store
    _store = store


def partition_key(checkpoint_id: str, partition: int) -> str:
    return f"datasets/{checkpoint_id}/{partition:05d}"


def write_partition(checkpoint_id: str, partition: int, records: Iterable[Any]) -> int:
    """Write the partition's records under its key, durably; returns how many there were."""
    items = list(records)
    body = dumps_block(items)
    _installed().put(partition_key(checkpoint_id, partition), _HEADER.pack(_MAGIC, len(body), zlib.crc32(body)) + body)
    return len(items)


def read_partition(checkpoint_id: str, partition: int) -> Iterator[Any]:
    """The partition's records as written; DatasetCheckpointError if it is missing or damaged."""
    store = _installed()
    key = partition_key(checkpoint_id, partition)
    data = store.get(key)
    if data is None:
        raise DatasetCheckpointError(f"partition {partition} of dataset checkpoint {checkpoint_id} is missing: no {key} in "
                                     f"the checkpoint store {_where(store)} (was it deleted, or does this executor use "
                                     "another checkpoint_dir than the one that wrote it?)")
    view = memoryview(data)
    if len(view) < _HEADER.size:
        raise _damaged(store, key, f"{len(view)} bytes, shorter than its header")
    magic, length, crc = _HEADER.unpack_from(view)
    body = view[_HEADER.size:]
    if magic != _MAGIC:
        raise _damaged(store, key, "it is not a dataset checkpoint")
    if len(body) != length:
        raise _damaged(store, key, f"it holds {len(body)} bytes of records where {length} were written")
    if zlib.crc32(body) != crc:
        raise _damaged(store, key, "its records are not the bytes written (their checksum differs)")
    try:
        return iter(loads_block(body))
    except SerializationError as exc:
        raise _damaged(store, key, str(exc)) from exc


def _installed() -> CheckpointStore:
    if _store is None:
        raise DatasetCheckpointError("this process has no checkpoint store: dataset checkpoints are written and read by "
                                     "executors' tasks")
    return _store


def _where(store: CheckpointStore) -> str:
    return str(getattr(store, "root", store))


def _damaged(store: CheckpointStore, key: str, why: str) -> DatasetCheckpointError:
    return DatasetCheckpointError(f"dataset checkpoint {key} in the checkpoint store {_where(store)} is damaged: {why}")
