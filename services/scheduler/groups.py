"""Drizzle group scheduling, pure: place every task of a group of micro-batches at once.

Reduce stages are placed before the stages that feed them, so every map task is launched
knowing the block address of each reduce partition it pushes to. Executors are taken in the
order of the run's placement policy (placement.py; by default the ones running the least work
of the other priority first): map partition p goes to executor p mod n of that order. Stages
that read a shuffle are placed by one of two policies:

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
from typing import Literal, Protocol

from squall.common.plan import JobPlan, ShuffleWrite, Stage
from squall.common.protocol import GroupStats, Priority, TaskDescriptor
from squall.common.stage_inputs import PersistedRead, blocks_read, shuffle_readers
from squall.services.scheduler.membership import ExecutorRecord
from squall.services.scheduler.plan_sources import PlanSource

Holders = dict[str, dict[int, list[str]]]  # dataset id -> partition -> executors holding it (block directory)


@dataclass
class PlannedJob:
    """One micro-batch of a run, planned; its state while its group runs."""

    job_id: str
    batch: int
    plan: JobPlan
    stage_keys: list[str]
    not_before: float = 0.0  # wall clock: its source tasks wait until then (streams)
    results: dict[int, object] = field(default_factory=dict)  # result partition -> its block, until done
    sent: set[int] = field(default_factory=set)  # result partitions executors sent straight to the driver
    placed: dict[str, set[int]] = field(default_factory=dict)  # executor id -> stages placed there
    started: float = 0.0
    done: bool = False
    failed: bool = False
    # Recovery: attempt > 0 is a replay, under its own id on the wire (old attempts' messages are
    # stale). A replay_only job rebuilds lost keyed state: only `restrict`'s partitions of its
    # stateful stages (and the stages before them) run, and its output goes nowhere.
    attempt: int = 0
    replay_only: bool = False
    restrict: dict[int, set[int]] = field(default_factory=dict)
    # A plan that reaches persisted datasets is planned at dispatch, not on arrival: `source`
    # holds it, and each attempt asks the block directory (shuffle_meta) what executors hold
    # (`known`: dataset -> its partition count when held whole, 0 when not; `blocks`: who holds
    # which partition) before its stages are planned around them. `replans`: attempts planned
    # again because a block was gone when a task came to read it.
    source: PlanSource | None = None
    needs_blocks: bool = False
    known: dict[str, int] = field(default_factory=dict)
    blocks: Holders = field(default_factory=dict)
    replans: int = 0
    # A speculative copy of a late job (speculation.py): answers the driver only if it is first.
    speculative: bool = False

    @property
    def wire_id(self) -> str:
        """The id executors and messages know this attempt by."""
        return self.job_id if self.attempt == 0 else f"{self.job_id}~{'r' if self.replay_only else ''}{self.attempt}"

    def fork(self, attempt: int, replay_only: bool = False, restrict: dict[int, set[int]] | None = None) -> PlannedJob:
        """A fresh attempt of this job (results and placement start empty; a plan that reaches
        persisted datasets is planned again, around the blocks held by then)."""
        return PlannedJob(
            self.job_id, self.batch, self.plan, self.stage_keys, self.not_before,
            attempt=attempt, replay_only=replay_only, restrict=dict(restrict or {}),
            source=self.source, needs_blocks=self.source is not None, replans=self.replans,
        )

    @property
    def results_remaining(self) -> int:
        # Counted without building the union: each executor's group report asks this of every
        # job it sent results of, so at n executors a set of up to n partitions per job per report
        # made a group's reports cost n x n x jobs.
        remaining = self.plan.result_stage.spec.partitions - len(self.sent)
        if self.results:
            remaining -= sum(1 for partition in self.results if partition not in self.sent)
        return remaining

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

    replay_only: bool = False  # a group that rebuilds lost keyed state
    speculative: bool = False  # a copy of a late job: not counted among the run's groups in flight

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


class Placement(Protocol):
    """What placement asks the scheduler's keyed-state book (squall.services.scheduler.keyed_state)."""

    map_outputs: bool  # checkpoint the map outputs that feed keyed state

    def owner(self, state_id: str, partition: int, default: str) -> str: ...


def place_group(
    jobs: list[PlannedJob],
    executors: list[ExecutorRecord],
    reduce_placement: ReducePlacement = "spread",
    book: Placement | None = None,
    checkpointing: set[str] = frozenset(),  # type: ignore[assignment]
    priority: Priority = "latency",
    order: list[ExecutorRecord] | None = None,
) -> dict[str, list[TaskDescriptor]]:
    """Each executor's share of the group: tasks ordered by batch, reducers before their mappers.

    Every task carries the run's `priority`. Partition p of a stage goes to the p-th executor
    (mod its length) of `order` (the placement policy's, default `executors`, which come in id
    order; an executor may appear in it more often than another: speeds.py).
    A stateful stage's partition goes to its owner (`book`), where its state lives (a new
    partition's first owner: executor p mod n in id order, whatever the policy); the tasks of
    jobs in `checkpointing` checkpoint their state after the batch. Map tasks that feed keyed
    state checkpoint their output. A replay_only job places only its stages up to its restricted
    stateful stage, and of that stage only the restricted partitions."""
    if not executors:
        raise ValueError("no executors to place a group on")
    n = len(executors)
    ordered = order or executors
    cycle = len(ordered)
    by_id = {e.executor_id: e for e in executors}
    per_batch = reduce_placement == "per_batch" or (reduce_placement == "auto" and len(jobs) >= n)
    share: dict[str, list[TaskDescriptor]] = {e.executor_id: [] for e in executors}
    for job in jobs:
        stages = job.plan.stages
        reads = task_blocks(job, by_id)

        def executor_of(stage: Stage, partition: int) -> ExecutorRecord:
            state = stage.spec.state
            if state is not None and book is not None:
                default = executors[partition % n].executor_id
                return by_id.get(book.owner(state.state_id, partition, default), executors[partition % n])
            read = reads.get((stage.stage_id, partition))  # noqa: B023 - used within this iteration
            if read:
                return _holder(read, job.blocks, ordered, by_id)  # noqa: B023 - used within this iteration
            if stage.parents and per_batch and state is None:
                return ordered[job.batch % cycle]  # noqa: B023 - used within this iteration
            return ordered[partition % cycle]

        last_stage = max(job.restrict) if job.replay_only and job.restrict else len(stages) - 1
        home = [[executor_of(s, p) for p in range(s.spec.partitions)] for s in stages]
        for stage in reversed(stages[: last_stage + 1]):
            readers = [s for s in stages[: last_stage + 1] if stage.stage_id in s.parents]
            push_to = _push_to(stage, readers[0], home[readers[0].stage_id], job.restrict, _read_as_blocks(reads, readers[0])) if readers else []
            feeds_state = bool(readers) and readers[0].spec.state is not None and book is not None and book.map_outputs
            partitions = range(stage.spec.partitions)
            if stage.stage_id in job.restrict:
                partitions = sorted(job.restrict[stage.stage_id])  # type: ignore[assignment]
            for partition in partitions:
                executor = home[stage.stage_id][partition]
                state = stage.spec.state
                share[executor.executor_id].append(
                    TaskDescriptor(
                        job_id=job.wire_id,
                        stage_id=stage.stage_id,
                        partition=partition,
                        stage_key=job.stage_keys[stage.stage_id],
                        attempt=job.attempt,
                        batch=job.batch,
                        push_to=[] if job.replay_only and stage.stage_id == last_stage else push_to,
                        not_before=0.0 if stage.parents else job.not_before,
                        checkpoint_state=state is not None and job.job_id in checkpointing,
                        map_checkpoint=map_checkpoint_key(readers[0].spec.state.state_id, job.batch, stage.stage_id, partition)  # type: ignore[union-attr]
                        if feeds_state
                        else "",
                        replay_only=job.replay_only and stage.stage_id == last_stage,
                        priority=priority,
                        persisted=block_addresses(reads.get((stage.stage_id, partition)), executor, job.blocks, by_id),
                    )
                )
                job.placed.setdefault(executor.executor_id, set()).add(stage.stage_id)
    return {eid: tasks for eid, tasks in share.items() if tasks}


def _push_to(stage: Stage, reader: Stage, reader_homes: list[ExecutorRecord], restrict: dict[int, set[int]],
             held: dict[str, set[int]]) -> list[str]:
    """Where a map task of `stage` pushes each reduce partition's block: the executor of the one
    task of `reader` that reads it (in a union, the reader's partitions are offset; "": none
    wants it, in a rebuild restricted to some partitions, or where the reader reads a persisted
    block instead of the lineage this shuffle is part of)."""
    output = stage.spec.output
    assert isinstance(output, ShuffleWrite), f"stage {stage.stage_id} is read but writes no shuffle"
    reading = shuffle_readers(reader.spec, held)[output.shuffle_id]
    wanted = restrict.get(reader.stage_id)
    return [reader_homes[p].data_address if p >= 0 and (wanted is None or p in wanted) else "" for p in reading]


def task_blocks(job: PlannedJob, by_id: dict[str, ExecutorRecord]) -> dict[tuple[int, int], list[PersistedRead]]:
    """(stage, partition) -> the persisted partitions that task reads as blocks (held by a live
    executor, as the block directory said); empty for a job that reaches no persisted dataset."""
    if not job.blocks:
        return {}

    def has_block(dataset_id: str, partition: int) -> bool:
        return any(e in by_id for e in job.blocks.get(dataset_id, {}).get(partition, ()))

    reads: dict[tuple[int, int], list[PersistedRead]] = {}
    for stage in job.plan.stages:
        for partition in range(stage.spec.partitions):
            found = blocks_read(stage.spec.input, partition, has_block)
            if found:
                reads[(stage.stage_id, partition)] = found
    return reads


def _holder(read: list[PersistedRead], blocks: Holders, ordered: list[ExecutorRecord], by_id: dict[str, ExecutorRecord]) -> ExecutorRecord:
    """Where a task reading these blocks runs: an executor holding all of them if one does (the
    first in the policy's order), else one holding the first (it fetches the others)."""
    holding = [{e for e in blocks.get(d.dataset_id, {}).get(p, ()) if e in by_id} for d, p in read]
    wanted = set.intersection(*holding) or holding[0] or set(by_id)  # none left: the task says so, and is planned again
    return next(record for record in ordered if record.executor_id in wanted)


def block_addresses(read: list[PersistedRead] | None, executor: ExecutorRecord, blocks: Holders, by_id: dict[str, ExecutorRecord]) -> dict[str, str]:
    """Dataset id -> where the task reads its block: its own executor when that holds it."""
    if not read:
        return {}
    where: dict[str, str] = {}
    for persisted, partition in read:
        holders = [e for e in blocks.get(persisted.dataset_id, {}).get(partition, ()) if e in by_id]
        if executor.executor_id in holders:
            where[persisted.dataset_id] = executor.data_address
        else:  # "": no holder is left; the task reports the block gone
            where[persisted.dataset_id] = by_id[min(holders)].data_address if holders else ""
    return where


def _read_as_blocks(reads: dict[tuple[int, int], list[PersistedRead]], stage: Stage) -> dict[str, set[int]]:
    """Dataset id -> its partitions that `stage`'s tasks read as blocks."""
    held: dict[str, set[int]] = {}
    for partition in range(stage.spec.partitions):
        for persisted, index in reads.get((stage.stage_id, partition), ()):
            held.setdefault(persisted.dataset_id, set()).add(index)
    return held


def map_checkpoint_key(state_id: str, batch: int, stage_id: int, partition: int) -> str:
    """Where a map task feeding keyed state checkpoints its output (by batch, not by attempt)."""
    return f"maps/{state_id}/{batch:012d}/{stage_id}-{partition}"
