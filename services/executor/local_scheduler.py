"""An executor's local scheduler: which runnable task goes to the runner next.

Order: earlier micro-batch first; within a batch, tasks that read a shuffle (reducers) before
tasks that only feed one (mappers); then arrival order. With the barrier on, a mapper of batch b
waits while this executor still has an unfinished reducer of an earlier batch (Drizzle's option
to keep batches from overlapping).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field

from squall.common.plan import StageSpec
from squall.common.protocol import TaskDescriptor
from squall.services.executor.task_states import TaskState

TaskKey = tuple[str, int, int]


@dataclass(slots=True)
class LocalTask:
    task: TaskDescriptor
    spec: StageSpec
    group_id: int | None  # None for a BSP task
    inputs: dict[int, object] = field(default_factory=dict)  # map partition -> block
    state: TaskState | None = None  # None until its first transition (ExecutorState._transition)
    # Computed once: both are read several times for every task on the executor's hot path.
    key: TaskKey = field(init=False)
    is_reducer: bool = field(init=False)

    def __post_init__(self) -> None:
        self.key = self.task.key
        self.is_reducer = self.spec.reads_shuffle


class LocalScheduler:
    def __init__(self) -> None:
        self._heap: list[tuple[int, int, int, TaskKey]] = []
        self._runnable: dict[TaskKey, LocalTask] = {}
        self._seq = itertools.count()
        # batch -> unfinished reducers of that batch here (known as soon as they are launched)
        self._open_reducers: dict[int, set[TaskKey]] = {}

    def tracked(self) -> dict[str, int]:
        return {"heap": len(self._heap), "runnable": len(self._runnable), "open_reducers": len(self._open_reducers)}

    def __len__(self) -> int:
        return len(self._runnable)

    def queued(self) -> Iterable[LocalTask]:
        """The runnable tasks, in no particular order."""
        return self._runnable.values()

    def launched(self, local: LocalTask) -> None:
        """A task arrived (runnable or not): reducers count for the barrier from now on."""
        if local.is_reducer and local.group_id is not None:
            self._open_reducers.setdefault(local.task.batch, set()).add(local.key)

    def finished(self, local: LocalTask) -> None:
        """A task ran, failed or was cancelled."""
        reducers = self._open_reducers.get(local.task.batch)
        if reducers is not None:
            reducers.discard(local.key)
            if not reducers:
                del self._open_reducers[local.task.batch]

    def push(self, local: LocalTask) -> None:
        self._runnable[local.key] = local
        order = (local.task.batch, 0 if local.is_reducer else 1, next(self._seq), local.key)
        heapq.heappush(self._heap, order)

    def remove_jobs(self, job_ids: set[str]) -> list[LocalTask]:
        gone = [t for k, t in self._runnable.items() if k[0] in job_ids]
        for t in gone:
            del self._runnable[t.key]
            self.finished(t)
        return gone

    def pop(self, barrier: bool) -> LocalTask | None:
        """The next task to run, or None (nothing runnable, or all held by the barrier)."""
        held: list[tuple[int, int, int, TaskKey]] = []
        chosen = None
        while self._heap:
            entry = heapq.heappop(self._heap)
            local = self._runnable.get(entry[3])
            if local is None:
                continue  # removed meanwhile
            if barrier and self._held(local):
                held.append(entry)
                continue
            del self._runnable[entry[3]]
            chosen = local
            break
        for entry in held:
            heapq.heappush(self._heap, entry)
        return chosen

    def _held(self, local: LocalTask) -> bool:
        if local.is_reducer or local.group_id is None:
            return False
        return any(batch < local.task.batch for batch in self._open_reducers)

    def clear(self) -> None:
        self._heap.clear()
        self._runnable.clear()
        self._open_reducers.clear()
