"""Which executors hold which partitions of persisted datasets: the cluster's block directory.

Executors report the blocks they keep (RegisterPersisted) and those they drop to stay within their
budget (DroppedPersisted); the scheduler asks where a job's persisted datasets are held
(LookupPersisted) and drops datasets a driver unpersisted (ForgetPersisted). A lost executor's
blocks go with it (ForgetExecutor). Pure tables, no messages: ShuffleMetaState answers.

A dataset once forgotten is fenced: a registration that was on its way when the scheduler said so
(a task that kept a block just before its executor dropped the dataset) does not bring it back.
Dataset ids are fresh at every persist(), so a forgotten id never names a live dataset again.
"""

from __future__ import annotations

from collections.abc import Iterable

from squall.common.protocol import PersistedBlock
from squall.common.recent_ids import RecentIds

BlockId = tuple[str, int]  # (dataset id, partition)


class BlockDirectory:
    def __init__(self) -> None:
        self.holders: dict[str, dict[int, set[str]]] = {}  # dataset -> partition -> executors holding it
        self.partitions: dict[str, int] = {}  # dataset -> its partition count, for each dataset in `holders`
        self.by_executor: dict[str, set[BlockId]] = {}  # executor -> the blocks it holds (to forget it at once)
        self.forgotten = RecentIds()  # datasets dropped: late registrations of theirs are ignored

    def tracked(self) -> dict[str, int]:
        return {
            "persisted_datasets": len(self.holders),
            "persisted_blocks": sum(len(parts) for parts in self.holders.values()),
            "persisted_executors": len(self.by_executor),
            "persisted_forgotten": len(self.forgotten),
        }

    def validate(self) -> None:
        """Check the tables agree (AssertionError naming what does not)."""
        assert self.holders.keys() == self.partitions.keys(), "datasets with holders and with partition counts differ"
        held: dict[str, set[BlockId]] = {}
        for dataset_id, parts in self.holders.items():
            assert dataset_id not in self.forgotten, f"blocks of dataset {dataset_id}, which was forgotten, are kept"
            assert parts, f"dataset {dataset_id} is listed with no partition held"
            for partition, executors in parts.items():
                assert executors, f"partition {partition} of dataset {dataset_id} is listed with no holder"
                assert 0 <= partition < self.partitions[dataset_id], f"partition {partition} of dataset {dataset_id} is out of range"
                for executor_id in executors:
                    held.setdefault(executor_id, set()).add((dataset_id, partition))
        assert held == self.by_executor, "the blocks by executor and by dataset differ"

    def register(self, executor_id: str, blocks: Iterable[PersistedBlock]) -> None:
        """The executor holds these blocks now. A block whose partition count disagrees with the
        dataset's known one is ignored (a dataset's partitions are fixed when it is planned)."""
        for block in blocks:
            dataset_id, partition = block.dataset_id, block.partition
            if dataset_id in self.forgotten or partition >= block.partitions:
                continue
            if self.partitions.setdefault(dataset_id, block.partitions) != block.partitions:
                continue
            self.holders.setdefault(dataset_id, {}).setdefault(partition, set()).add(executor_id)
            self.by_executor.setdefault(executor_id, set()).add((dataset_id, partition))

    def drop(self, executor_id: str, blocks: Iterable[BlockId]) -> None:
        """The executor no longer holds these blocks."""
        mine = self.by_executor.get(executor_id)
        if mine is None:
            return
        for dataset_id, partition in blocks:
            if (dataset_id, partition) not in mine:
                continue
            mine.discard((dataset_id, partition))
            self._unlist(executor_id, dataset_id, partition)
        if not mine:
            del self.by_executor[executor_id]

    def forget(self, dataset_ids: Iterable[str]) -> None:
        """These datasets were unpersisted: every block of theirs goes, and stays gone."""
        for dataset_id in dataset_ids:
            self.forgotten.add(dataset_id)
            parts = self.holders.pop(dataset_id, None)
            self.partitions.pop(dataset_id, None)
            for partition, executors in (parts or {}).items():
                for executor_id in executors:
                    mine = self.by_executor[executor_id]
                    mine.discard((dataset_id, partition))
                    if not mine:
                        del self.by_executor[executor_id]

    def forget_executor(self, executor_id: str) -> None:
        """The executor is lost, and its blocks with it."""
        for dataset_id, partition in self.by_executor.pop(executor_id, set()):
            self._unlist(executor_id, dataset_id, partition)

    def locations(self, dataset_ids: Iterable[str]) -> tuple[dict[str, dict[int, list[str]]], dict[str, int]]:
        """For each of these datasets someone holds: partition -> its holders (sorted), and the
        dataset's partition count. Datasets and partitions no one holds are left out."""
        holders: dict[str, dict[int, list[str]]] = {}
        partitions: dict[str, int] = {}
        for dataset_id in dataset_ids:
            parts = self.holders.get(dataset_id)
            if parts:
                holders[dataset_id] = {p: sorted(executors) for p, executors in sorted(parts.items())}
                partitions[dataset_id] = self.partitions[dataset_id]
        return holders, partitions

    def _unlist(self, executor_id: str, dataset_id: str, partition: int) -> None:
        """Take the executor off the partition's holders (and the dataset off, when none is left)."""
        parts = self.holders[dataset_id]
        executors = parts[partition]
        executors.discard(executor_id)
        if not executors:
            del parts[partition]
            if not parts:
                del self.holders[dataset_id]
                del self.partitions[dataset_id]
