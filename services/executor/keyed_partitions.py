"""The stateful partitions an executor owns: the order their batches apply in, and the outputs kept
so that no batch is ever applied twice. Pure bookkeeping for ExecutorState (the state tables
themselves are the runner's: the core tells it which to restore or drop).

A partition applies batch b only after b - 1 (`next_batch`); a task whose turn has not come is
parked until its predecessor is over. A task for a batch the partition already applied (a replay
after another executor died) takes the output kept from the first run instead of running: outputs
are kept until their job is released as over (not when it is superseded by a replay). A partition
taken over from a dead owner starts at its checkpoint.

A partition handed over to another executor (the scheduler rebalances, or this one leaves) is
checkpointed as it is after its last batch here (`hand_over`), then dropped when the scheduler
says the new owner has it.
"""

from __future__ import annotations

from squall.services.executor.local_scheduler import LocalTask
from squall.services.executor.tasks import TaskOutput

StateKey = tuple[str, int]  # (state id, partition)


class KeyedPartitions:
    def __init__(self) -> None:
        self.next_batch: dict[StateKey, int] = {}
        self._parked: dict[StateKey, dict[int, LocalTask]] = {}
        self._kept: dict[StateKey, dict[int, tuple[str, TaskOutput]]] = {}  # batch -> (attempt id, output)
        self._handing_over: dict[StateKey, int] = {}  # partition -> its last batch here, to checkpoint once applied

    def tracked(self) -> dict[str, int]:
        return {
            "next_batch": len(self.next_batch),
            "parked": sum(map(len, self._parked.values())),
            "kept": sum(map(len, self._kept.values())),
            "handing_over": len(self._handing_over),
        }

    def launched(self, key: StateKey, batch: int) -> None:
        """A task arrived: a partition new here starts at its first task's batch (launches come in order)."""
        self.next_batch.setdefault(key, batch)

    def applied(self, key: StateKey, batch: int) -> bool:
        return batch < self.next_batch.get(key, batch)

    def park_unless_due(self, key: StateKey, local: LocalTask) -> bool:
        """Park the task if an earlier batch has yet to apply; True if parked."""
        if self.next_batch.get(key, local.task.batch) == local.task.batch:
            return False
        self._parked.setdefault(key, {})[local.task.batch] = local
        return True

    def advance(self, key: StateKey, batch: int) -> LocalTask | None:
        """Batch `batch` is over: the next may apply. Returns the next batch's parked task, if any."""
        if self.next_batch.get(key) != batch:
            return None
        self.next_batch[key] = batch + 1
        return self._parked.get(key, {}).pop(batch + 1, None)

    def keep(self, key: StateKey, batch: int, job_id: str, output: TaskOutput) -> None:
        self._kept.setdefault(key, {})[batch] = (job_id, output)

    def take(self, key: StateKey, batch: int, job_id: str) -> TaskOutput | None:
        """The output kept for a batch already applied, now owned by the replay `job_id`."""
        kept = self._kept.get(key, {}).get(batch)
        if kept is None:
            return None
        self._kept[key][batch] = (job_id, kept[1])
        return kept[1]

    def release(self, job_ids: set[str]) -> None:
        """These jobs are over: the outputs they hold are no longer needed."""
        for kept in self._kept.values():
            for batch in [b for b, (job_id, _) in kept.items() if job_id in job_ids]:
                del kept[batch]

    def hand_over(self, key: StateKey, batch: int) -> bool | None:
        """The partition leaves after `batch`: True to checkpoint it now (applied already), False
        when it will be once applied (`handing_over` says when), None if it cannot be: unknown
        here, or past that batch."""
        next_batch = self.next_batch.get(key)
        if next_batch is None or next_batch > batch + 1:
            return None
        if next_batch == batch + 1:
            return True
        self._handing_over[key] = batch
        return False

    def handing_over(self, key: StateKey, batch: int) -> bool:
        """The partition applied `batch`: whether that is its last here, to checkpoint."""
        if self._handing_over.get(key) != batch:
            return False
        del self._handing_over[key]
        return True

    def restore(self, key: StateKey, batch: int) -> None:
        """Take the partition over as it was after `batch` (its checkpoint, or empty)."""
        self._kept.pop(key, None)
        self._parked.pop(key, None)
        self.next_batch[key] = batch + 1

    def drop(self, key: StateKey) -> None:
        self._handing_over.pop(key, None)
        self.next_batch.pop(key, None)
        self._parked.pop(key, None)
        self._kept.pop(key, None)

    def forget(self, state_ids: set[str]) -> None:
        self.next_batch = {k: v for k, v in self.next_batch.items() if k[0] not in state_ids}
        self._parked = {k: v for k, v in self._parked.items() if k[0] not in state_ids}
        self._kept = {k: v for k, v in self._kept.items() if k[0] not in state_ids}
        self._handing_over = {k: v for k, v in self._handing_over.items() if k[0] not in state_ids}
