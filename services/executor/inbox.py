"""Shuffle blocks that have arrived for this executor's reducers, pushed or fetched.

Blocks may arrive before the reducer's own launch message (a mapper elsewhere can be faster than
our copy of the group), so they are kept by (job, shuffle, reduce partition) until claimed.
Blocks of jobs already released are refused, so a late push cannot leak memory.
"""

from __future__ import annotations

from squall.common.recent_ids import RecentIds

InboxKey = tuple[str, int, int]  # (job_id, shuffle_id, reduce_partition)


class ShuffleInbox:
    def __init__(self) -> None:
        self._blocks: dict[InboxKey, dict[int, object]] = {}
        self._released = RecentIds()  # jobs over: blocks arriving late for them are refused

    def tracked(self) -> dict[str, int]:
        return {"blocks": len(self._blocks), "released": len(self._released)}

    def add(self, key: InboxKey, map_partition: int, block: object) -> bool:
        """Keep a block; False if its job was already released (the block is dropped)."""
        if key[0] in self._released:
            return False
        self._blocks.setdefault(key, {})[map_partition] = block
        return True

    def claim(self, key: InboxKey) -> dict[int, object]:
        """The blocks that arrived so far for a reducer (the same dict keeps filling up)."""
        return self._blocks.setdefault(key, {})

    def discard(self, key: InboxKey) -> None:
        self._blocks.pop(key, None)

    def release(self, job_ids: set[str]) -> None:
        self._blocks = {k: v for k, v in self._blocks.items() if k[0] not in job_ids}
        for job_id in sorted(job_ids):
            self._released.add(job_id)

    def clear(self) -> None:
        self._blocks.clear()
        self._released.clear()
