"""Source tasks held until their batch's time (a stream batch whose interval is not over yet).

The server is asked to wake the core (WakeAt) at the earliest release time; it is asked again only
for an earlier one, or once that wake-up came.
"""

from __future__ import annotations

import heapq
import itertools

from squall.services.executor.instructions import WakeAt
from squall.services.executor.local_scheduler import LocalTask


class HeldTasks:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, LocalTask]] = []  # (monotonic release time, seq, task)
        self._seq = itertools.count()
        self._wake_at: float | None = None  # the wake-up asked for last

    def __len__(self) -> int:
        return len(self._heap)

    def keys(self) -> set[tuple[str, int, int]]:
        return {entry[2].key for entry in self._heap}

    def hold(self, local: LocalTask, release_at: float) -> None:
        heapq.heappush(self._heap, (release_at, next(self._seq), local))

    def next_release(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def due(self, now: float) -> list[LocalTask]:
        out = []
        while self._heap and self._heap[0][0] <= now:
            out.append(heapq.heappop(self._heap)[2])
        return out

    def woken(self) -> None:
        self._wake_at = None

    def wake_up(self) -> WakeAt | None:
        """A WakeAt, if the earliest release is earlier than the wake-up asked for last."""
        if not self._heap or (self._wake_at is not None and self._wake_at <= self._heap[0][0]):
            return None
        self._wake_at = self._heap[0][0]
        return WakeAt(self._wake_at)

    def drop_jobs(self, jobs: set[str]) -> None:
        if any(local.key[0] in jobs for _, _, local in self._heap):
            self._heap = [held for held in self._heap if held[2].key[0] not in jobs]
            heapq.heapify(self._heap)
