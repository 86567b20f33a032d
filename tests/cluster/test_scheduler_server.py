"""The scheduler's server only moves bytes and time: on a live server (real sockets on loopback),
every message type the core handles reaches it through handle(), the socket events become the
scheduler's events, and what peers receive is exactly what handle() returned."""

from __future__ import annotations

from typing import TypeVar

import zmq
from squall.common import protocol, transport
from squall.common.core import Log, Tick, ToShuffleMeta
from squall.common.plan import LogicalPlan, NarrowNode, RangeSource, SourceNode
from squall.common.protocol import (
    CancelJobs,
    ForgetExecutor,
    ForgetStates,
    JobDone,
    LaunchGroup,
    LaunchTasks,
    Message,
    Pong,
    RunDone,
)
from squall.services.scheduler.events import ConnectionDropped, DriversGone, ExecutorConnected, ExecutorDisconnected, ProbeDrivers
from squall.services.scheduler.server import SchedulerServer

from tests.cluster.live_server import Inbox, Recorder, RecordingLog, dealer, drain, serve_while
from tests.conftest import fast_settings
from tests.polling import wait_until

M = TypeVar("M", bound=Message)
PLAN = LogicalPlan(nodes=[SourceNode(source=RangeSource(start=0, stop=10, step=1, partitions=1)), NarrowNode(parent=0, fn="fn")])


def test_every_message_goes_through_handle_and_peers_get_exactly_what_it_returned() -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    base = fast_settings(heartbeat_interval=0.2, heartbeat_misses=10)
    meta = transport.new_socket(ctx, zmq.ROUTER, base)  # plays shuffle_meta
    meta_address = transport.bind(meta, "tcp://127.0.0.1:*")
    blocks = transport.new_socket(ctx, zmq.ROUTER, base)  # plays the executor's block socket, which the scheduler watches
    blocks_address = transport.bind(blocks, "tcp://127.0.0.1:*")
    settings = base.replace(scheduler_bind="tcp://127.0.0.1:*", shuffle_meta_address=meta_address)
    log = RecordingLog()
    server = SchedulerServer(settings, log)
    record = Recorder(server.state)
    executor, driver, doomed = (dealer(ctx, settings, server.endpoint, name) for name in (b"e1", b"d1", b"d2"))
    inbox: dict[bytes, Inbox] = {b"e1": [], b"d1": [], b"d2": []}
    at_meta: Inbox = []
    senders: list[bytes] = []  # the scheduler's identity at shuffle_meta
    taken: dict[tuple[bytes, type], int] = {}  # messages of each kind take() has returned, by peer

    def take(peer: bytes, kind: type[M]) -> M:
        """Wait for the next message of this kind to reach `peer` (the executor keeps beating)."""
        sock = {b"e1": executor, b"d1": driver, b"d2": doomed}[peer]
        seen = taken.get((peer, kind), 0)

        def arrived() -> M | None:
            transport.send(executor, protocol.Heartbeat(executor_id="e1", incarnation="i1"))
            new = [m for m, _ in drain(sock, inbox[peer]) if isinstance(m, kind)]
            return new[seen] if len(new) > seen else None

        msg = wait_until(arrived, timeout=10.0, what=f"{kind.__name__} at {peer!r}")
        taken[(peer, kind)] = seen + 1
        return msg

    def drive() -> None:
        transport.send(executor, protocol.RegisterExecutor(executor_id="e1", incarnation="i1", data_address=blocks_address, slots=2))
        take(b"e1", protocol.Registered)
        wait_until(lambda: ExecutorConnected in record.event_types(), what="the watch connection up")
        questions = [(protocol.Ping(nonce=5), Pong), (protocol.GetClusterStatus(), protocol.ClusterStatus),
                     (protocol.GetMetrics(), protocol.Metrics), (protocol.GetTracked(), protocol.Tracked)]
        for question, answer in questions:
            transport.send(driver, question)
            take(b"d1", answer)

        # a BSP job: its task runs and reports, the driver gets the result
        transport.send(driver, protocol.SubmitJobs(run_id="bsp", jobs=[protocol.JobSpec(job_id="b.0", plan=PLAN)], code={"fn": b"code"}, preschedule=False))
        (task,) = take(b"e1", LaunchTasks).tasks
        finished = protocol.TaskFinished(executor_id="e1", job_id=task.job_id, stage_id=task.stage_id, partition=task.partition, attempt=0,
                                has_result=True, output_bytes=4, elapsed=0.0)
        transport.send(executor, finished, [b"rows"])
        take(b"d1", JobDone)
        take(b"d1", RunDone)

        # a Drizzle group: result partitions and GroupDone
        transport.send(driver, protocol.SubmitJobs(run_id="drizzle", jobs=[protocol.JobSpec(job_id="g.0", plan=PLAN)], preschedule=True))
        launch = take(b"e1", LaunchGroup)
        transport.send(executor, protocol.ResultPartition(executor_id="e1", job_id="g.0", partition=0), [b"rows"])
        transport.send(executor, protocol.GroupDone(group_id=launch.group_id, executor_id="e1", tasks=1, busy=0.0))
        take(b"d1", RunDone)

        # reports about nothing in flight, and keyed state
        transport.send(executor, protocol.TaskFailed(executor_id="e1", job_id="gone", stage_id=0, partition=0, attempt=0, kind="task",
                                            error_type="E", message="m", traceback=""))
        transport.send(executor, protocol.StateCheckpointed(executor_id="e1", checkpoints=[]))
        transport.send(driver, protocol.CancelRun(run_id="unknown"))
        transport.send(driver, ForgetStates(state_ids=["counts"]))
        take(b"e1", ForgetStates)

        # a stream's progress (no answer), and the snapshot it shows in
        transport.send(driver, protocol.StreamProgress(stream_id="s", run_id="drizzle", batch=0, latency=0.01))
        transport.send(driver, protocol.GetSnapshot())
        assert b'"stream' in take(b"d1", protocol.Snapshot).json

        # a decommission of an executor the scheduler does not know is refused, saying so
        transport.send(driver, protocol.Decommission(executor_id="nobody"))
        assert not take(b"d1", protocol.DecommissionAnswer).accepted

                # persisted datasets: an unpersist goes on to the executors and shuffle_meta
        transport.send(driver, protocol.ForgetPersisted(dataset_ids=["ds"]))
        take(b"e1", protocol.ForgetPersisted)

        # shuffle_meta answers the scheduler's block look-ups, and errors
        wait_until(lambda: drain(meta, at_meta, senders), what="the scheduler's messages at shuffle_meta")
        transport.send(meta, protocol.ErrorReply(reason="a look-up failed"), to=senders[0])
        wait_until(lambda: any(line[1] == "shuffle_meta_error" for line in log.lines), what="the error logged")
        transport.send(meta, protocol.PersistedLocations(request_id=99, holders={}), to=senders[0])  # of no look-up: ignored
        wait_until(lambda: protocol.PersistedLocations in record.received_types(), what="the answer taken by handle()")

        # a driver that vanishes with a run in flight: probed, found gone, its run cancelled
        transport.send(doomed, protocol.SubmitJobs(run_id="long", jobs=[protocol.JobSpec(job_id=f"l.{i}", plan=PLAN) for i in range(4)]))
        take(b"e1", LaunchGroup)
        doomed.close(0)
        take(b"e1", CancelJobs)

        # the executor's process goes: its watch connection drops
        blocks.close(0)
        wait_until(lambda: drain(meta, at_meta, senders) and any(isinstance(m, ForgetExecutor) for m, _ in at_meta),
                   what="ForgetExecutor at shuffle_meta")

        # everything handle() returned has arrived before the loop stops
        def all_in() -> bool:
            drain(executor, inbox[b"e1"])
            drain(driver, inbox[b"d1"])
            drain(meta, at_meta, senders)
            return (len(inbox[b"e1"]) >= len(record.sent_to(b"e1")) and len(_answers(inbox[b"d1"])) >= len(record.sent_to(b"d1"))
                    and len(at_meta) >= len(record.instructions(ToShuffleMeta)))

        wait_until(all_in, what="every instruction's message at its peer")

    try:
        serve_while(server, drive)
    finally:
        for sock in (executor, driver, doomed, meta, blocks):
            sock.close(0)
        ctx.term()

    assert record.received_types() == set(server.state.handles()), "a message type the core takes did not reach handle()"
    assert {Tick, ExecutorConnected, ExecutorDisconnected, ConnectionDropped, DriversGone} <= record.event_types()
    assert all(event.stimulus_id for event, _ in record.calls)
    assert inbox[b"e1"] == record.sent_to(b"e1")
    # the driver also gets the keep-alive Pongs (nonce 0) by which ProbeDrivers asks the ROUTER about it
    assert _answers(inbox[b"d1"]) == record.sent_to(b"d1")
    assert at_meta == [(i.msg, []) for i in record.instructions(ToShuffleMeta)]
    assert any(b"d2" in i.drivers for i in record.instructions(ProbeDrivers))
    logged = [(level, event, {k: v for k, v in fields.items() if k != "stimulus"}) for level, event, fields in log.lines if "stimulus" in fields]
    assert logged == [(i.level, i.event, i.fields) for i in record.instructions(Log)]
    assert {"driver_gone", "run_cancelled", "executor_lost", "shuffle_meta_error", "run_done"} <= {event for _, event, _ in logged}


def _answers(inbox: Inbox) -> Inbox:
    return [(m, p) for m, p in inbox if not (isinstance(m, Pong) and m.nonce == 0)]
