"""Broadcast values: shipped to each executor once and cached there.

`ctx.broadcast(obj)` pickles obj once and names it by content hash. A function that uses the
handle captures only that name; every plan of the context lists its broadcasts, so each executor
is sent the value once (like code), and `handle.value` loads it there once per process.
"""

from __future__ import annotations

from typing import Any

from squall.common import broadcast_store


class Broadcast:
    """A handle to a broadcast value (made by Context.broadcast): use `handle.value` inside task
    functions. Pickling the handle ships only the value's key, never the value."""

    def __init__(self, key: str, value: Any = None, local: bool = False) -> None:
        self.key = key
        self._value = value
        self._held = local  # the value is in _value: the driver's own, or loaded here once

    @property
    def value(self) -> Any:
        """The value: the driver's own object on the driver, loaded once per process on executors
        (and then kept in the handle: task functions read it once per record)."""
        if self._held:
            return self._value
        self._value = broadcast_store.value(self.key)
        self._held = True
        return self._value

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (_remote, (self.key,))

    def __repr__(self) -> str:
        return f"<Broadcast {self.key[:12]}>"


def _remote(key: str) -> Broadcast:
    return Broadcast(key)
