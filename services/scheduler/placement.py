"""Which executors a run's tasks go to first, by the run's priority (Neptune's placement): pure.

Latency tasks suspend batch tasks on their executor (Settings.preemption), so where a latency
run's tasks land decides how much batch work they interrupt, and where a batch run's land
decides how much latency work they slow down. Settings.lc_placement orders executors for
latency runs:

- load_balance (default): fewest batch tasks first (as the executor's last heartbeat told, plus
  the batch tasks placed there since), ties by executor id;
- random: a fresh random order for every group, from random.Random seeded with the policy's
  seed and the group's number (a test pins it by the seed);
- locality: executor id order, so partition p lands on executor p mod n, as it always did.

Batch runs always take executors with the fewest latency tasks first (ties by id): they avoid
executors busy with latency work while others are free.

The order is computed once per group (a sort of the executors), never per task. Keyed-state
partitions and replays are not placed by it: they stay where the keyed-state book says.
"""

from __future__ import annotations

import heapq
import random

from squall.common.protocol import Priority
from squall.services.scheduler.membership import ExecutorRecord


class PlacementPolicy:
    def __init__(self, policy: str, seed: str = "") -> None:
        self.policy = policy  # Settings.lc_placement
        self.seed = seed  # with a group's number, seeds its random order

    def order(self, executors: list[ExecutorRecord], priority: Priority, draw: int) -> list[ExecutorRecord]:
        """`executors` (given in id order) in the order a `priority` run fills them; `draw`
        numbers the group (or BSP round), for the random policy."""
        if priority == "latency" and self.policy == "random":
            shuffled = list(executors)
            random.Random(f"{self.seed}/{draw}").shuffle(shuffled)
            return shuffled
        if priority == "latency" and self.policy == "locality":
            return list(executors)
        return sorted(executors, key=lambda r: (self.load(r, priority), r.executor_id))

    def load(self, record: ExecutorRecord, priority: Priority) -> int:
        """The work on `record` that a `priority` run's tasks avoid (0: the policy avoids none)."""
        if priority == "batch":
            return record.latency_load
        return record.batch_load if self.policy == "load_balance" else 0


class FreeSlots:
    """Executors with free BSP slots, best first for each priority: the policy's load, then the
    fewest BSP tasks running (as BSP always balanced), then the policy's order. A heap per
    priority, built on first use; an entry whose executor's figures changed since it was pushed
    is pushed again with its new key when it comes up, so each take costs O(log executors)."""

    def __init__(self, executors: list[ExecutorRecord], policy: PlacementPolicy, draw: int) -> None:
        self._executors = executors  # in id order
        self._policy = policy
        self._draw = draw
        self._heaps: dict[Priority, list[tuple[int, int, int, ExecutorRecord]]] = {}
        self._ranks: dict[Priority, dict[str, int]] = {}

    def take(self, priority: Priority) -> ExecutorRecord | None:
        """The best executor with a free slot for a task of `priority` (None: every slot is taken).
        The caller fills the slot before the next take."""
        heap = self._heaps.get(priority)
        if heap is None:
            order = self._policy.order(self._executors, priority, self._draw)
            self._ranks[priority] = {r.executor_id: rank for rank, r in enumerate(order)}
            heap = self._heaps[priority] = [self._entry(r, priority) for r in order if r.free_slots > 0]
            heapq.heapify(heap)
        while heap:
            record = heap[0][3]
            if record.free_slots <= 0:
                heapq.heappop(heap)
                continue
            entry = self._entry(record, priority)
            if entry[:3] != heap[0][:3]:
                heapq.heapreplace(heap, entry)  # its figures moved since it was pushed
                continue
            return record
        return None

    def _entry(self, record: ExecutorRecord, priority: Priority) -> tuple[int, int, int, ExecutorRecord]:
        # The rank is unique per executor, so records themselves are never compared.
        return (self._policy.load(record, priority), len(record.running), self._ranks[priority][record.executor_id], record)
