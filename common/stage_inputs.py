"""Reading a stage's input tree: which shuffle partitions and persisted blocks each task reads,
and who reads each.

A stage's input is a source, a shuffle read, a persisted input, or a union or cogroup of branches
(common/plan.py). A task of partition p reads, in a union, the partition p - offset of the one
branch p falls in; in a cogroup, partition p of every branch; of a persisted input, its partition
p: the block when the task is told where it is (`held`, TaskDescriptor.persisted), else what the
fallback reads. The scheduler asks who reads each reduce partition of a shuffle (where its
mappers push) and which blocks a task reads (where to place it), the executor which shuffles a
task waits for; both walk the tree here, so they agree. The planner gives every (shuffle, reduce
partition) one reader task.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping

from squall.common.plan import CoGroupInput, PersistedInput, PlanError, ShuffleRead, StageInput, StageSpec, UnionInput

ShuffleInput = tuple[ShuffleRead, int]  # a shuffle a task reads, and the reduce partition it reads of it
PersistedRead = tuple[PersistedInput, int]  # a persisted dataset a task reads, and its partition of it

_NESTED = (UnionInput, CoGroupInput, PersistedInput)


def task_shuffles(stage_input: StageInput, partition: int, held: Collection[str] = ()) -> list[ShuffleInput]:
    """The shuffles the task of `partition` reads, one entry per shuffle id, by shuffle id.
    `held`: the persisted datasets the task reads as blocks (their fallbacks' shuffles it does not)."""
    if isinstance(stage_input, ShuffleRead):  # the common cases first: every task runs this
        return [(stage_input, partition)]
    if not isinstance(stage_input, _NESTED):
        return []
    found: dict[int, ShuffleInput] = {}
    _collect(stage_input, partition, held, found, None)
    return [found[shuffle_id] for shuffle_id in sorted(found)]


def task_persisted(stage_input: StageInput, partition: int, held: Collection[str] = ()) -> list[PersistedRead]:
    """The persisted datasets the task of `partition` reads, outermost first (one nested in the
    fallback of another only when that other is not in `held`), one entry per dataset."""
    if not isinstance(stage_input, _NESTED):
        return []
    found: dict[str, PersistedRead] = {}
    _collect(stage_input, partition, held, None, found)
    return list(found.values())


def blocks_read(stage_input: StageInput, partition: int, has_block: Callable[[str, int], bool]) -> list[PersistedRead]:
    """The persisted partitions the task of `partition` reads as blocks, when it reads every one
    that `has_block` says exists (and computes the others from their fallbacks, reading what
    those reach): the scheduler's view of a task, before it tells the task (TaskDescriptor.persisted)."""
    if not isinstance(stage_input, _NESTED):
        return []
    found: dict[str, PersistedRead] = {}
    _blocks(stage_input, partition, has_block, found)
    return list(found.values())


def _blocks(stage_input: StageInput, partition: int, has_block: Callable[[str, int], bool], found: dict[str, PersistedRead]) -> None:
    if isinstance(stage_input, CoGroupInput):
        for branch in stage_input.branches:
            _blocks(branch.input, partition, has_block, found)
    elif isinstance(stage_input, UnionInput):
        index, local = union_branch(stage_input, partition)
        _blocks(stage_input.branches[index].input, local, has_block, found)
    elif isinstance(stage_input, PersistedInput):
        if stage_input.fallback is None or has_block(stage_input.dataset_id, partition):
            found.setdefault(stage_input.dataset_id, (stage_input, partition))
        else:
            _blocks(stage_input.fallback.input, partition, has_block, found)


def _collect(stage_input: StageInput, partition: int, held: Collection[str], shuffles: dict[int, ShuffleInput] | None,
             persisted: dict[str, PersistedRead] | None) -> None:
    if isinstance(stage_input, ShuffleRead):
        if shuffles is not None:
            shuffles.setdefault(stage_input.shuffle_id, (stage_input, partition))
    elif isinstance(stage_input, CoGroupInput):
        for branch in stage_input.branches:
            _collect(branch.input, partition, held, shuffles, persisted)
    elif isinstance(stage_input, UnionInput):
        index, local = union_branch(stage_input, partition)
        _collect(stage_input.branches[index].input, local, held, shuffles, persisted)
    elif isinstance(stage_input, PersistedInput):
        if persisted is not None:
            persisted.setdefault(stage_input.dataset_id, (stage_input, partition))
        if stage_input.fallback is not None and stage_input.dataset_id not in held:
            _collect(stage_input.fallback.input, partition, held, shuffles, persisted)


def union_branch(union: UnionInput, partition: int) -> tuple[int, int]:
    """(branch index, the branch's own partition) of a union's partition."""
    offset = 0
    for index, branch in enumerate(union.branches):
        if partition < offset + branch.partitions:
            return index, partition - offset
        offset += branch.partitions
    raise PlanError(f"partition {partition} is past the union's {offset} partitions")


def shuffle_readers(spec: StageSpec, held: Mapping[str, Collection[int]] | None = None) -> dict[int, list[int]]:
    """Shuffle id -> for each of its reduce partitions, the stage partition whose task reads it
    (-1: none does). `held`: dataset id -> the partitions of it read as blocks, whose fallbacks'
    shuffles no task reads."""
    readers: dict[int, list[int]] = {}
    _readers(spec.input, spec.partitions, 0, readers, held or {}, frozenset())
    return readers


def _readers(stage_input: StageInput, partitions: int, offset: int, readers: dict[int, list[int]],
             held: Mapping[str, Collection[int]], skip: Collection[int]) -> None:
    """`skip`: the partitions (of this input) read from blocks further out, whose tasks read nothing here."""
    if isinstance(stage_input, ShuffleRead):
        slots = readers.setdefault(stage_input.shuffle_id, [])
        if len(slots) < partitions:
            slots.extend([-1] * (partitions - len(slots)))
        for r in range(partitions):
            if r not in skip:
                slots[r] = offset + r
    elif isinstance(stage_input, CoGroupInput):
        for branch in stage_input.branches:
            _readers(branch.input, branch.partitions, offset, readers, held, skip)
    elif isinstance(stage_input, UnionInput):
        start = 0  # where the branch starts among this input's partitions
        for branch in stage_input.branches:
            inner = {p - start for p in skip if start <= p < start + branch.partitions} if skip else skip
            _readers(branch.input, branch.partitions, offset + start, readers, held, inner)
            start += branch.partitions
    elif isinstance(stage_input, PersistedInput) and stage_input.fallback is not None:
        from_blocks = held.get(stage_input.dataset_id, ())
        inner = set(skip) | set(from_blocks) if from_blocks else skip
        _readers(stage_input.fallback.input, partitions, offset, readers, held, inner)
