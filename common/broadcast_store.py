"""Where an executor keeps the pickled broadcast values it was sent (by content key), so that a
Broadcast handle unpickled inside a task can find its value. Set once by the executor."""

from __future__ import annotations

import pickle
import threading
from collections.abc import Mapping
from typing import Any

_blobs: Mapping[str, bytes] = {}
_values: dict[str, Any] = {}
_lock = threading.Lock()


def install(blobs: Mapping[str, bytes]) -> None:
    """The executor's store of pickled code and values (shared, read-only here)."""
    global _blobs
    _blobs = blobs
    _values.clear()


def value(key: str) -> Any:
    """The broadcast value named `key`, loaded once per process."""
    try:
        return _values[key]
    except KeyError:
        pass
    with _lock:
        if key not in _values:
            blob = _blobs.get(key)
            if blob is None:
                raise LookupError(f"broadcast {key} was never sent to this executor")
            _values[key] = pickle.loads(blob)
        return _values[key]
