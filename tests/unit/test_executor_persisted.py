"""An executor's persisted blocks, through its core (ExecutorState.handle): a task that computed a
persisted partition hands its block back and the executor keeps it and registers it (before the
task's report); a task told where a block is reads it from memory or fetches it from its holder,
waiting for none of the shuffles below it; a block that is not where the task was told fails the
task with kind "block"; peers' fetches are served; unpersisted datasets go."""

from __future__ import annotations

import pytest
from squall.common.core import Log, Send
from squall.common.plan import Aggregator, Branch, CoGroupInput, PersistedInput, ResultWrite, ShuffleRead, StageSpec
from squall.common.protocol import (
    DroppedPersisted,
    ErrorReply,
    FetchPersisted,
    ForgetPersisted,
    LaunchGroup,
    LaunchTasks,
    PersistedBlock,
    PersistedData,
    PushBlocks,
    RegisterPersisted,
    ResultPartition,
    TaskDescriptor,
    TaskFailed,
    TaskFinished,
)
from squall.common.settings import Settings
from squall.services.executor.events import ShuffleMetaRestarted
from squall.services.executor.instructions import Instruction, RunTask, ToPeer, ToScheduler, ToShuffleMeta
from squall.services.executor.tasks import TaskOutput

from tests.unit.executor_fixtures import ME, Executor, from_scheduler, only, received, runs, to_scheduler

pytestmark = pytest.mark.timeout(10)

GROUP = Aggregator(kind="group")
HOLDER = "tcp://holder:1"
# Result tasks reading persisted dataset "d" (2 partitions), whose lineage reads shuffle 7 from 2 mappers.
SPEC = StageSpec(partitions=2, input=PersistedInput("d", 2, Branch(input=ShuffleRead(shuffle_id=7, map_partitions=2, aggregator=GROUP),
                                                                    ops=[], partitions=2)),
                 ops=[], output=ResultWrite())
# "d" beside shuffle 8 in a cogroup: a task waits for both.
COGROUP = StageSpec(partitions=2, input=CoGroupInput(branches=[
    Branch(input=SPEC.input, ops=[], partitions=2, grouped=True),
    Branch(input=ShuffleRead(shuffle_id=8, map_partitions=1, aggregator=GROUP), ops=[], partitions=2, grouped=True)]),
    ops=[], output=ResultWrite())
HELD_WHOLE = StageSpec(partitions=2, input=PersistedInput("whole", 2), ops=[], output=ResultWrite())


def executor(**settings: object) -> Executor:
    ex = Executor("e1", ME, Settings(shuffle_fetch_timeout=3.0).replace(**settings))
    ex.register()
    return ex


def task(job_id: str, partition: int = 1, spec: StageSpec = SPEC, **persisted: str) -> TaskDescriptor:
    return TaskDescriptor(job_id=job_id, stage_id=1, partition=partition, stage_key=spec.key(), persisted=persisted)


def launch_group(ex: Executor, *tasks: TaskDescriptor, spec: StageSpec = SPEC, group_id: int = 1) -> list[Instruction]:
    return ex.launch_group(LaunchGroup(group_id=group_id, tasks=list(tasks), stages={spec.key(): spec}))


def launch_bsp(ex: Executor, t: TaskDescriptor, spec: StageSpec = SPEC) -> list[Instruction]:
    return ex.launch(LaunchTasks(tasks=[t], stages={spec.key(): spec}))


def push(ex: Executor, job_id: str, shuffle_id: int, map_partition: int, reduce_partition: int = 1) -> list[Instruction]:
    msg = PushBlocks(job_id=job_id, shuffle_id=shuffle_id, map_partition=map_partition, reduce_partitions=[reduce_partition])
    return ex.pushed(msg, [b"block"])


def to_meta(instructions: list[Instruction], kind: type) -> list:
    return [i.msg for i in instructions if isinstance(i, ToShuffleMeta) and isinstance(i.msg, kind)]


def computed(ex: Executor, block: bytes = b"d1", job_id: str = "j1", partition: int = 1) -> list[Instruction]:
    """A Drizzle task of `job_id` computes partition `partition` of "d" (its lineage's shuffle
    pushed to it) and comes back with the block."""
    t = task(job_id, partition)
    launch_group(ex, t)
    push(ex, job_id, 7, 0, partition)
    assert runs(push(ex, job_id, 7, 1, partition)) == [t]
    return ex.task_done(t, TaskOutput(blocks=[b"result"], is_result=True, persisted=[("d", partition, 2, block)]))


def test_a_computed_block_is_kept_and_registered_before_the_task_is_reported():
    ex = executor()
    out = computed(ex, b"d1")
    (register,) = to_meta(out, RegisterPersisted)
    assert register == RegisterPersisted(executor_id="e1", address=ME, blocks=[PersistedBlock("d", 1, 2, 2)])
    report = next(i for i, a in enumerate(out) if isinstance(a, ToScheduler) and isinstance(a.msg, ResultPartition))
    assert out.index(ToShuffleMeta(register)) < report
    assert ex.persisted.get("d", 1) == b"d1"
    assert {k: v for k, v in ex.state.tracked().items() if k in ("persisted_blocks", "persisted_bytes")} == \
        {"persisted_blocks": 1, "persisted_bytes": 2}


def test_bsp_registers_before_task_finished_too():
    ex = executor()
    t = task("j1", spec=HELD_WHOLE, whole=ME)  # any task: what counts is the block it comes back with
    ex.persisted.keep([("whole", 1, 2, b"w")])
    assert runs(launch_bsp(ex, t, HELD_WHOLE)) == [t]
    out = ex.task_done(t, TaskOutput(blocks=[b"r"], is_result=True, persisted=[("other", 0, 1, b"o")]))
    kinds = [type(a.msg) for a in out if isinstance(a, ToShuffleMeta | ToScheduler)]
    assert kinds.index(RegisterPersisted) < kinds.index(TaskFinished)


def test_a_task_told_its_block_is_here_reads_it_from_memory_and_waits_for_no_shuffle():
    ex = executor()
    computed(ex, b"d1")
    t = task("j2", d=ME)
    (run,) = [a for a in launch_group(ex, t, group_id=2) if isinstance(a, RunTask)]
    assert run.task == t and run.persisted == {"d": b"d1"} and run.inputs == []
    assert ex.inputs.readers == {}  # shuffle 7 is the lineage's: not read
    bsp = task("j3", d=ME)
    ex.task_done(t, TaskOutput(blocks=[b"r"], is_result=True))
    assert only(launch_bsp(ex, bsp), RunTask).persisted == {"d": b"d1"}  # no look-up of shuffle 7 either


@pytest.mark.parametrize("mode", ["drizzle", "bsp"])
def test_a_block_no_longer_held_here_fails_the_task_with_kind_block_naming_it(mode: str):
    ex = executor()
    t = task("j2", d=ME)
    out = launch_group(ex, t) if mode == "drizzle" else launch_bsp(ex, t)
    (failed,) = to_scheduler(out, TaskFailed)
    assert (failed.kind, failed.error_type, failed.partition) == ("block", "BlockLost", 1)
    assert "partition 1 of persisted dataset d" in failed.message and ME in failed.message
    assert runs(out) == [] and ex.tasks == {}


def test_a_block_held_elsewhere_is_fetched_from_its_holder_and_the_task_runs_with_it():
    ex = executor()
    t = task("j2", d=HOLDER)
    out = launch_group(ex, t)
    fetch = only(out, ToPeer)
    assert fetch.address == HOLDER and isinstance(fetch.msg, FetchPersisted)
    assert (fetch.msg.dataset_id, fetch.msg.partition) == ("d", 1)
    (run,) = [a for a in ex.feed(received(PersistedData(request_id=fetch.msg.request_id), [b"remote"])) if isinstance(a, RunTask)]
    assert run.task == t and run.persisted == {"d": b"remote"}


def test_a_cogroup_task_runs_once_its_fetched_block_and_its_other_shuffle_are_both_in():
    ex = executor()
    t = task("j2", spec=COGROUP, d=HOLDER)
    fetch = only(launch_group(ex, t, spec=COGROUP), ToPeer).msg
    assert set(ex.inputs.readers) == {("j2", 8, 1)}  # shuffle 8; not shuffle 7, below the block
    answer = ex.feed(received(PersistedData(request_id=fetch.request_id), [b"remote"]))
    assert runs(answer) == []  # shuffle 8 is not in yet
    (run,) = [a for a in push(ex, "j2", 8, 0) if isinstance(a, RunTask)]
    assert run.persisted == {"d": b"remote"} and run.inputs == [b"block"]


def test_a_holder_without_the_block_fails_the_task_with_kind_block():
    ex = executor()
    t = task("j2", spec=COGROUP, d=HOLDER)
    fetch = only(launch_group(ex, t, spec=COGROUP), ToPeer).msg
    out = ex.request_failed(ErrorReply(reason="not held there", request_id=fetch.request_id))
    (failed,) = to_scheduler(out, TaskFailed)
    assert (failed.kind, failed.error_type) == ("block", "BlockLost")
    assert HOLDER in failed.message and "not held there" in failed.message and "dataset d" in failed.message
    assert ex.inputs.readers == {} and ex.block_reads.waiting == {}
    assert push(ex, "j2", 8, 0) == []  # nothing waits for shuffle 8 any more


def test_a_holder_that_does_not_answer_in_time_fails_the_task_with_kind_block():
    ex = executor()
    fetch = only(launch_group(ex, task("j2", d=HOLDER)), ToPeer).msg  # at time 0
    assert to_scheduler(ex.tick(2.9), TaskFailed) == []
    (failed,) = to_scheduler(ex.tick(3.0), TaskFailed)
    assert failed.kind == "block" and HOLDER in failed.message and "3s" in failed.message
    assert ex.feed(received(PersistedData(request_id=fetch.request_id), [b"late"])) == []  # a late answer finds nothing


def test_a_released_job_drops_its_fetch_and_a_late_answer_finds_nothing():
    ex = executor()
    fetch = only(launch_group(ex, task("j2", d=HOLDER)), ToPeer).msg
    ex.release_jobs(["j2"])
    assert ex.block_reads.waiting == {}
    assert ex.feed(received(PersistedData(request_id=fetch.request_id), [b"late"])) == []


def test_a_persisted_partition_with_no_lineage_the_task_was_not_told_of_fails_it_at_once():
    ex = executor()
    (failed,) = to_scheduler(launch_group(ex, task("j2", spec=HELD_WHOLE), spec=HELD_WHOLE), TaskFailed)
    assert (failed.kind, failed.error_type) == ("block", "BlockLost") and "dataset whole" in failed.message


def test_peers_fetches_are_served_from_the_store_or_refused():
    ex = executor()
    computed(ex, b"d1")
    (served,) = ex.feed(received(FetchPersisted(request_id=4, dataset_id="d", partition=1), peer=b"peer"))
    assert served == Send(b"peer", PersistedData(request_id=4), (b"d1",))
    (refused,) = ex.feed(received(FetchPersisted(request_id=5, dataset_id="d", partition=0), peer=b"peer"))
    assert isinstance(refused.msg, ErrorReply) and refused.msg.request_id == 5 and "partition 0 of persisted dataset d" in refused.msg.reason


def test_blocks_pushed_out_of_the_budget_are_unregistered_and_one_too_large_is_reported():
    ex = executor(persist_memory=10)
    computed(ex, b"x" * 6, job_id="j1", partition=0)
    out = computed(ex, b"y" * 6, job_id="j2", partition=1)
    assert to_meta(out, DroppedPersisted) == [DroppedPersisted(executor_id="e1", blocks=[PersistedBlock("d", 0, 2, 6)])]
    assert [b.partition for m in to_meta(out, RegisterPersisted) for b in m.blocks] == [1]
    kinds = [type(a.msg) for a in out if isinstance(a, ToShuffleMeta)]
    assert kinds == [DroppedPersisted, RegisterPersisted]
    too_large = computed(ex, b"z" * 11, job_id="j3", partition=0)
    assert to_meta(too_large, RegisterPersisted) == [] and to_meta(too_large, DroppedPersisted) == []
    (warning,) = [a for a in too_large if isinstance(a, Log) and a.event == "persisted_block_too_large"]
    assert warning.level == "warning" and warning.fields["dataset"] == "d"


def test_unpersisted_datasets_go_and_a_block_of_theirs_coming_back_later_is_not_kept():
    ex = executor()
    computed(ex, b"d1")
    assert ex.feed(from_scheduler(ForgetPersisted(dataset_ids=["d"]))) == []
    assert ex.persisted.get("d", 1) is None
    assert to_meta(computed(ex, b"again", job_id="j2"), RegisterPersisted) == []


def test_a_restarted_block_directory_hears_of_every_block_again():
    ex = executor()
    computed(ex, b"d1")
    out = ex.feed(ShuffleMetaRestarted(now=1.0, stimulus_id="test-restarted"))
    assert to_meta(out, RegisterPersisted) == [RegisterPersisted(executor_id="e1", address=ME, blocks=[PersistedBlock("d", 1, 2, 2)])]


def test_when_the_scheduler_writes_this_executor_off_its_blocks_go_and_the_directory_hears_of_it():
    ex = executor()
    computed(ex, b"d1")
    out = ex.forgotten(now=1.0)
    assert to_meta(out, DroppedPersisted) == [DroppedPersisted(executor_id="e1", blocks=[PersistedBlock("d", 1, 2, 2)])]
    assert ex.persisted.get("d", 1) is None
    assert to_meta(ex.forgotten(now=1.5), DroppedPersisted) == []  # registering again already: nothing more to say
