"""squall.services.executor.state in BSP mode (LaunchTasks): launch, shuffle input gathering (look-up and
fetch), block serving, completion, release, reset. Drizzle mode is in test_executor_groups.py."""

from __future__ import annotations

import pytest
from squall.common.core import Send
from squall.common.plan import StageSpec
from squall.common.protocol import (
    Blocks,
    ErrorReply,
    FetchBlocks,
    LaunchTasks,
    LookupMapOutputs,
    MapLocation,
    MapOutput,
    MapOutputs,
    RegisterExecutor,
    RegisterMapOutputs,
    TaskDescriptor,
    TaskFailed,
    TaskFinished,
)
from squall.common.settings import Settings
from squall.services.executor.instructions import DiscardWork, Reconnect, RunTask, ToPeer, ToScheduler, ToShuffleMeta
from squall.services.executor.reports import Failure
from squall.services.executor.tasks import TaskOutput

from tests.unit.executor_fixtures import ME, Executor, map_spec, only, reduce_spec

MAP_SPEC = map_spec(reduces=3)
REDUCE_SPEC = reduce_spec(maps=4, reduces=3)
CODE = {"fn": b"pickled fn"}


def executor() -> Executor:
    return Executor("e1", ME, Settings(shuffle_lookup_timeout=2.0, shuffle_fetch_timeout=3.0))


def task(spec: StageSpec, stage_id: int, partition: int, job_id: str = "j") -> TaskDescriptor:
    return TaskDescriptor(job_id=job_id, stage_id=stage_id, partition=partition, stage_key=spec.key())


def launch(ex: Executor, spec: StageSpec, t: TaskDescriptor, now: float = 0.0, send_code: bool = True) -> list:
    msg = LaunchTasks(tasks=[t], stages={spec.key(): spec}, code=CODE) if send_code else LaunchTasks(tasks=[t])
    return ex.launch(msg, now)


def running_key(ex: Executor):
    return ex.running.key if ex.running is not None else None


def loc(part: int, executor_id: str, address: str) -> MapLocation:
    return MapLocation(map_partition=part, executor_id=executor_id, address=address, sizes=[1, 1, 1])


def start_reduce(ex: Executor, partition: int = 1, now: float = 0.0) -> tuple[TaskDescriptor, int]:
    t = task(REDUCE_SPEC, 1, partition)
    lookup = only(launch(ex, REDUCE_SPEC, t, now), ToShuffleMeta).msg
    return t, lookup.request_id


def test_source_task_runs_at_once():
    ex = executor()
    t = task(MAP_SPEC, 0, 1)
    assert launch(ex, MAP_SPEC, t) == [RunTask(t, MAP_SPEC, [])]
    assert running_key(ex) == ("j", 0, 1)
    assert ex.stages[MAP_SPEC.key()] == MAP_SPEC
    assert ex.code == CODE


def test_shuffle_read_task_looks_up_map_outputs():
    ex = executor()
    t = task(REDUCE_SPEC, 1, 2)
    lookup = only(launch(ex, REDUCE_SPEC, t), ToShuffleMeta).msg
    assert isinstance(lookup, LookupMapOutputs)
    assert (lookup.job_id, lookup.shuffle_id, lookup.expected, lookup.timeout) == ("j", 7, 4, 2.0)
    assert ("j", 1, 2) in ex.tasks and ex.running is None


def test_missing_stage_code_fails_the_task_with_kind_code():
    ex = executor()
    t = task(MAP_SPEC, 0, 0)
    failed = only(launch(ex, MAP_SPEC, t, send_code=False), ToScheduler).msg
    assert isinstance(failed, TaskFailed)
    assert failed.kind == "code" and failed.error_type == "MissingCode"
    assert MAP_SPEC.key() in failed.message
    assert ex.running is None and not ex.tasks


def test_cached_code_is_used_when_later_launches_omit_it():
    ex = executor()
    first = task(MAP_SPEC, 0, 0)
    launch(ex, MAP_SPEC, first)
    t = task(MAP_SPEC, 0, 1, job_id="j2")
    assert launch(ex, MAP_SPEC, t, send_code=False) == []  # the runner is busy: one task at a time
    actions = ex.task_done(first, TaskOutput(blocks=[b"", b"", b""], is_result=False), 1.0)
    assert only(actions, RunTask) == RunTask(t, MAP_SPEC, [])
    assert ex.code == CODE


def test_runner_gets_one_task_at_a_time_in_arrival_order():
    ex = executor()
    ts = [task(MAP_SPEC, 0, p, job_id=f"j{p}") for p in range(3)]
    actions = ex.launch(LaunchTasks(tasks=ts, stages={MAP_SPEC.key(): MAP_SPEC}, code=CODE), 0.0)
    assert [a.task for a in actions if isinstance(a, RunTask)] == [ts[0]]
    out = TaskOutput(blocks=[b"", b"", b""], is_result=False)
    assert [a.task for a in ex.task_done(ts[0], out, 1.0) if isinstance(a, RunTask)] == [ts[1]]
    assert ex.task_done(ts[0], out, 1.0) == []  # a duplicate completion changes nothing
    assert [a.task for a in ex.task_done(ts[1], out, 1.0) if isinstance(a, RunTask)] == [ts[2]]
    assert not [a for a in ex.task_done(ts[2], out, 1.0) if isinstance(a, RunTask)]
    assert ex.running is None and not ex.tasks


def test_map_outputs_take_local_blocks_and_fetch_remote_ones_per_address():
    ex = executor()
    ex.outputs.blocks[("j", 7, 3)] = [b"L0", b"L1", b"L2"]
    t, rid = start_reduce(ex, partition=1)
    locations = [loc(0, "e2", "tcp://b:1"), loc(1, "e3", "tcp://a:1"), loc(2, "e2", "tcp://b:1"), loc(3, "e1", ME)]
    actions = ex.map_outputs(MapOutputs(request_id=rid, locations=locations), 1.0)
    fetches = {a.address: a.msg for a in actions if isinstance(a, ToPeer)}
    assert len(actions) == 2 and set(fetches) == {"tcp://a:1", "tcp://b:1"}
    assert fetches["tcp://b:1"].map_partitions == [0, 2]
    assert fetches["tcp://a:1"].map_partitions == [1]
    for f in fetches.values():
        assert (f.job_id, f.shuffle_id, f.reduce_partition) == ("j", 7, 1)
    assert fetches["tcp://a:1"].request_id != fetches["tcp://b:1"].request_id
    assert ex.tasks[("j", 1, 1)].inputs == {7: {3: b"L1"}}  # the reduce partition's local block, of shuffle 7
    assert ex.running is None


def test_blocks_completing_inputs_run_the_task_in_map_partition_order():
    ex = executor()
    ex.outputs.blocks[("j", 7, 3)] = [b"L0", b"L1", b"L2"]
    t, rid = start_reduce(ex, partition=1)
    locations = [loc(0, "e2", "tcp://b:1"), loc(1, "e3", "tcp://a:1"), loc(2, "e2", "tcp://b:1"), loc(3, "e1", ME)]
    fetches = {a.address: a.msg for a in ex.map_outputs(MapOutputs(request_id=rid, locations=locations), 1.0)}
    b = fetches["tcp://b:1"]
    assert ex.blocks(Blocks(request_id=b.request_id, map_partitions=[2, 0]), [b"B2", b"B0"], 1.0) == []
    a = fetches["tcp://a:1"]
    run = only(ex.blocks(Blocks(request_id=a.request_id, map_partitions=[1]), [b"A1"], 1.0), RunTask)
    assert run.task == t and run.spec == REDUCE_SPEC
    assert run.inputs == [b"B0", b"A1", b"B2", b"L1"]
    assert running_key(ex) == ("j", 1, 1)
    # a duplicate answer to a finished request is ignored
    assert ex.blocks(Blocks(request_id=a.request_id, map_partitions=[1]), [b"A1"], 1.0) == []


def test_all_local_outputs_run_without_fetching():
    ex = executor()
    for m in range(4):
        ex.outputs.blocks[("j", 7, m)] = [f"{m}-{r}".encode() for r in range(3)]
    t, rid = start_reduce(ex, partition=2)
    actions = ex.map_outputs(MapOutputs(request_id=rid, locations=[loc(m, "e1", ME) for m in range(4)]), 1.0)
    assert actions == [RunTask(t, REDUCE_SPEC, [b"0-2", b"1-2", b"2-2", b"3-2"])]


def test_local_output_missing_from_store_fails_the_task():
    ex = executor()
    t, rid = start_reduce(ex)
    failed = only(ex.map_outputs(MapOutputs(request_id=rid, locations=[loc(0, "e1", ME)]), 1.0), ToScheduler).msg
    assert failed.kind == "fetch" and "not in the local block store" in failed.message


def test_error_reply_to_a_fetch_fails_the_task_with_kind_fetch():
    ex = executor()
    t, rid = start_reduce(ex)
    locations = [loc(m, "e2", "tcp://b:1") for m in range(3)] + [loc(3, "e3", "tcp://a:1")]
    fetches = [a.msg for a in ex.map_outputs(MapOutputs(request_id=rid, locations=locations), 1.0)]
    failed = only(ex.request_failed(ErrorReply(reason="peer has no block", request_id=fetches[0].request_id)), ToScheduler).msg
    assert isinstance(failed, TaskFailed)
    assert failed.kind == "fetch" and failed.message == "peer has no block"
    assert (failed.job_id, failed.stage_id, failed.partition) == ("j", 1, t.partition)
    assert not ex.tasks
    # the other fetch's late answer is ignored, as is an unknown request id
    assert ex.blocks(Blocks(request_id=fetches[1].request_id, map_partitions=[3]), [b"x"], 1.0) == []
    assert ex.request_failed(ErrorReply(reason="?", request_id=999)) == []


def test_lookup_timeout_fails_the_task():
    ex = executor()
    start_reduce(ex, now=10.0)
    assert ex.tick(11.9) == []
    failed = only(ex.tick(12.0), ToScheduler).msg
    assert failed.kind == "fetch" and "timed out waiting for map output locations" in failed.message
    assert ex.tick(20.0) == [] and not ex.tasks


def test_fetch_timeout_names_shuffle_blocks():
    ex = executor()
    t, rid = start_reduce(ex, now=0.0)
    ex.map_outputs(MapOutputs(request_id=rid, locations=[loc(m, "e2", "tcp://b:1") for m in range(4)]), 1.0)
    assert ex.tick(3.5) == []  # the fetch deadline restarted at 1.0
    failed = only(ex.tick(4.0), ToScheduler).msg
    assert "timed out waiting for shuffle blocks" in failed.message


def test_serve_fetch_returns_blocks_or_an_error():
    ex = executor()
    ex.outputs.blocks[("j", 7, 0)] = [b"a0", b"a1"]
    ex.outputs.blocks[("j", 7, 2)] = [b"c0", b"c1"]
    reply = only(ex.serve_fetch(b"peer", FetchBlocks(request_id=5, job_id="j", shuffle_id=7, reduce_partition=1,
                                                     map_partitions=[2, 0])), Send)
    assert reply.peer == b"peer"
    assert reply.msg == Blocks(request_id=5, map_partitions=[2, 0])
    assert reply.payloads == (b"c1", b"a1")
    missing = only(ex.serve_fetch(b"peer", FetchBlocks(request_id=6, job_id="j", shuffle_id=7, reduce_partition=0,
                                                       map_partitions=[0, 1])), Send)
    assert isinstance(missing.msg, ErrorReply) and missing.msg.request_id == 6
    assert "map 1" in missing.msg.reason
    out_of_range = only(ex.serve_fetch(b"p", FetchBlocks(request_id=7, job_id="j", shuffle_id=7, reduce_partition=2,
                                                         map_partitions=[0])), Send)
    assert isinstance(out_of_range.msg, ErrorReply)


def test_map_task_done_stores_blocks_and_registers_the_output():
    ex = executor()
    t = task(MAP_SPEC, 0, 1)
    launch(ex, MAP_SPEC, t, now=1.0)
    actions = ex.task_done(t, TaskOutput(blocks=[b"r0", b"r11", b""], is_result=False), 1.5)
    assert ex.outputs.blocks[("j", 7, 1)] == [b"r0", b"r11", b""]
    register = only(actions, ToShuffleMeta).msg
    location = MapLocation(map_partition=1, executor_id="e1", address=ME, sizes=[2, 3, 0])
    assert register == RegisterMapOutputs(outputs=[MapOutput(job_id="j", shuffle_id=7, location=location)])  # BSP: at once
    done = only(actions, ToScheduler)
    assert done.payloads == ()
    assert isinstance(done.msg, TaskFinished) and not done.msg.has_result
    assert done.msg.output_bytes == 5 and done.msg.elapsed == pytest.approx(0.5)
    assert ex.running is None and not ex.tasks
    assert not [a for a in actions if isinstance(a, ToPeer)]  # BSP: nothing is pushed


def test_result_task_done_carries_the_payload():
    ex = executor()
    t, rid = start_reduce(ex)
    for m in range(4):
        ex.outputs.blocks[("j", 7, m)] = [b"", b"x", b""]
    ex.map_outputs(MapOutputs(request_id=rid, locations=[loc(m, "e1", ME) for m in range(4)]), 0.0)
    actions = ex.task_done(t, TaskOutput(blocks=[b"\x00result"], is_result=True), 1.0)
    done = only(actions, ToScheduler)
    assert isinstance(done.msg, TaskFinished)  # BSP reports the task itself, with its records
    assert done.msg.has_result and done.payloads == (b"\x00result",)
    assert not [a for a in actions if isinstance(a, ToShuffleMeta)]


def test_failed_task_is_reported_with_its_traceback():
    ex = executor()
    t = task(MAP_SPEC, 0, 0)
    launch(ex, MAP_SPEC, t)
    failed = only(ex.task_done(t, Failure("task", "KeyError", "'k'", "Traceback ..."), 1.0), ToScheduler).msg
    assert (failed.kind, failed.error_type, failed.message, failed.traceback) == ("task", "KeyError", "'k'", "Traceback ...")
    assert ("j", 7, 0) not in ex.outputs.blocks


def test_release_job_drops_blocks_and_cancels_waiting_tasks():
    ex = executor()
    ex.outputs.blocks[("j", 7, 0)] = [b"a"]
    ex.outputs.blocks[("other", 7, 0)] = [b"b"]
    t, rid = start_reduce(ex)
    actions = ex.release_jobs(["j"], 1.0)
    assert set(ex.outputs.blocks) == {("other", 7, 0)}
    cancelled = only(actions, ToScheduler).msg
    assert isinstance(cancelled, TaskFailed) and cancelled.error_type == "Cancelled"
    assert (cancelled.stage_id, cancelled.partition) == (1, t.partition)
    assert not ex.tasks
    assert ex.map_outputs(MapOutputs(request_id=rid, locations=[]), 1.0) == []  # late answer ignored


def test_task_running_during_release_reports_without_payload_or_blocks():
    ex = executor()
    m = task(MAP_SPEC, 0, 0)
    launch(ex, MAP_SPEC, m)
    assert ex.release_jobs(["j"], 0.5) == []
    actions = ex.task_done(m, TaskOutput(blocks=[b"a", b"b", b"c"], is_result=False), 1.0)
    done = only(actions, ToScheduler)
    assert isinstance(done.msg, TaskFinished) and not done.msg.has_result and done.payloads == ()
    assert actions == [done]  # no RegisterMapOutputs
    assert not ex.outputs.blocks and ex.running is None


def test_release_of_several_jobs_starts_the_next_task_of_another_job():
    ex = executor()
    ts = [task(MAP_SPEC, 0, 0, job_id=j) for j in ("a", "b", "c")]
    ex.launch(LaunchTasks(tasks=ts, stages={MAP_SPEC.key(): MAP_SPEC}, code=CODE), 0.0)  # "a" runs
    cancelled = [a.msg for a in ex.release_jobs(["b", "zzz"], 1.0) if isinstance(a, ToScheduler)]
    assert [(m.job_id, m.error_type) for m in cancelled] == [("b", "Cancelled")]
    actions = ex.task_done(ts[0], TaskOutput(blocks=[b"", b"", b""], is_result=False), 2.0)
    assert only(actions, RunTask).task == ts[2]


def test_reset_forgets_everything_and_late_results_are_dropped():
    ex = executor()
    ex.register()
    t = task(MAP_SPEC, 0, 0)
    launch(ex, MAP_SPEC, t)
    ex.outputs.blocks[("j", 7, 1)] = [b"x"]
    actions = ex.forgotten(0.5)
    assert not ex.code and not ex.stages and not ex.outputs.blocks and ex.running is None and not ex.tasks
    # the runner's results and tables from before are written off; the scheduler hears from us again
    assert [type(a) for a in actions if isinstance(a, Reconnect | DiscardWork)] == [Reconnect, DiscardWork]
    assert isinstance(only(actions, ToScheduler).msg, RegisterExecutor)
    assert ex.task_done(t, TaskOutput(blocks=[b""] * 3, is_result=False), 1.0) == []
