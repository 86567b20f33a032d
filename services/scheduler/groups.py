"""Drizzle group scheduling, pure: place every task of a group of micro-batches at once.

Reduce stages are placed before the stages that feed them, so every map task is launched
knowing the block address of each reduce partition it pushes to. Map partition p goes to
executor p mod n. Stages that read a shuffle are placed by one of two policies:

- spread: partition p on executor p mod n. A batch's reducers run in parallel; every mapper
  sends one message to every executor holding its reducers.
- per_batch: all of batch b's reducers on executor b mod n. Across a group of at least n
  batches every executor still gets its share, but each mapper sends a single message per
  batch, which on small micro-batches is most of the cost.

"auto" (the default) takes per_batch when the group has at least as many batches as there are
executors, and spread otherwise (a lone job keeps its reducers' parallelism).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from common.plan import JobPlan, Stage
from common.protocol import GroupStats, TaskDescriptor
from services.scheduler.membership import ExecutorRecord


@dataclass
class PlannedJob:
    """One micro-batch of a run, planned; its state while its group runs."""

    job_id: str
    batch: int
    plan: JobPlan
    stage_keys: list[str]
    not_before: float = 0.0  # wall clock: its source tasks wait until then (streams)
    results: dict[int, object] = field(default_factory=dict)  # result partition -> its block, until done
    placed: dict[str, set[int]] = field(default_factory=dict)  # executor id -> stages placed there
    started: float = 0.0
    done: bool = False
    failed: bool = False

    @property
    def results_remaining(self) -> int:
        return self.plan.result_stage.spec.partitions - len(self.results)

    @property
    def over(self) -> bool:
        return self.done or self.failed

    @property
    def executors(self) -> set[str]:
        return set(self.placed)


@dataclass
class GroupRun:
    group_id: int
    run_id: str
    jobs: list[PlannedJob]
    waiting: set[str]  # executors whose GroupDone has not arrived
    started: float
    launch_bytes: int = 0
    code_bytes: int = 0
    skipped: int = 0

    def stats(self, now: float, executors: int) -> GroupStats:
        return GroupStats(
            group_id=self.group_id,
            jobs=len(self.jobs),
            executors=executors,
            launch_bytes=self.launch_bytes,
            code_bytes=self.code_bytes,
            duration=max(0.0, now - self.started),
            skipped=self.skipped,
        )


ReducePlacement = Literal["auto", "spread", "per_batch"]


def place_group(
    jobs: list[PlannedJob], executors: list[ExecutorRecord], reduce_placement: ReducePlacement = "spread"
) -> dict[str, list[TaskDescriptor]]:
    """Each executor's share of the group: tasks ordered by batch, reducers before their mappers."""
    if not executors:
        raise ValueError("no executors to place a group on")
    n = len(executors)
    per_batch = reduce_placement == "per_batch" or (reduce_placement == "auto" and len(jobs) >= n)
    share: dict[str, list[TaskDescriptor]] = {e.executor_id: [] for e in executors}
    for job in jobs:
        stages = job.plan.stages

        def executor_of(stage: Stage, partition: int) -> ExecutorRecord:
            if stage.parents and per_batch and stage.spec.state is None:
                return executors[job.batch % n]  # noqa: B023 - used within this iteration
            return executors[partition % n]  # keyed state stays where its partition always runs

        home = [[executor_of(s, p) for p in range(s.spec.partitions)] for s in stages]
        for stage in reversed(stages):
            readers = [s.stage_id for s in stages if stage.stage_id in s.parents]
            push_to = [e.data_address for e in home[readers[0]]] if readers else []
            for partition, executor in enumerate(home[stage.stage_id]):
                share[executor.executor_id].append(
                    TaskDescriptor(
                        job_id=job.job_id,
                        stage_id=stage.stage_id,
                        partition=partition,
                        stage_key=job.stage_keys[stage.stage_id],
                        batch=job.batch,
                        push_to=push_to,
                        not_before=0.0 if stage.parents else job.not_before,
                    )
                )
                job.placed.setdefault(executor.executor_id, set()).add(stage.stage_id)
    return {eid: tasks for eid, tasks in share.items() if tasks}
