"""Drizzle groups on this executor: which of a group's tasks here are not over yet, and the one
GroupDone report, sent when the last of them is (with the time spent running them, the records
their user functions skipped, and the result partitions they sent straight to the driver)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from squall.common.protocol import GroupDone
from squall.services.executor.task_states import TaskKey


@dataclass
class _Group:
    outstanding: set[TaskKey]
    tasks: int
    busy: float = 0.0
    skipped: int = 0
    results: dict[str, list[int]] = field(default_factory=dict)  # job -> result partitions sent to the driver


class GroupLedger:
    def __init__(self, executor_id: str) -> None:
        self.executor_id = executor_id
        self._groups: dict[int, _Group] = {}

    def __len__(self) -> int:
        return len(self._groups)

    def outstanding(self) -> Iterator[tuple[int, set[TaskKey]]]:
        return ((group_id, group.outstanding) for group_id, group in self._groups.items())

    def open(self, group_id: int, keys: set[TaskKey]) -> GroupDone | None:
        """A group's share arrived; with no task here, it is over at once."""
        self._groups[group_id] = _Group(outstanding=keys, tasks=len(keys))
        return None if keys else self._close(group_id)

    def ran(self, group_id: int | None, seconds: float, skipped: int) -> None:
        group = self._groups.get(group_id) if group_id is not None else None
        if group is not None:
            group.busy += seconds
            group.skipped += skipped

    def sent_result(self, group_id: int | None, job_id: str, partition: int) -> None:
        """A task of the group sent its result partition straight to the driver: the report says so."""
        group = self._groups.get(group_id) if group_id is not None else None
        if group is not None:
            group.results.setdefault(job_id, []).append(partition)

    def task_over(self, group_id: int | None, key: TaskKey) -> GroupDone | None:
        """The report, if this was the group's last task here."""
        if group_id is None or group_id not in self._groups:
            return None
        outstanding = self._groups[group_id].outstanding
        outstanding.discard(key)
        return None if outstanding else self._close(group_id)

    def _close(self, group_id: int) -> GroupDone:
        group = self._groups.pop(group_id)
        return GroupDone(group_id=group_id, executor_id=self.executor_id, tasks=group.tasks, busy=group.busy, skipped=group.skipped,
                         results=group.results)
