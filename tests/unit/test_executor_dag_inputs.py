"""An executor's tasks that read several shuffles (a cogroup) or one of several (a union): they
wait for every input they read, fail as a whole, and evaluate their input tree (tasks.run_task)."""

from __future__ import annotations

import functools

from squall.common import protocol
from squall.common.plan import Aggregator, Branch, CoGroupInput, RangeSource, ResultWrite, ShuffleRead, StageSpec, UnionInput
from squall.common.serialization import dumps_block, dumps_function, loads_block
from squall.common.settings import Settings
from squall.services.executor.instructions import RunTask, ToShuffleMeta
from squall.services.executor.tasks import CodeCache, run_task

from squall import ops
from tests.unit.executor_fixtures import ME, Executor, runs, to_scheduler

GROUP = Aggregator(kind="group")
ADD = Aggregator(kind="reduce", fn="add")
B = "tcp://b:1"


def read(shuffle_id: int, maps: int = 2, aggregator: Aggregator = GROUP) -> ShuffleRead:
    return ShuffleRead(shuffle_id=shuffle_id, map_partitions=maps, aggregator=aggregator)


COGROUP = StageSpec(partitions=2, input=CoGroupInput(branches=[Branch(input=read(7), ops=[], partitions=2, grouped=True),
                                                               Branch(input=read(8, maps=3), ops=[], partitions=2, grouped=True)]),
                    ops=[], output=ResultWrite())
UNION = StageSpec(partitions=5, input=UnionInput(branches=[Branch(input=read(7), ops=[], partitions=2),
                                                           Branch(input=read(8, maps=3), ops=[], partitions=3)]),
                  ops=[], output=ResultWrite())


def task(spec: StageSpec, partition: int, job_id: str = "j") -> protocol.TaskDescriptor:
    return protocol.TaskDescriptor(job_id=job_id, stage_id=2, partition=partition, stage_key=spec.key())


def launch(ex: Executor, spec: StageSpec, *tasks: protocol.TaskDescriptor, group_id: int = 1) -> list:
    return ex.launch_group(protocol.LaunchGroup(group_id=group_id, tasks=list(tasks), stages={spec.key(): spec}), 0.0)


def push(ex: Executor, shuffle_id: int, map_partition: int, block: bytes, reduce_partition: int = 0) -> list:
    msg = protocol.PushBlocks(job_id="j", shuffle_id=shuffle_id, map_partition=map_partition, reduce_partitions=[reduce_partition])
    return ex.pushed(msg, [block], 0.0)


def test_a_cogroup_task_runs_once_every_shuffle_it_reads_is_in():
    ex = Executor("e1", ME, Settings())
    t1 = task(COGROUP, 1)
    assert launch(ex, COGROUP, t1) == []
    assert push(ex, 8, 2, b"8/2", reduce_partition=1) == []
    assert push(ex, 7, 1, b"7/1", reduce_partition=1) == []
    assert push(ex, 7, 0, b"7/0", reduce_partition=1) == []  # shuffle 7 is complete; 8 is not
    assert push(ex, 8, 0, b"8/0", reduce_partition=1) == []
    (run,) = [a for a in push(ex, 8, 1, b"8/1", reduce_partition=1) if isinstance(a, RunTask)]
    assert run.task == t1
    assert run.inputs == [b"7/0", b"7/1", b"8/0", b"8/1", b"8/2"]  # shuffle by shuffle, each by map partition
    assert ex.inputs.readers == {}


def test_a_union_task_reads_only_its_own_branchs_shuffle_at_its_own_partition():
    ex = Executor("e1", ME, Settings())
    t3 = task(UNION, 3)  # the union's partition 3 is partition 1 of its second branch, shuffle 8
    launch(ex, UNION, t3)
    assert set(ex.inputs.readers) == {("j", 8, 1)}
    push(ex, 8, 0, b"a", reduce_partition=1)
    push(ex, 8, 1, b"b", reduce_partition=1)
    assert runs(push(ex, 8, 2, b"c", reduce_partition=1)) == [t3]


def test_one_failed_input_fails_the_task_and_drops_its_other_inputs():
    ex = Executor("e1", ME, Settings())
    t0 = task(COGROUP, 0)
    launch(ex, COGROUP, t0, group_id=3)
    push(ex, 7, 0, b"kept for nothing")
    notice = protocol.BlocksReady(job_id="j", shuffle_id=8, map_partition=0, reduce_partitions=[0], address=B)
    (fetch,) = ex.blocks_ready(notice, 0.0)
    actions = ex.request_failed(protocol.ErrorReply(reason="gone", request_id=fetch.msg.request_id))
    (failed,) = to_scheduler(actions, protocol.TaskFailed)
    assert (failed.partition, failed.kind, failed.message) == (0, "fetch", "gone")
    assert [m.group_id for m in to_scheduler(actions, protocol.GroupDone)] == [3]
    assert ex.inputs.readers == {} and ex.tasks == {}
    assert push(ex, 7, 1, b"late") == []  # nothing waits for it any more


def test_a_bsp_cogroup_task_looks_every_shuffle_up():
    ex = Executor("e1", ME, Settings())
    ex.register()
    actions = ex.launch(protocol.LaunchTasks(tasks=[task(COGROUP, 1)], stages={COGROUP.key(): COGROUP}))
    lookups = [a.msg for a in actions if isinstance(a, ToShuffleMeta)]
    assert sorted((m.shuffle_id, m.expected) for m in lookups) == [(7, 2), (8, 3)]


def code(**fns) -> CodeCache:  # type: ignore[no-untyped-def]
    return CodeCache({key: dumps_function(fn) for key, fn in fns.items()})


def test_run_task_cogroups_grouped_and_one_to_one_branches_and_pairs_them():
    # side 0: a shuffle made for the cogroup (key, [values]); side 1: a reduce_by_key read one-to-one,
    # then filtered in its branch; then the join's pairing
    spec = StageSpec(
        partitions=1,
        input=CoGroupInput(branches=[Branch(input=read(7), ops=[], partitions=1, grouped=True),
                                     Branch(input=read(8, aggregator=ADD), ops=["positive"], partitions=1)]),
        ops=["join"], output=ResultWrite())
    inputs = [dumps_block([("a", [1, 2])]), dumps_block([("a", [3]), ("b", [4])]),
              dumps_block([("a", 10), ("c", -1)]), dumps_block([("a", 5), ("d", 7)])]
    fns = code(add=lambda x, y: x + y, positive=functools.partial(ops.filter_op, lambda kv: kv[1] > 0),
               join=functools.partial(ops.join_op, "left"))
    out = run_task(spec, 0, inputs, fns)
    assert sorted(loads_block(out.blocks[0])) == [("a", (1, 15)), ("a", (2, 15)), ("a", (3, 15)), ("b", (4, None))]


def test_run_task_reads_a_unions_branch_and_applies_its_ops():
    spec = StageSpec(partitions=3, input=UnionInput(branches=[
        Branch(input=read(7), ops=[], partitions=1), Branch(input=read(8, aggregator=ADD), ops=["double"], partitions=2)]),
        ops=[], output=ResultWrite())
    fns = code(add=lambda x, y: x + y, double=functools.partial(ops.map_op, lambda kv: (kv[0], kv[1] * 2)))
    out = run_task(spec, 2, [dumps_block([("k", 1)]), dumps_block([("k", 2)])], fns)  # partition 1 of shuffle 8
    assert loads_block(out.blocks[0]) == [("k", 6)]


def test_a_union_task_reading_a_source_branch_runs_at_once_and_is_no_reducer():
    mixed = StageSpec(partitions=3, input=UnionInput(branches=[
        Branch(input=RangeSource(start=0, stop=10, step=1, partitions=1), ops=[], partitions=1),
        Branch(input=read(7), ops=[], partitions=2)]), ops=[], output=ResultWrite())
    ex = Executor("e1", ME, Settings())
    source_task, shuffle_task = task(mixed, 0), task(mixed, 2)
    assert runs(launch(ex, mixed, shuffle_task, source_task)) == [source_task]
    assert not ex.tasks[source_task.key].is_reducer and ex.tasks[shuffle_task.key].is_reducer
    assert set(ex.inputs.readers) == {("j", 7, 1)}
