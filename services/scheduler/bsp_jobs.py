"""Bookkeeping for one job in BSP mode (bsp_mode.py): which stages are done, which tasks are where."""

from __future__ import annotations

from dataclasses import dataclass, field

from squall.common.plan import JobPlan
from squall.common.stage_inputs import PersistedRead

TaskKey = tuple[str, int, int]  # (job_id, stage_id, partition)


@dataclass
class StageProgress:
    remaining: set[int]
    launched: bool = False

    @property
    def done(self) -> bool:
        return not self.remaining


@dataclass
class BspJob:
    job_id: str
    driver: bytes
    plan: JobPlan
    started: float
    batch: int = 0
    not_before: float = 0.0  # wall clock: its source tasks wait until then (streams)
    progress: list[StageProgress] = field(default_factory=list)
    # Where each task runs or ran: a finished map task's output lives on that executor.
    placed: dict[tuple[int, int], str] = field(default_factory=dict)
    # Executors that ran any task of this job (they hold its blocks until it is released).
    touched: set[str] = field(default_factory=set)
    # Result partition -> its block, sent to the driver with JobDone.
    results: dict[int, object] = field(default_factory=dict)
    # Content hash of each stage's spec: the name executors cache its code under.
    stage_keys: list[str] = field(default_factory=list)
    # Persisted blocks its tasks read: (stage, partition) -> the blocks, and who holds them.
    reads: dict[tuple[int, int], list[PersistedRead]] = field(default_factory=dict)
    blocks: dict[str, dict[int, list[str]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.progress:
            self.progress = [StageProgress(remaining=set(range(s.spec.partitions))) for s in self.plan.stages]
        if not self.stage_keys:
            self.stage_keys = [s.spec.key() for s in self.plan.stages]

    @property
    def task_count(self) -> int:
        return sum(s.spec.partitions for s in self.plan.stages)

    def runnable_stages(self) -> list[int]:
        """Stages not yet launched whose parents have all finished."""
        return [
            s.stage_id
            for s in self.plan.stages
            if not self.progress[s.stage_id].launched
            and all(self.progress[p].done for p in s.parents)
        ]

    def is_current(self, executor_id: str, stage_id: int, partition: int) -> bool:
        """Whether a report about this task comes from where the task was placed."""
        return stage_id < len(self.plan.stages) and self.placed.get((stage_id, partition)) == executor_id

    def is_result_stage(self, stage_id: int) -> bool:
        return stage_id == len(self.plan.stages) - 1

    @property
    def finished(self) -> bool:
        return self.progress[-1].done

    def depends_on(self, executor_id: str) -> tuple[int, int] | None:
        """A task placed on `executor_id` whose loss breaks this job, if any.

        Unfinished tasks there are lost; finished map outputs there are lost while a stage that
        reads them has not finished yet.
        """
        for (stage_id, partition), where in self.placed.items():
            if where != executor_id:
                continue
            progress = self.progress[stage_id]
            if partition in progress.remaining:
                return stage_id, partition
            readers = [s for s in self.plan.stages if stage_id in s.parents]
            if any(not self.progress[r.stage_id].done for r in readers):
                return stage_id, partition
        return None
