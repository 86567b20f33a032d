"""The partitions of persisted datasets this executor keeps: serialized blocks within a byte budget.

A task that computes a persisted partition (its PersistedInput was not read as a block) hands the
block back with its output; the executor keeps it here, by (dataset id, partition), and tells the
block directory (shuffle_meta). Later jobs' tasks read it from here, or from another executor
that asks for it (FetchPersisted).

The budget (settings.persist_memory) is exact: the blocks' bytes together never exceed it.
Keeping a block drops the least recently used ones until it fits (reading a block makes it the
most recently used); a block larger than the whole budget is not kept at all, and the first such
block of a dataset is reported, so the operator hears of it once, not at every batch. What is
dropped is returned, for the directory to hear of it too.

A dataset the scheduler said to forget (Dataset.unpersist) is fenced: a block of it that a task
was still computing is not kept when it comes back.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

from squall.common.protocol import PersistedBlock
from squall.common.recent_ids import RecentIds

BlockId = tuple[str, int]  # (dataset id, partition)
MadeBlock = tuple[str, int, int, bytes]  # a block a task computed: (dataset id, partition, partitions, block)


@dataclass
class Kept:
    """What keeping a task's blocks did: the blocks now held (to register), the blocks held before
    and dropped to make room (to unregister), and the datasets whose block was too large for the
    whole budget, the first time one of theirs is."""

    held: list[PersistedBlock] = field(default_factory=list)
    dropped: list[PersistedBlock] = field(default_factory=list)
    too_large: list[tuple[str, int]] = field(default_factory=list)  # (dataset id, the block's size)


class PersistedStore:
    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.bytes = 0
        self._blocks: OrderedDict[BlockId, tuple[int, bytes]] = OrderedDict()  # -> (partitions, block), oldest use first
        self._forgotten = RecentIds()  # datasets unpersisted: blocks of theirs are refused
        self._warned = RecentIds()  # datasets reported for a block larger than the budget

    def __len__(self) -> int:
        return len(self._blocks)

    def tracked(self) -> dict[str, int]:
        return {"persisted_blocks": len(self._blocks), "persisted_bytes": self.bytes, "persisted_forgotten": len(self._forgotten),
                "persisted_warned": len(self._warned)}

    def validate(self) -> None:
        assert self.bytes == sum(len(block) for _, block in self._blocks.values()), "the byte count is off"
        assert self.bytes <= self.budget, f"{self.bytes} bytes held, over the budget of {self.budget}"

    def get(self, dataset_id: str, partition: int) -> bytes | None:
        """The block, if held; it becomes the most recently used."""
        entry = self._blocks.get((dataset_id, partition))
        if entry is None:
            return None
        self._blocks.move_to_end((dataset_id, partition))
        return entry[1]

    def keep(self, made: Iterable[MadeBlock]) -> Kept:
        """Keep a task's blocks (in their order: a later one may push out an earlier one)."""
        kept = Kept()
        stored: list[BlockId] = []  # in this call
        unannounced: set[BlockId] = set()  # stored in this call and not held before it: the directory never heard of them
        dropped: dict[BlockId, PersistedBlock] = {}
        for dataset_id, partition, partitions, block in made:
            if dataset_id in self._forgotten:
                continue
            if len(block) > self.budget:
                if self.budget and dataset_id not in self._warned:
                    self._warned.add(dataset_id)
                    kept.too_large.append((dataset_id, len(block)))
                continue
            block_id = (dataset_id, partition)
            if block_id not in self._blocks and block_id not in dropped:
                unannounced.add(block_id)
            self._remove(block_id)  # an earlier copy (the same partition computed again)
            while self.bytes + len(block) > self.budget:
                oldest, (old_partitions, old) = self._blocks.popitem(last=False)
                self.bytes -= len(old)
                if oldest not in unannounced:
                    dropped[oldest] = PersistedBlock(oldest[0], oldest[1], old_partitions, len(old))
            self._blocks[block_id] = (partitions, block)
            self.bytes += len(block)
            stored.append(block_id)
        kept.held = [self._described(b) for b in dict.fromkeys(stored) if b in self._blocks]
        kept.dropped = [d for b, d in dropped.items() if b not in self._blocks]
        return kept

    def drop(self, dataset_ids: Iterable[str]) -> None:
        """These datasets were unpersisted: their blocks go, and blocks of theirs are refused from now on."""
        gone = set(dataset_ids)
        for dataset_id in gone:
            self._forgotten.add(dataset_id)
        for block_id in [b for b in self._blocks if b[0] in gone]:
            self._remove(block_id)

    def bytes_by_dataset(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for (dataset_id, _), (_, block) in self._blocks.items():
            out[dataset_id] = out.get(dataset_id, 0) + len(block)
        return out

    def held(self) -> list[PersistedBlock]:
        """Every block held (for a block directory that restarted empty)."""
        return [self._described(b) for b in self._blocks]

    def _described(self, block_id: BlockId) -> PersistedBlock:
        partitions, block = self._blocks[block_id]
        return PersistedBlock(block_id[0], block_id[1], partitions, len(block))

    def _remove(self, block_id: BlockId) -> None:
        entry = self._blocks.pop(block_id, None)
        if entry is not None:
            self.bytes -= len(entry[1])
