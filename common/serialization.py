"""How code and data are turned into bytes.

User code (functions, closures) travels cloudpickled; loading it happens only on executors and
in the driver. Data blocks (lists of records) are pickled with protocol 5 and compressed with
lz4 when they are large enough for it to pay; a one-byte prefix says which.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any

import cloudpickle
import lz4.block

_RAW = b"\x00"
_LZ4 = b"\x01"
COMPRESS_ABOVE = 1024


class SerializationError(ValueError):
    """A function or record that cannot be turned into bytes, or bytes that cannot be loaded."""


def dumps_function(fn: Callable[..., Any]) -> bytes:
    """Cloudpickle user code, with an error that names the function and the cause."""
    try:
        return cloudpickle.dumps(fn, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        name = getattr(fn, "__qualname__", None) or repr(fn)
        raise SerializationError(
            f"cannot serialize function {name!r}: {type(exc).__name__}: {exc}"
        ) from exc


def loads_function(data: bytes | memoryview) -> Callable[..., Any]:
    try:
        return pickle.loads(data)  # type: ignore[no-any-return]
    except Exception as exc:
        raise SerializationError(f"cannot load function: {type(exc).__name__}: {exc}") from exc


def dumps_block(records: list[Any]) -> bytes:
    """A list of records as one self-describing block."""
    try:
        raw = pickle.dumps(records, protocol=5)
    except Exception:
        try:
            raw = cloudpickle.dumps(records, protocol=5)
        except Exception as exc:
            raise SerializationError(
                f"cannot serialize records: {type(exc).__name__}: {exc}"
            ) from exc
    if len(raw) > COMPRESS_ABOVE:
        return _LZ4 + lz4.block.compress(raw, store_size=True)
    return _RAW + raw


def loads_block(data: bytes | memoryview) -> list[Any]:
    view = memoryview(data)
    if len(view) == 0:
        raise SerializationError("empty block")
    tag, body = bytes(view[:1]), view[1:]
    try:
        if tag == _LZ4:
            return pickle.loads(lz4.block.decompress(body))  # type: ignore[no-any-return]
        if tag == _RAW:
            return pickle.loads(body)  # type: ignore[no-any-return]
    except Exception as exc:
        raise SerializationError(f"corrupt block: {type(exc).__name__}: {exc}") from exc
    raise SerializationError(f"unknown block format {tag!r}")
