"""Fencing by id: the ids of jobs that are over, remembered so that their late messages are dropped.

A late message (a push from a mapper of a cancelled or superseded attempt, a registration that
overtook nothing) arrives within moments of its job's end, so a fence need only remember the most
recent ids, not every id for the life of a stream: FENCE_MEMORY of them, which at ten jobs a
second is the last hundred seconds, and fills within the first minutes of a stream.
"""

from __future__ import annotations

from collections import deque

FENCE_MEMORY = 1024


class RecentIds:
    def __init__(self, limit: int = FENCE_MEMORY) -> None:
        self.limit = limit
        self._order: deque[str] = deque()
        self._ids: set[str] = set()

    def add(self, item: str) -> None:
        """Remember `item`; past the limit the oldest is forgotten. Adding it again takes no room."""
        if item in self._ids:
            return
        if len(self._order) >= self.limit:
            self._ids.discard(self._order.popleft())
        self._order.append(item)
        self._ids.add(item)

    def __contains__(self, item: object) -> bool:
        return item in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def clear(self) -> None:
        self._order.clear()
        self._ids.clear()
