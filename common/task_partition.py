"""The partition the running task computes, for the operators that name what they write after it
(Dataset.save_as_text_files writes part-<partition>). Thread-local, like common/skips.py: a task
runs on a lane's thread or inline on the loop thread, and each knows its own."""

from __future__ import annotations

import threading

_local = threading.local()


def enter(partition: int) -> None:
    """Called as a task starts: what current() returns on this thread until the next task."""
    _local.partition = partition


def current() -> int:
    """The running task's partition; RuntimeError outside a task."""
    partition: int | None = getattr(_local, "partition", None)
    if partition is None:
        raise RuntimeError("no task is running on this thread")
    return partition
