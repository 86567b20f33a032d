"""How many records the running task skipped because a user function raised on them (with the
bad_records="skip" setting). Thread-local: a task runs on the runner thread or inline on the
loop thread, and each counts its own."""

from __future__ import annotations

import threading

_local = threading.local()


def reset() -> None:
    _local.count = 0


def count() -> int:
    return getattr(_local, "count", 0)


def record_skipped() -> None:
    _local.count = count() + 1
