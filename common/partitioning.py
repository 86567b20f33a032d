"""A hash of keys that is the same in every process (Python's str hash is salted per process)."""

from __future__ import annotations

import pickle
import zlib
from typing import Any

_MASK = (1 << 63) - 1


def portable_hash(key: Any) -> int:
    """Stable across processes and machines for None, bools, numbers, str, bytes and tuples."""
    if key is None:
        return 0
    if isinstance(key, int | float):
        # Numeric hashing is not salted, and keys that compare equal (1, 1.0, True) hash equal.
        return hash(key) & _MASK
    if isinstance(key, str):
        return zlib.crc32(key.encode("utf-8", "surrogatepass"))
    if isinstance(key, bytes | bytearray | memoryview):
        return zlib.crc32(key)
    if isinstance(key, tuple):
        h = 0x345678
        for item in key:
            h = ((h ^ portable_hash(item)) * 1000003) & _MASK
        return h ^ len(key)
    if isinstance(key, frozenset):
        return sum(portable_hash(item) for item in key) & _MASK
    return zlib.crc32(pickle.dumps(key, protocol=4))


def partition_of(key: Any, partitions: int) -> int:
    return portable_hash(key) % partitions
