"""The shuffle_meta server only moves bytes and time: on a live server (real sockets on loopback),
every message type the core handles reaches it through handle(), and what peers receive is
exactly what handle() returned."""

from __future__ import annotations

import zmq
from squall.common import protocol, transport
from squall.common.core import Tick
from squall.common.protocol import (
    DroppedPersisted,
    ErrorReply,
    ForgetExecutor,
    ForgetJob,
    ForgetPersisted,
    GetTracked,
    LookupPersisted,
    MapOutputs,
    PersistedBlock,
    PersistedLocations,
    Ping,
    Pong,
    RegisterPersisted,
    Tracked,
)
from squall.services.shuffle_meta.server import ShuffleMetaServer

from tests.cluster.live_server import Inbox, Recorder, RecordingLog, dealer, drain, serve_while
from tests.conftest import fast_settings
from tests.polling import wait_until
from tests.unit.test_shuffle_meta_state import loc, lookup


def output(job_id: str, part: int) -> protocol.RegisterMapOutputs:
    return protocol.RegisterMapOutputs(outputs=[protocol.MapOutput(job_id=job_id, shuffle_id=0, location=loc(part, "x1"))])


def test_every_message_goes_through_handle_and_peers_get_exactly_what_it_returned() -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    settings = fast_settings(shuffle_meta_bind="tcp://127.0.0.1:*")
    server = ShuffleMetaServer(settings, RecordingLog())
    record = Recorder(server.state)
    mapper, reducer, scheduler = (dealer(ctx, settings, server.endpoint, name) for name in (b"x1", b"r1", b"sched"))
    inbox: dict[bytes, Inbox] = {b"r1": [], b"sched": []}

    def replies(peer: bytes, count: int) -> Inbox:
        sock = reducer if peer == b"r1" else scheduler
        return wait_until(lambda: len(drain(sock, inbox[peer])) >= count and inbox[peer], what=f"{count} replies at {peer!r}")

    def drive() -> None:
        transport.send(scheduler, Ping(nonce=3))
        transport.send(scheduler, GetTracked())
        replies(b"sched", 2)
        transport.send(mapper, output("j", 0))
        transport.send(reducer, lookup(request_id=1, job_id="j", shuffle_id=0, expected=2))  # waits for the second output
        transport.send(mapper, output("j", 1))
        replies(b"r1", 1)
        transport.send(reducer, lookup(request_id=2, job_id="j", shuffle_id=0, expected=3, timeout=0.1))  # never complete: fails at its deadline
        replies(b"r1", 2)
        transport.send(reducer, lookup(request_id=3, job_id="k", shuffle_id=0, expected=1))
        transport.send(scheduler, ForgetJob(job_ids=["k"]))  # fails the look-up waiting for it
        replies(b"r1", 3)
        transport.send(mapper, RegisterPersisted(executor_id="x1", address="tcp://x1:1", blocks=[PersistedBlock("d", 0, 2, 10),
                                                                                                  PersistedBlock("d", 1, 2, 10)]))
        transport.send(mapper, DroppedPersisted(executor_id="x1", blocks=[PersistedBlock("d", 1, 2, 10)]))
        transport.send(scheduler, LookupPersisted(request_id=5, dataset_ids=["d"]))
        replies(b"sched", 3)
        transport.send(scheduler, ForgetPersisted(dataset_ids=["d"]))
        transport.send(scheduler, ForgetExecutor(executor_id="x1"))
        transport.send(scheduler, Ping(nonce=4))  # answered after ForgetExecutor: that one was handled
        replies(b"sched", 4)

    try:
        serve_while(server, drive)
    finally:
        for sock in (mapper, reducer, scheduler):
            sock.close(0)
        ctx.term()

    assert record.received_types() == set(server.state.handles()), "a message type the core takes did not reach handle()"
    assert Tick in record.event_types() and all(event.stimulus_id for event, _ in record.calls)
    for peer in (b"r1", b"sched"):
        assert inbox[peer] == record.sent_to(peer)
    assert [type(m) for m, _ in inbox[b"r1"]] == [MapOutputs, ErrorReply, ErrorReply]
    assert [type(m) for m, _ in inbox[b"sched"]] == [Pong, Tracked, PersistedLocations, Pong]
    assert inbox[b"sched"][2][0] == PersistedLocations(request_id=5, holders={"d": {0: ["x1"]}}, partitions={"d": 2})
    assert record.sent_to(b"x1") == []


def test_a_registration_read_with_a_look_up_is_seen_by_it_whichever_came_first() -> None:
    """The scheduler's look-up for the next job can overtake, on its own connection, the
    registration of a block the previous job kept: the server reads every message queued and
    answers look-ups last. Over inproc, what was sent is queued the moment send returns, so the
    look-up, sent first, is surely read in the same pass as the registration sent after it."""
    settings = fast_settings(shuffle_meta_bind="tcp://127.0.0.1:*")
    server = ShuffleMetaServer(settings, RecordingLog())
    server.sock.bind("inproc://block-directory-order")
    peers = []
    for identity in (b"sched", b"x1"):  # the scheduler's connection first: the look-up comes ahead in the queue too
        sock = server.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.ROUTING_ID, identity)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect("inproc://block-directory-order")
        peers.append(sock)
    scheduler, executor = peers
    try:
        transport.send(scheduler, LookupPersisted(request_id=1, dataset_ids=["d"]))
        transport.send(executor, RegisterPersisted(executor_id="x1", address="tcp://x1:1", blocks=[PersistedBlock("d", 0, 1, 10)]))
        server._on_readable(server.sock)
        (answer,) = drain(scheduler, [])
    finally:
        for sock in peers:
            sock.close(0)
        server.sock.close(0)
        if server.auth is not None:
            server.auth.stop()
        server.ctx.term()
    assert answer == (PersistedLocations(request_id=1, holders={"d": {0: ["x1"]}}, partitions={"d": 1}), [])
