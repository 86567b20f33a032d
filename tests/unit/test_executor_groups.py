"""squall.services.executor.state in Drizzle mode (LaunchGroup): local order, pushes to pre-scheduled
reducers (inline, or a ready-notice answered with a fetch), results, and one GroupDone per group."""

from __future__ import annotations

import pytest
from squall.common import protocol
from squall.common.settings import Settings
from squall.services.executor.instructions import Connect, RunTask, ToPeer, ToScheduler, ToShuffleMeta
from squall.services.executor.reports import Failure
from squall.services.executor.tasks import TaskOutput

from tests.unit.executor_fixtures import ME, Executor, map_spec, reduce_spec, runs, to_scheduler

MAP_SPEC = map_spec(reduces=4)
REDUCE_SPEC = reduce_spec(maps=2, reduces=4)
A, B = "tcp://a:1", "tcp://b:1"
PUSH_TO = [ME, A, B, A]  # reduce partition r lives at PUSH_TO[r]
CODE = {"fn": b"pickled fn"}


def executor(**settings) -> Executor:
    return Executor("e1", ME, Settings(shuffle_fetch_timeout=3.0, **settings))


def mapper(partition: int, job_id: str = "j", batch: int = 0, push_to=PUSH_TO) -> protocol.TaskDescriptor:
    return protocol.TaskDescriptor(job_id=job_id, stage_id=0, partition=partition, stage_key=MAP_SPEC.key(), batch=batch, push_to=list(push_to))


def reducer(partition: int = 0, job_id: str = "j", batch: int = 0) -> protocol.TaskDescriptor:
    return protocol.TaskDescriptor(job_id=job_id, stage_id=1, partition=partition, stage_key=REDUCE_SPEC.key(), batch=batch)


def launch(ex: Executor, *tasks: protocol.TaskDescriptor, group_id: int = 1, now: float = 0.0, barrier: bool = False) -> list:
    stages = {MAP_SPEC.key(): MAP_SPEC, REDUCE_SPEC.key(): REDUCE_SPEC}
    return ex.launch_group(protocol.LaunchGroup(group_id=group_id, tasks=list(tasks), stages=stages, code=CODE, barrier=barrier), now)


def push(ex: Executor, map_partition: int, block: bytes, job_id: str = "j", reduce_partition: int = 0, now: float = 0.0) -> list:
    msg = protocol.PushBlocks(job_id=job_id, shuffle_id=7, map_partition=map_partition, reduce_partitions=[reduce_partition])
    return ex.pushed(msg, [block], now)


def map_out(*blocks: bytes) -> TaskOutput:
    return TaskOutput(blocks=list(blocks) or [b"b0", b"b1", b"b2", b"b3"], is_result=False)


def test_a_map_runs_first_only_when_no_reducer_is_runnable():
    ex = executor()
    m0, m1, r0 = mapper(0), mapper(1), reducer(0)
    assert runs(launch(ex, r0, m0, m1)) == [m0]  # the reducer still waits for its inputs
    ex2 = executor()
    push(ex2, 0, b"x0")
    push(ex2, 1, b"x1")  # every input arrived before the launch
    assert runs(launch(ex2, m0, m1, r0)) == [r0]  # listed last, yet it goes first


def test_map_done_pushes_to_each_remote_address_and_delivers_locally():
    ex = executor()
    m0, r0 = mapper(0), reducer(0)
    launch(ex, r0, m0)
    actions = ex.task_done(m0, map_out(b"b0", b"b1", b"b2", b"b3"), 1.0)
    pushes = {a.address: a for a in actions if isinstance(a, ToPeer)}
    assert len(pushes) == 2 == len([a for a in actions if isinstance(a, ToPeer)])  # one message per address
    assert pushes[A].msg == protocol.PushBlocks(job_id="j", shuffle_id=7, map_partition=0, reduce_partitions=[1, 3])
    assert pushes[A].payloads == (b"b1", b"b3")
    assert pushes[B].msg == protocol.PushBlocks(job_id="j", shuffle_id=7, map_partition=0, reduce_partitions=[2])
    assert pushes[B].payloads == (b"b2",)
    assert ex.tasks[r0.key].inputs == {7: {0: b"b0"}}  # the local reducer's block, without a message
    assert ex.outputs.blocks[("j", 7, 0)] == [b"b0", b"b1", b"b2", b"b3"]  # kept for fetches
    assert not [a for a in actions if isinstance(a, ToShuffleMeta)]  # locations wait for the group's end
    assert not to_scheduler(actions, protocol.TaskFinished)  # Drizzle: no per-task report
    for a in actions:
        if isinstance(a, ToPeer):
            protocol.encode(a.msg, a.payloads)


def test_blocks_over_the_inline_limit_send_a_ready_notice_instead():
    ex = executor(push_inline_max_bytes=10)
    m0 = mapper(0)
    launch(ex, m0)
    actions = ex.task_done(m0, map_out(b"x" * 50, b"y" * 6, b"z" * 11, b"w" * 4), 1.0)
    peers = {a.address: a for a in actions if isinstance(a, ToPeer)}
    assert peers[A].msg == protocol.PushBlocks(job_id="j", shuffle_id=7, map_partition=0, reduce_partitions=[1, 3])  # 10 bytes: pushed
    assert peers[A].payloads == (b"y" * 6, b"w" * 4)
    assert peers[B].msg == protocol.BlocksReady(job_id="j", shuffle_id=7, map_partition=0, reduce_partitions=[2], address=ME)
    assert peers[B].payloads == ()
    assert ex.tasks == {}  # the local 50-byte block had no reducer here: it simply waits in the inbox


def test_the_inline_limit_applies_to_all_blocks_for_one_address_together():
    ex = executor(push_inline_max_bytes=10)
    m0 = mapper(0, push_to=[A, A, B, B])
    launch(ex, m0)
    actions = ex.task_done(m0, map_out(b"a" * 6, b"a" * 5, b"b" * 5, b"b" * 5), 1.0)
    peers = {a.address: a.msg for a in actions if isinstance(a, ToPeer)}
    assert isinstance(peers[A], protocol.BlocksReady) and peers[A].reduce_partitions == [0, 1]  # 11 bytes together
    assert isinstance(peers[B], protocol.PushBlocks) and peers[B].reduce_partitions == [2, 3]


def test_blocks_too_large_for_a_message_send_a_ready_notice():
    ex = executor(max_message_bytes=1024)  # inline limit is 1 MiB, but a message holds less than 1 KiB
    m0 = mapper(0, push_to=[A, A, B, B])
    launch(ex, m0)
    actions = ex.task_done(m0, map_out(b"a" * 400, b"a" * 400, b"b" * 10, b"b" * 10), 1.0)
    peers = {a.address: a.msg for a in actions if isinstance(a, ToPeer)}
    assert isinstance(peers[A], protocol.BlocksReady) and peers[A].reduce_partitions == [0, 1]
    assert isinstance(peers[B], protocol.PushBlocks) and peers[B].reduce_partitions == [2, 3]


def test_pushes_completing_a_reducer_run_it_with_inputs_in_map_partition_order():
    ex = executor()
    r0 = reducer(0)
    assert launch(ex, r0) == []
    assert push(ex, 1, b"from-1") == []
    actions = push(ex, 0, b"from-0")
    assert [(a.task, a.spec, a.inputs) for a in actions if isinstance(a, RunTask)] == [(r0, REDUCE_SPEC, [b"from-0", b"from-1"])]


def test_a_reducer_completed_while_a_map_runs_goes_next():
    ex = executor()
    m0, m1, r0 = mapper(0, job_id="k"), mapper(1, job_id="k"), reducer(0)
    assert runs(launch(ex, r0, m0, m1)) == [m0]
    push(ex, 0, b"a")
    assert push(ex, 1, b"b") == []  # the runner is busy: one task at a time
    assert runs(ex.task_done(m0, map_out(), 1.0)) == [r0]  # ahead of the map that was waiting


def test_pushes_arriving_before_the_launch_are_kept_and_used():
    ex = executor()
    assert push(ex, 1, b"early") == []
    r0 = reducer(0)
    assert launch(ex, r0) == []
    run = [a for a in push(ex, 0, b"late") if isinstance(a, RunTask)]
    assert len(run) == 1 and run[0].inputs == [b"late", b"early"]


def test_pushes_for_released_jobs_are_dropped():
    ex = executor()
    launch(ex, reducer(0, job_id="old"))
    ex.release_jobs(["old"], 1.0)
    assert push(ex, 0, b"late", job_id="old") == []
    assert ex.inputs.inbox.claim(("old", 7, 0)) == {}  # not kept
    assert not ex.tasks


def test_result_task_done_sends_the_result_partition_with_its_payload():
    ex = executor()
    r2 = reducer(2)
    launch(ex, r2)
    push(ex, 0, b"a", reduce_partition=2)
    push(ex, 1, b"b", reduce_partition=2)
    actions = ex.task_done(r2, TaskOutput(blocks=[b"\x00rows"], is_result=True), 1.0)
    (result,) = [a for a in actions if isinstance(a, ToScheduler) and isinstance(a.msg, protocol.ResultPartition)]
    assert result.msg == protocol.ResultPartition(executor_id="e1", job_id="j", partition=2, partitions=4)
    assert result.payloads == (b"\x00rows",)
    protocol.encode(result.msg, result.payloads)
    assert not to_scheduler(actions, protocol.TaskFinished)
    assert [(m.tasks, m.results) for m in to_scheduler(actions, protocol.GroupDone)] == [(1, {})]


def test_a_result_task_told_where_the_driver_is_sends_its_partition_there_and_the_report_says_so():
    ex = executor()
    driver = "tcp://driver:9"
    r2 = protocol.TaskDescriptor(job_id="j~3", stage_id=1, partition=2, stage_key=REDUCE_SPEC.key(), attempt=3, result_to=driver)
    launch(ex, r2)
    push(ex, 0, b"a", job_id="j~3", reduce_partition=2)
    push(ex, 1, b"b", job_id="j~3", reduce_partition=2)
    actions = ex.task_done(r2, TaskOutput(blocks=[b"\x00rows"], is_result=True), 1.0)
    (sent,) = [a for a in actions if isinstance(a, ToPeer)]
    assert sent.address == driver and sent.payloads == (b"\x00rows",)
    assert sent.msg == protocol.ResultPartition(executor_id="e1", job_id="j~3", partition=2, attempt=3, partitions=4)
    assert not to_scheduler(actions, protocol.ResultPartition)  # the scheduler never sees the block
    (done,) = to_scheduler(actions, protocol.GroupDone)
    assert done.results == {"j~3": [2]}
    assert actions.index(sent) < actions.index(next(a for a in actions if isinstance(a, ToScheduler) and a.msg is done))


def test_a_launch_connects_first_to_every_peer_its_tasks_will_send_to_but_itself():
    # Connections (and their handshakes) are made while the group waits for its batches, not
    # when a batch's blocks are ready: after executors join, that cost 30 ms on the first batch.
    ex = executor()
    driver = "tcp://driver:9"
    result = protocol.TaskDescriptor(job_id="j", stage_id=1, partition=1, stage_key=REDUCE_SPEC.key(), result_to=driver)
    actions = launch(ex, mapper(0), mapper(1, push_to=[ME, ME, ME, B]), result)
    assert isinstance(actions[0], Connect)
    assert actions[0].addresses == (A, B, driver)
    assert not [a for a in launch(ex, mapper(0, job_id="k", push_to=[ME] * 4), group_id=2) if isinstance(a, Connect)]
    # a replay pushes only to the reducers it runs again: the others' addresses are ""
    (connect,) = [a for a in launch(ex, mapper(1, job_id="k~1", push_to=["", A, "", ME]), group_id=3) if isinstance(a, Connect)]
    assert connect.addresses == (A,)


def test_group_done_once_when_every_task_here_is_finished_failed_or_released():
    ex = executor()
    m0, r0, other = mapper(0), reducer(0), reducer(1, job_id="gone")
    nxt = mapper(1, job_id="next", push_to=[A] * 4)
    log = launch(ex, r0, other, m0, group_id=5, now=0.0)
    log += ex.task_done(m0, map_out(), 0.5)  # finished (its local push lands at r0)
    log += ex.release_jobs(["gone"], 0.6)  # released while waiting
    assert not to_scheduler(log, protocol.GroupDone)
    log += push(ex, 1, b"p", now=0.7)
    assert runs(log) == [m0, r0]
    log += launch(ex, nxt, group_id=6, now=0.8)  # a later group arrives meanwhile
    log += ex.task_done(r0, Failure("task", "KeyError", "'k'"), 1.0)  # failed: reported, and counts
    done = to_scheduler(log, protocol.GroupDone)
    assert len(done) == 1
    assert (done[0].group_id, done[0].executor_id, done[0].tasks) == (5, "e1", 3)
    assert done[0].busy == pytest.approx(0.5 + 0.3)  # time spent running this group's tasks
    assert [m.job_id for m in to_scheduler(log, protocol.TaskFailed)] == ["j"]
    assert runs(log)[-1] == nxt
    assert to_scheduler(ex.release_jobs(["j"], 2.0), protocol.GroupDone) == []  # never a second one
    assert [m.group_id for m in to_scheduler(ex.task_done(nxt, map_out(), 2.0), protocol.GroupDone)] == [6]


def test_a_running_task_released_counts_when_it_ends_and_pushes_nothing():
    ex = executor()
    m0 = mapper(0)
    launch(ex, m0, group_id=3)
    assert ex.release_jobs(["j"], 0.5) == []
    actions = ex.task_done(m0, map_out(), 1.0)
    assert not [a for a in actions if isinstance(a, (ToPeer, ToShuffleMeta))] and not ex.outputs.blocks
    assert [m.group_id for m in to_scheduler(actions, protocol.GroupDone)] == [3]
    assert not to_scheduler(actions, protocol.TaskFinished)


def test_missing_stage_spec_fails_the_task_and_counts_toward_group_done():
    ex = executor()
    actions = ex.launch_group(protocol.LaunchGroup(group_id=2, tasks=[mapper(0)]), 0.0)  # stages never sent
    assert [(m.kind, m.error_type) for m in to_scheduler(actions, protocol.TaskFailed)] == [("code", "MissingCode")]
    assert [m.tasks for m in to_scheduler(actions, protocol.GroupDone)] == [1]
    assert not runs(actions)


def test_blocks_ready_is_answered_with_a_fetch_and_the_blocks_complete_the_inputs():
    ex = executor()
    r1 = reducer(1)
    launch(ex, r1)
    push(ex, 0, b"pushed", reduce_partition=1)
    notice = protocol.BlocksReady(job_id="j", shuffle_id=7, map_partition=1, reduce_partitions=[1], address=B)
    (fetch,) = ex.blocks_ready(notice, 1.0)
    assert isinstance(fetch, ToPeer) and fetch.address == B
    assert fetch.msg == protocol.FetchBlocks(request_id=fetch.msg.request_id, job_id="j", shuffle_id=7, reduce_partition=1, map_partitions=[1])
    actions = ex.blocks(protocol.Blocks(request_id=fetch.msg.request_id, map_partitions=[1]), [b"fetched"], 1.5)
    assert [(a.task, a.inputs) for a in actions if isinstance(a, RunTask)] == [(r1, [b"pushed", b"fetched"])]
    assert ex.tick(100.0) == []  # the answered fetch has no deadline left


def test_fetch_deadline_expiry_fails_the_reducer():
    ex = executor()
    r0 = reducer(0)
    launch(ex, r0, group_id=4)
    (fetch,) = ex.blocks_ready(protocol.BlocksReady(job_id="j", shuffle_id=7, map_partition=0, reduce_partitions=[0], address=B), 10.0)
    assert ex.tick(12.9) == []
    actions = ex.tick(13.0)
    (failed,) = to_scheduler(actions, protocol.TaskFailed)
    assert (failed.job_id, failed.stage_id, failed.partition, failed.kind) == ("j", 1, 0, "fetch")
    assert "timed out waiting for shuffle blocks" in failed.message
    assert [m.group_id for m in to_scheduler(actions, protocol.GroupDone)] == [4]
    assert ex.blocks(protocol.Blocks(request_id=fetch.msg.request_id, map_partitions=[0]), [b"late"], 14.0) == []


def test_fetch_error_fails_the_reducer_with_the_peers_reason():
    ex = executor()
    launch(ex, reducer(0))
    (fetch,) = ex.blocks_ready(protocol.BlocksReady(job_id="j", shuffle_id=7, map_partition=0, reduce_partitions=[0], address=B), 0.0)
    (failed,) = to_scheduler(ex.request_failed(protocol.ErrorReply(reason="too large", request_id=fetch.msg.request_id)), protocol.TaskFailed)
    assert failed.kind == "fetch" and failed.message == "too large"


def test_a_fetch_failing_before_its_reducer_is_launched_still_fails_the_reducer():
    ex = executor()
    push(ex, 0, b"early")  # map 0's block came inline
    notice = protocol.BlocksReady(job_id="j", shuffle_id=7, map_partition=1, reduce_partitions=[0], address=B)
    (fetch,) = ex.blocks_ready(notice, 0.0)  # map 1's was too large: fetched, and refused
    log = ex.request_failed(protocol.ErrorReply(reason="blocks too large for a message", request_id=fetch.msg.request_id))
    log += launch(ex, reducer(0), group_id=1, now=1.0)
    log += ex.tick(100.0)
    failed = to_scheduler(log, protocol.TaskFailed)
    assert [(m.job_id, m.stage_id, m.partition, m.kind) for m in failed] == [("j", 1, 0, "fetch")]
    assert "too large" in failed[0].message
    assert [m.group_id for m in to_scheduler(log, protocol.GroupDone)] == [1]


def test_map_output_locations_reach_shuffle_meta_once_the_group_is_reported():
    ex = executor()
    m0, m1 = mapper(0), mapper(1)
    launch(ex, m0, m1, group_id=4)
    first = ex.task_done(m0, map_out(), 0.5)
    assert not [a for a in first if isinstance(a, ToShuffleMeta)]  # off the critical path
    last = ex.task_done(m1, map_out(), 0.9)
    order = [type(a.msg) for a in last if isinstance(a, (ToScheduler, ToShuffleMeta))]
    assert order.index(protocol.GroupDone) < order.index(protocol.RegisterMapOutputs)  # the report goes first
    register = [a.msg for a in last if isinstance(a, ToShuffleMeta)]
    assert len(register) == 1
    assert [(o.job_id, o.shuffle_id, o.location.map_partition) for o in register[0].outputs] == [("j", 7, 0), ("j", 7, 1)]


def test_a_reducer_failing_at_launch_does_not_let_a_map_jump_ahead_of_a_runnable_reducer():
    ex = executor()
    notice = protocol.BlocksReady(job_id="j", shuffle_id=7, map_partition=1, reduce_partitions=[1], address=B)
    (fetch,) = ex.blocks_ready(notice, 0.0)
    ex.request_failed(protocol.ErrorReply(reason="gone", request_id=fetch.msg.request_id))  # reducer 1's input failed
    push(ex, 0, b"a")
    push(ex, 1, b"b")  # reducer 0's inputs are all in
    m0, r1, r0 = mapper(0), reducer(1), reducer(0)
    actions = launch(ex, m0, r1, r0)
    assert [m.partition for m in to_scheduler(actions, protocol.TaskFailed)] == [1]
    assert runs(actions) == [r0]  # the local order sees the whole launch: reducers first


def test_a_launch_as_sent_lists_each_push_target_list_once_and_the_executor_pushes_as_before() -> None:
    stages = {MAP_SPEC.key(): MAP_SPEC, REDUCE_SPEC.key(): REDUCE_SPEC}
    maps = [mapper(p, job_id=f"j{b}", batch=b) for b in range(50) for p in range(2)]
    full = protocol.LaunchGroup(group_id=1, tasks=[*maps, reducer()], stages=stages, code=CODE)
    sent = protocol.decode(protocol.encode(full.compacted()), 1 << 30)[0]
    assert isinstance(sent, protocol.LaunchGroup)
    assert sent.addresses == [ME, A, B] and sent.push_lists == [[0, 1, 2, 1]] and all(t.push_to == [] for t in sent.tasks)
    assert b"".join(protocol.encode(sent)).count(B.encode()) == 1  # not once per map task
    assert sent.expanded().tasks == full.tasks
    ex = executor()
    ex.launch_group(sent)
    actions = ex.task_done(maps[0], map_out(b"b0", b"b1", b"b2", b"b3"), 1.0)
    assert sorted(a.address for a in actions if isinstance(a, ToPeer)) == [A, B]
