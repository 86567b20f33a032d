"""An executor's local scheduler: which runnable task goes to the runner next.

Order: earlier micro-batch first; within a batch, tasks that read a shuffle (reducers) before
tasks that only feed one (mappers); then arrival order. With the barrier on, a mapper of batch b
waits while this executor still has an unfinished reducer of an earlier batch (Drizzle's option
to keep batches from overlapping).

Latency and batch tasks wait apart, in that order each (`pop` takes a lane): the executor runs
one of each at a time, and which lane may start is the core's decision (task_flow.py).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field

from squall.common.plan import StageSpec
from squall.common.protocol import TaskDescriptor
from squall.common.stage_inputs import PersistedRead, ShuffleInput, task_persisted, task_shuffles
from squall.services.executor.inbox import InboxKey
from squall.services.executor.task_states import TaskState

TaskKey = tuple[str, int, int]
LATENCY, BATCH = 0, 1  # lanes


@dataclass(slots=True)
class LocalTask:
    task: TaskDescriptor
    spec: StageSpec
    group_id: int | None  # None for a BSP task
    inputs: dict[int, dict[int, object]] = field(default_factory=dict)  # shuffle id -> map partition -> block
    blocks: dict[str, object] = field(default_factory=dict)  # persisted dataset id -> the block of it read, once all are in
    state: TaskState | None = None  # None until its first transition (ExecutorState._transition)
    killed: bool = False  # preempted by "kill" once: its run from the start is not killed again
    # Computed once: they are read several times for every task on the executor's hot path.
    key: TaskKey = field(init=False)
    reads: list[ShuffleInput] = field(init=False)  # the shuffles it reads, with its reduce partition of each
    blocks_read: list[PersistedRead] = field(init=False)  # the persisted partitions it reads as blocks (TaskDescriptor.persisted)
    unplaced: list[PersistedRead] = field(init=False)  # persisted partitions it can neither read nor compute (no lineage)
    inbox_keys: list[InboxKey] = field(init=False)  # (job, shuffle, reduce partition) of each
    is_reducer: bool = field(init=False)
    lane: int = field(init=False)  # LATENCY or BATCH, by the task's priority

    def __post_init__(self) -> None:
        self.key = self.task.key
        # A union's task may read a source while the stage's other tasks read shuffles; a task
        # that reads a persisted partition as a block reads none of the shuffles below it.
        held = self.task.persisted.keys()
        self.reads = task_shuffles(self.spec.input, self.task.partition, held)
        persisted = task_persisted(self.spec.input, self.task.partition, held)
        self.blocks_read = [r for r in persisted if r[0].dataset_id in held]
        self.unplaced = [r for r in persisted if r[0].dataset_id not in held and r[0].fallback is None]
        self.inbox_keys = [(self.task.job_id, read.shuffle_id, r) for read, r in self.reads]
        self.is_reducer = bool(self.reads)
        self.lane = BATCH if self.task.priority == "batch" else LATENCY


class LocalScheduler:
    def __init__(self) -> None:
        self._heaps: tuple[list[tuple[int, int, int, TaskKey]], ...] = ([], [])  # by lane
        self._runnable: tuple[dict[TaskKey, LocalTask], ...] = ({}, {})  # by lane
        self._seq = itertools.count()
        # batch -> unfinished reducers of that batch here (known as soon as they are launched)
        self._open_reducers: dict[int, set[TaskKey]] = {}

    def tracked(self) -> dict[str, int]:
        return {"heap": len(self._heaps[LATENCY]), "runnable": len(self._runnable[LATENCY]), "open_reducers": len(self._open_reducers),
                "batch_heap": len(self._heaps[BATCH]), "batch_runnable": len(self._runnable[BATCH])}

    def __len__(self) -> int:
        return len(self._runnable[LATENCY]) + len(self._runnable[BATCH])

    def queued(self) -> Iterable[LocalTask]:
        """The runnable tasks, in no particular order."""
        return [*self._runnable[LATENCY].values(), *self._runnable[BATCH].values()]

    def has_runnable(self, lane: int) -> bool:
        """Whether the lane has a task waiting to run (one the barrier holds counts too)."""
        return bool(self._runnable[lane])

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
        lane = local.lane
        self._runnable[lane][local.key] = local
        order = (local.task.batch, 0 if local.is_reducer else 1, next(self._seq), local.key)
        heapq.heappush(self._heaps[lane], order)

    def remove_jobs(self, job_ids: set[str]) -> list[LocalTask]:
        gone = [t for runnable in self._runnable for k, t in runnable.items() if k[0] in job_ids]
        for t in gone:
            del self._runnable[t.lane][t.key]
            self.finished(t)
        return gone

    def pop(self, barrier: bool, lane: int = LATENCY) -> LocalTask | None:
        """The lane's next task to run, or None (nothing runnable, or all held by the barrier)."""
        heap, runnable = self._heaps[lane], self._runnable[lane]
        held: list[tuple[int, int, int, TaskKey]] = []
        chosen = None
        while heap:
            entry = heapq.heappop(heap)
            local = runnable.get(entry[3])
            if local is None:
                continue  # removed meanwhile
            if barrier and self._held(local):
                held.append(entry)
                continue
            del runnable[entry[3]]
            chosen = local
            break
        for entry in held:
            heapq.heappush(heap, entry)
        return chosen

    def _held(self, local: LocalTask) -> bool:
        if local.is_reducer or local.group_id is None:
            return False
        return any(batch < local.task.batch for batch in self._open_reducers)

    def clear(self) -> None:
        for lane in (LATENCY, BATCH):
            self._heaps[lane].clear()
            self._runnable[lane].clear()
        self._open_reducers.clear()
