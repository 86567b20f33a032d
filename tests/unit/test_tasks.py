"""squall.services.executor.tasks: running one task with real pickled user code."""

from __future__ import annotations

import functools
import operator

import pytest
from squall.common.partitioning import partition_of
from squall.common.plan import (
    Aggregator,
    CollectionSource,
    RangeSource,
    ResultWrite,
    ShuffleRead,
    ShuffleWrite,
    StageSpec,
    StateUpdate,
    code_key,
)
from squall.common.serialization import SerializationError, dumps_block, dumps_function, loads_block
from squall.services.executor.tasks import CodeCache, RecordError, run_task

from squall import ops

# The executor's code store: pickled code by code key (specs only name code by its key).
CODE: dict[str, bytes] = {}


def key(fn) -> str:
    blob = dumps_function(fn)
    CODE[code_key(blob)] = blob
    return code_key(blob)


def op(adapter, fn) -> str:
    return key(functools.partial(adapter, fn))


def cache() -> CodeCache:
    return CodeCache(CODE)


ADD = Aggregator(kind="reduce", fn=key(operator.add))
GROUP = Aggregator(kind="group")


def result(spec: StageSpec, partition: int, inputs=()) -> list:
    out = run_task(spec, partition, list(inputs), cache())
    assert out.is_result and len(out.blocks) == 1
    return loads_block(out.blocks[0])


def test_range_source_with_narrow_pipeline():
    src = RangeSource(start=0, stop=20, step=1, partitions=4)
    spec = StageSpec(
        partitions=4,
        input=src,
        ops=[op(ops.map_op, lambda x: x * 10), op(ops.filter_op, lambda x: x % 20 == 0), op(ops.flat_map_op, lambda x: [x, -x])],
        output=ResultWrite(),
    )
    assert result(spec, 1) == [60, -60, 80, -80]  # partition 1 holds 5..9
    assert [x for p in range(4) for x in result(spec, p)] == [y for x in range(0, 200, 20) for y in (x, -x)]


def test_range_partitions_cover_the_range_with_negative_step():
    src = RangeSource(start=10, stop=0, step=-3, partitions=3)
    spec = StageSpec(partitions=3, input=src, ops=[], output=ResultWrite())
    assert [x for p in range(3) for x in result(spec, p)] == [10, 7, 4, 1]


def test_collection_source_with_partition_ops():
    src = CollectionSource(slices=[dumps_block(["a", "bb"]), dumps_block(["ccc"])])
    spec = StageSpec(partitions=2, input=src, ops=[op(ops.partition_op, lambda it: [len(s) for s in it]), key(ops.count_op)], output=ResultWrite())
    assert result(spec, 0) == [2]
    assert result(spec, 1) == [1]


def test_reduce_op_on_empty_partition_gives_nothing():
    spec = StageSpec(partitions=1, input=CollectionSource(slices=[dumps_block([])]),
                     ops=[op(ops.reduce_op, operator.add)], output=ResultWrite())
    assert result(spec, 0) == []


def test_map_partitions_returning_none_is_a_clear_error():
    spec = StageSpec(partitions=1, input=CollectionSource(slices=[dumps_block([1])]),
                     ops=[op(ops.partition_op, lambda it: None)], output=ResultWrite())
    with pytest.raises(TypeError, match="returned None"):
        run_task(spec, 0, [], cache())


def test_shuffle_write_reduce_combines_map_side_and_partitions_by_key():
    words = ["a", "b", "a", "c", "b", "a", "d"]
    spec = StageSpec(
        partitions=1,
        input=CollectionSource(slices=[dumps_block(words)]),
        ops=[op(ops.map_op, lambda w: (w, 1))],
        output=ShuffleWrite(shuffle_id=3, partitions=3, aggregator=ADD),
    )
    out = run_task(spec, 0, [], cache())
    assert not out.is_result and len(out.blocks) == 3
    assert out.size == sum(len(b) for b in out.blocks)
    buckets = [dict(loads_block(b)) for b in out.blocks]
    for index, bucket in enumerate(buckets):
        assert all(partition_of(k, 3) == index for k in bucket)
        assert len(bucket) == len(loads_block(out.blocks[index]))  # one record per key: combined map-side
    merged = {k: v for b in buckets for k, v in b.items()}
    assert merged == {"a": 3, "b": 2, "c": 1, "d": 1}


def test_shuffle_write_group_gathers_lists():
    spec = StageSpec(
        partitions=1,
        input=CollectionSource(slices=[dumps_block([("x", 1), ("y", 2), ("x", 3)])]),
        ops=[],
        output=ShuffleWrite(shuffle_id=0, partitions=2, aggregator=GROUP),
    )
    out = run_task(spec, 0, [], cache())
    merged = {k: v for b in out.blocks for k, v in loads_block(b)}
    assert merged == {"x": [1, 3], "y": [2]}
    assert ("x", [1, 3]) in loads_block(out.blocks[partition_of("x", 2)])


def test_shuffle_read_reduce_merges_blocks_from_every_mapper():
    blocks = [dumps_block([("a", 1), ("b", 10)]), dumps_block([("a", 2)]), dumps_block([]), dumps_block([("b", 5), ("c", 7)])]
    spec = StageSpec(
        partitions=1,
        input=ShuffleRead(shuffle_id=0, map_partitions=4, aggregator=ADD),
        ops=[op(ops.map_op, lambda kv: (kv[0], kv[1] * 100))],
        output=ResultWrite(),
    )
    assert sorted(result(spec, 0, [memoryview(b) for b in blocks])) == [("a", 300), ("b", 1500), ("c", 700)]


def test_shuffle_read_group_concatenates_value_lists():
    blocks = [dumps_block([("k", [1, 2])]), dumps_block([("k", [3]), ("j", [4])])]
    spec = StageSpec(partitions=1, input=ShuffleRead(shuffle_id=0, map_partitions=2, aggregator=GROUP), ops=[], output=ResultWrite())
    assert dict(result(spec, 0, blocks)) == {"k": [1, 2, 3], "j": [4]}


def test_map_then_reduce_end_to_end_word_count():
    text = [["the cat", "the dog"], ["a cat", "the end"]]
    map_spec = StageSpec(
        partitions=2,
        input=CollectionSource(slices=[dumps_block(t) for t in text]),
        ops=[op(ops.flat_map_op, str.split), op(ops.map_op, lambda w: (w, 1))],
        output=ShuffleWrite(shuffle_id=1, partitions=2, aggregator=ADD),
    )
    outs = [run_task(map_spec, p, [], cache()) for p in range(2)]
    reduce_spec = StageSpec(partitions=2, input=ShuffleRead(shuffle_id=1, map_partitions=2, aggregator=ADD), ops=[], output=ResultWrite())
    counts = {}
    for r in range(2):
        counts.update(result(reduce_spec, r, [o.blocks[r] for o in outs]))
    assert counts == {"the": 3, "cat": 2, "dog": 1, "a": 1, "end": 1}


@pytest.mark.parametrize("record", [5, "abc", (1, 2, 3), None])
def test_non_pair_record_into_a_shuffle_is_a_record_error(record):
    for agg in (ADD, GROUP):
        spec = StageSpec(
            partitions=1,
            input=CollectionSource(slices=[dumps_block([("ok", 1), record])]),
            ops=[],
            output=ShuffleWrite(shuffle_id=0, partitions=2, aggregator=agg),
        )
        with pytest.raises(RecordError) as info:
            run_task(spec, 0, [], cache())
        message = str(info.value)
        assert "(key, value) pairs" in message
        assert type(record).__name__ in message and repr(record)[:20] in message


def test_list_pairs_are_accepted_as_key_value():
    spec = StageSpec(partitions=1, input=CollectionSource(slices=[dumps_block([["k", 1], ["k", 2]])]), ops=[],
                     output=ShuffleWrite(shuffle_id=0, partitions=1, aggregator=ADD))
    assert loads_block(run_task(spec, 0, [], cache()).blocks[0]) == [("k", 3)]


def test_reduce_shuffle_without_function_is_a_record_error():
    spec = StageSpec(partitions=1, input=CollectionSource(slices=[dumps_block([("k", 1)])]), ops=[],
                     output=ShuffleWrite(shuffle_id=0, partitions=1, aggregator=Aggregator(kind="reduce")))
    with pytest.raises(RecordError, match="needs a function"):
        run_task(spec, 0, [], cache())


def test_code_cache_loads_each_key_once():
    blobs: dict[str, bytes] = {}
    code = CodeCache(blobs, limit=2)
    keys = []
    for fn in (abs, str, repr):
        blob = dumps_function(functools.partial(ops.map_op, fn))
        blobs[code_key(blob)] = blob
        keys.append(code_key(blob))
    assert code.load(keys[0]) is code.load(keys[0])
    code.load(keys[1])
    code.load(keys[2])  # over the limit: the cache starts over
    assert list(code.load(keys[0])(iter([-1]))) == [1]


def test_code_cache_sees_code_added_to_the_store_after_it_was_made():
    blobs: dict[str, bytes] = {}
    code = CodeCache(blobs)  # the runner holds the executor's store, which fills up later
    blob = dumps_function(functools.partial(ops.map_op, abs))
    with pytest.raises(SerializationError, match="never sent"):
        code.load(code_key(blob))
    blobs[code_key(blob)] = blob
    assert list(code.load(code_key(blob))(iter([-2]))) == [2]


def test_op_named_by_an_unknown_key_is_a_serialization_error():
    spec = StageSpec(partitions=1, input=CollectionSource(slices=[dumps_block([1])]), ops=["0" * 32], output=ResultWrite())
    with pytest.raises(SerializationError, match="0" * 32):
        run_task(spec, 0, [], cache())


def test_code_key_is_a_content_hash():
    blob = dumps_function(abs)
    assert code_key(blob) == code_key(bytes(blob)) and len(code_key(blob)) == 32
    assert code_key(blob) != code_key(blob + b"x")


def test_a_rebuild_applies_keyed_state_and_serializes_no_output():
    spec = StageSpec(
        partitions=1,
        input=ShuffleRead(shuffle_id=0, map_partitions=1, aggregator=GROUP),
        ops=[],
        output=ResultWrite(),
        state=StateUpdate(fn=key(lambda values, old: (old or 0) + sum(values)), state_id="s", kind="keyed"),
    )
    states: dict = {}
    out = run_task(spec, 0, [dumps_block([("k", [1, 2])])], cache(), states, batch=3, discard_output=True)
    assert out.blocks == [] and out.is_result
    assert states[("s", 0)] == {"k": 3}
