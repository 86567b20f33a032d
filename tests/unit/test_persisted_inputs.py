"""Running a task that reads a persisted partition (tasks.run_task): from the block it was given, or
computed from its lineage (the PersistedInput's fallback), whose block then goes back with the
task's output; directly, nested in a union or a cogroup, or in another persisted partition."""

from __future__ import annotations

import functools
from typing import Any

import pytest
from squall.common.plan import (
    Aggregator,
    Branch,
    CoGroupInput,
    PersistedInput,
    RangeSource,
    ResultWrite,
    ShuffleRead,
    ShuffleWrite,
    StageSpec,
    UnionInput,
)
from squall.common.serialization import dumps_block, dumps_function, loads_block
from squall.services.executor.instructions import RunTask
from squall.services.executor.reports import Failure
from squall.services.executor.runner import execute
from squall.services.executor.tasks import BlockMissing, CodeCache, TaskOutput, run_task

from squall import ops
from tests.unit.test_executor_dag_inputs import task

pytestmark = pytest.mark.timeout(10)

GROUP = Aggregator(kind="group")
RANGE = RangeSource(start=0, stop=6, step=1, partitions=2)  # partition 0: 0 1 2, partition 1: 3 4 5


def code() -> CodeCache:
    def append_seen(records: Any) -> Any:  # changes the records it is given: the block made before must not see it
        for key, values in records:
            values.append("seen")
            yield key, values

    fns = {
        "square": functools.partial(ops.map_op, lambda x: x * x),
        "inc": functools.partial(ops.map_op, lambda x: x + 1),
        "pair": functools.partial(ops.map_op, lambda x: (x % 2, [x])),
        "total": functools.partial(ops.map_op, lambda kv: sum(kv[1])),
        "append_seen": append_seen,
    }
    return CodeCache({key: dumps_function(fn) for key, fn in fns.items()})


def squares(fallback_input: Any = RANGE, partitions: int = 2, dataset_id: str = "sq") -> PersistedInput:
    """A persisted dataset: the squares of what `fallback_input` reads."""
    return PersistedInput(dataset_id, partitions, Branch(input=fallback_input, ops=["square"], partitions=partitions))


def read(shuffle_id: int, maps: int = 1) -> ShuffleRead:
    return ShuffleRead(shuffle_id=shuffle_id, map_partitions=maps, aggregator=GROUP)


def result(stage_input: Any, partitions: int = 2, ops_: list[str] | None = None) -> StageSpec:
    return StageSpec(partitions=partitions, input=stage_input, ops=ops_ or [], output=ResultWrite())


def records(out: TaskOutput) -> list[Any]:
    return loads_block(out.blocks[0])  # type: ignore[no-any-return]


def test_a_partition_not_given_is_computed_and_its_block_made_for_the_executor_to_keep():
    out = run_task(result(squares(), ops_=["inc"]), 1, [], code())
    assert records(out) == [10, 17, 26]
    ((dataset_id, partition, partitions, block),) = out.persisted
    assert (dataset_id, partition, partitions) == ("sq", 1, 2)
    assert loads_block(block) == [9, 16, 25]  # the dataset's records: before the ops after it


def test_a_partition_given_as_a_block_is_read_from_it_and_not_computed():
    given = {"sq": dumps_block([100, 200])}
    out = run_task(result(squares(), ops_=["inc"]), 1, [], code(), persisted=given)
    assert records(out) == [101, 201]
    assert out.persisted == []


def test_a_block_is_made_before_ops_downstream_can_change_its_records():
    spec = result(PersistedInput("p", 2, Branch(input=RANGE, ops=["pair"], partitions=2)), ops_=["append_seen"])
    out = run_task(spec, 0, [], code())
    assert records(out) == [(0, [0, "seen"]), (1, [1, "seen"]), (0, [2, "seen"])]
    assert loads_block(out.persisted[0][3]) == [(0, [0]), (1, [1]), (0, [2])]


def test_in_a_union_the_branchs_own_partition_is_computed_from_a_shuffle_or_read_as_a_block():
    totals = PersistedInput("totals", 2, Branch(input=read(7), ops=["total"], partitions=2))  # sum of each key's values
    union = UnionInput(branches=[Branch(input=RangeSource(start=0, stop=2, step=1, partitions=1), ops=[], partitions=1),
                                 Branch(input=totals, ops=["inc"], partitions=2)])
    spec = result(union, partitions=3)
    shuffled = [dumps_block([("k", [2, 3])])]  # partition 1 of shuffle 7 (one map partition): (key, [values])
    out = run_task(spec, 2, shuffled, code())  # the union's partition 2: partition 1 of the persisted branch
    assert records(out) == [6]
    assert [(d, p, n, loads_block(b)) for d, p, n, b in out.persisted] == [("totals", 1, 2, [5])]
    given = run_task(spec, 2, [], code(), persisted={"totals": dumps_block([7])})  # given the block, it reads no shuffle
    assert records(given) == [8] and given.persisted == []
    assert run_task(spec, 0, [], code()).persisted == []  # the other branch: nothing persisted read


def test_in_a_cogroup_a_persisted_side_is_computed_from_its_shuffle_or_read_while_the_other_side_is_read():
    persisted_side = PersistedInput("side", 1, Branch(input=read(7), ops=[], partitions=1))
    cogroup = CoGroupInput(branches=[Branch(input=persisted_side, ops=[], partitions=1, grouped=True),
                                     Branch(input=read(8), ops=[], partitions=1, grouped=True)])
    spec = result(cogroup, partitions=1)
    side_7, side_8 = dumps_block([("a", [1])]), dumps_block([("a", [2]), ("b", [3])])
    out = run_task(spec, 0, [side_7, side_8], CodeCache({}))  # shuffle by shuffle, in id order
    assert sorted(records(out)) == [("a", ([1], [2])), ("b", ([], [3]))]
    assert [(d, p, n, loads_block(b)) for d, p, n, b in out.persisted] == [("side", 0, 1, [("a", [1])])]
    given = run_task(spec, 0, [side_8], CodeCache({}), persisted={"side": dumps_block([("b", [9])])})  # only shuffle 8's blocks
    assert sorted(records(given)) == [("a", ([], [2])), ("b", ([9], [3]))]
    assert given.persisted == []


def test_a_persisted_partition_inside_anothers_lineage_is_kept_too_unless_the_outer_one_is_given():
    inner = squares(dataset_id="inner")
    outer = PersistedInput("outer", 2, Branch(input=inner, ops=["inc"], partitions=2))
    out = run_task(result(outer), 0, [], code())
    assert records(out) == [1, 2, 5]
    assert [(d, loads_block(b)) for d, _, _, b in out.persisted] == [("inner", [0, 1, 4]), ("outer", [1, 2, 5])]
    assert run_task(result(outer), 0, [], code(), persisted={"inner": dumps_block([3])}).persisted[0][0] == "outer"
    assert run_task(result(outer), 0, [], code(), persisted={"outer": dumps_block([3])}).persisted == []


def test_a_map_task_computing_a_persisted_partition_returns_its_block_beside_its_shuffle_blocks():
    spec = StageSpec(partitions=2, input=PersistedInput("p", 2, Branch(input=RANGE, ops=["pair"], partitions=2)), ops=[],
                     output=ShuffleWrite(shuffle_id=3, partitions=2, aggregator=GROUP))
    out = run_task(spec, 0, [], code())
    assert len(out.blocks) == 2 and [d for d, _, _, _ in out.persisted] == ["p"]


def test_a_persisted_partition_with_no_lineage_and_no_block_is_a_block_failure_naming_it():
    held_whole = result(PersistedInput("whole", 2))  # the scheduler cut its lineage: executors hold it all
    with pytest.raises(BlockMissing, match="partition 1 of persisted dataset whole"):
        run_task(held_whole, 1, [], code())
    failure = execute(RunTask(task(held_whole, 1), held_whole, []), [], code(), {}, None)
    assert isinstance(failure, Failure) and (failure.kind, failure.error_type) == ("block", "BlockLost")
    assert "persisted dataset whole" in failure.message
    out = execute(RunTask(task(held_whole, 1), held_whole, []), [], code(), {}, None, {"whole": dumps_block(["x"])})
    assert isinstance(out, TaskOutput) and records(out) == ["x"]
