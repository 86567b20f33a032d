"""Reading a stage's input tree: which shuffle partitions each task reads, and who reads each.

A stage's input is a source, a shuffle read, or a union or cogroup of branches (common/plan.py).
A task of partition p reads, in a union, the partition p - offset of the one branch p falls in;
in a cogroup, partition p of every branch. The scheduler asks who reads each reduce partition of
a shuffle (where its mappers push), the executor which shuffles a task waits for; both walk the
tree here, so they agree. The planner gives every (shuffle, reduce partition) one reader task.
"""

from __future__ import annotations

from squall.common.plan import CoGroupInput, PlanError, ShuffleRead, StageInput, StageSpec, UnionInput

ShuffleInput = tuple[ShuffleRead, int]  # a shuffle a task reads, and the reduce partition it reads of it


def task_shuffles(stage_input: StageInput, partition: int) -> list[ShuffleInput]:
    """The shuffles the task of `partition` reads, one entry per shuffle id, by shuffle id."""
    if isinstance(stage_input, ShuffleRead):  # the common cases first: every task runs this
        return [(stage_input, partition)]
    if not isinstance(stage_input, UnionInput | CoGroupInput):
        return []
    found: dict[int, ShuffleInput] = {}
    _collect(stage_input, partition, found)
    return [found[shuffle_id] for shuffle_id in sorted(found)]


def _collect(stage_input: StageInput, partition: int, found: dict[int, ShuffleInput]) -> None:
    if isinstance(stage_input, ShuffleRead):
        found.setdefault(stage_input.shuffle_id, (stage_input, partition))
    elif isinstance(stage_input, CoGroupInput):
        for branch in stage_input.branches:
            _collect(branch.input, partition, found)
    elif isinstance(stage_input, UnionInput):
        index, local = union_branch(stage_input, partition)
        _collect(stage_input.branches[index].input, local, found)


def union_branch(union: UnionInput, partition: int) -> tuple[int, int]:
    """(branch index, the branch's own partition) of a union's partition."""
    offset = 0
    for index, branch in enumerate(union.branches):
        if partition < offset + branch.partitions:
            return index, partition - offset
        offset += branch.partitions
    raise PlanError(f"partition {partition} is past the union's {offset} partitions")


def shuffle_readers(spec: StageSpec) -> dict[int, list[int]]:
    """Shuffle id -> for each of its reduce partitions, the stage partition whose task reads it
    (-1: none does)."""
    readers: dict[int, list[int]] = {}
    _readers(spec.input, spec.partitions, 0, readers)
    return readers


def _readers(stage_input: StageInput, partitions: int, offset: int, readers: dict[int, list[int]]) -> None:
    if isinstance(stage_input, ShuffleRead):
        slots = readers.setdefault(stage_input.shuffle_id, [])
        if len(slots) < partitions:
            slots.extend([-1] * (partitions - len(slots)))
        for r in range(partitions):
            slots[r] = offset + r
    elif isinstance(stage_input, CoGroupInput):
        for branch in stage_input.branches:
            _readers(branch.input, branch.partitions, offset, readers)
    elif isinstance(stage_input, UnionInput):
        for branch in stage_input.branches:
            _readers(branch.input, branch.partitions, offset, readers)
            offset += branch.partitions
