"""A run's results as executors send them straight to the driver: pure, one per DriverRun.

Each job's result partitions arrive one message each, from whichever executors ran them, in any
order. The driver takes exactly one block per result partition from one attempt of the job:

- An attempt is whole when it has every partition (each ResultPartition says how many the job
  has). Its blocks are handed over in partition order, once.
- A replay (after an executor was lost) runs under a later attempt. The first block of a later
  attempt drops what earlier attempts had delivered, and their blocks are ignored from then on:
  a result is never made of two attempts' partitions. A replay's blocks that come after an
  earlier attempt was whole find their job settled (the caller asks `settled` first).
- A duplicate, or a partition the job does not have, changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from squall.common.protocol import ResultPartition


@dataclass
class _Attempt:
    number: int
    partitions: int
    blocks: dict[int, object] = field(default_factory=dict)


@dataclass(frozen=True)
class WholeResult:
    """A job's result: its blocks in partition order, and when the last of them arrived."""

    blocks: list[object]
    finished_at: float


class ResultAssembly:
    def __init__(self) -> None:
        self._attempts: dict[int, _Attempt] = {}  # job position -> the latest attempt heard of, until whole

    def __len__(self) -> int:
        return len(self._attempts)

    def take(self, position: int, result: ResultPartition, block: object, arrived: float) -> WholeResult | None:
        """Add the block of job `position`'s result partition; its whole result if this completes it."""
        if result.partition >= result.partitions:
            return None  # a partition the job does not have
        current = self._attempts.get(position)
        if current is not None and result.attempt < current.number:
            return None  # a superseded attempt
        if current is None or result.attempt > current.number:
            current = self._attempts[position] = _Attempt(result.attempt, result.partitions)
        if result.partition >= current.partitions or result.partition in current.blocks:
            return None  # a duplicate
        current.blocks[result.partition] = block
        if len(current.blocks) < current.partitions:
            return None
        del self._attempts[position]
        return WholeResult([current.blocks[p] for p in range(current.partitions)], arrived)

    def pending(self, position: int) -> int:
        """How many partitions of the job's latest attempt have arrived (its result not yet whole)."""
        current = self._attempts.get(position)
        return len(current.blocks) if current is not None else 0

    def forget(self, position: int) -> None:
        """The job was settled otherwise (it failed, or the run ended): drop what arrived of it."""
        self._attempts.pop(position, None)
