"""The executor's server only moves bytes: every message it takes goes through ExecutorState.handle,
and what it sends is exactly what handle returned.

A real ExecutorServer runs in this process on real loopback sockets; the test plays the scheduler,
shuffle_meta and another executor with raw ZeroMQ sockets, records every handle() call on the live
server, and compares the instructions to send with what those sockets received, frame for frame.
"""

from __future__ import annotations

import functools
import gc
import signal
import threading
import time
import typing
from pathlib import Path
from typing import Any

import pytest
import structlog
import zmq
from squall.common import protocol, transport
from squall.common.core import Event, Received, Send, ToShuffleMeta
from squall.common.plan import (
    Aggregator,
    Branch,
    PersistedInput,
    RangeSource,
    ResultWrite,
    ShuffleRead,
    ShuffleWrite,
    StageSpec,
    code_key,
)
from squall.common.serialization import dumps_block, dumps_function
from squall.services.executor.events import FromScheduler
from squall.services.executor.instructions import Instruction, RunTask, ToPeer, ToScheduler
from squall.services.executor.server import ExecutorServer
from squall.services.executor.state import BLOCK_SOCKET_MESSAGES, PEER_MESSAGES, SCHEDULER_MESSAGES

from squall import ops
from tests.cluster.helpers import BIG
from tests.conftest import fast_settings
from tests.polling import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(60)]

GROUP = Aggregator(kind="group")
WAIT = 10.0  # seconds any one answer may take


def to_pair(x: int) -> tuple[int, int]:
    return (x % 2, x)


class Peer:
    """A raw socket standing in for another service; `got` keeps every message it received."""

    def __init__(self, sock: zmq.Socket[Any], router: bool) -> None:
        self.sock, self.router = sock, router
        self.got: list[tuple[bytes | None, protocol.Message, list[bytes]]] = []  # (routing id, message, payloads)

    def recv(self, kind: type, timeout: float = WAIT) -> tuple[bytes | None, protocol.Message, list[bytes]]:
        """The next message of this type (others are kept in `got` too)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.sock.poll(50):
                continue
            frames = self.sock.recv_multipart()
            ident = frames.pop(0) if self.router else None
            msg, payloads = protocol.decode(frames, BIG)
            if isinstance(msg, protocol.Heartbeat):
                continue  # the heartbeat thread's own connection: not the loop's
            got = (ident, msg, [bytes(p) for p in payloads])  # type: ignore[arg-type]
            self.got.append(got)
            if isinstance(msg, kind):
                return got
        raise AssertionError(f"no {kind.__name__} within {timeout}s; got {[type(m).__name__ for _, m, _ in self.got]}")

    def send(self, msg: protocol.Message, payloads: tuple[bytes, ...] = (), to: bytes | None = None) -> None:
        transport.send(self.sock, msg, payloads, to=to)

    def drain(self, quiet: float = 0.3) -> None:
        """Take whatever else arrives until the socket has been quiet for `quiet` seconds."""
        try:
            while True:
                self.recv(type(None), timeout=quiet)
        except AssertionError:
            pass


def bsp_task(stage_id: int, partition: int, spec: StageSpec) -> protocol.TaskDescriptor:
    return protocol.TaskDescriptor(job_id="bsp", stage_id=stage_id, partition=partition, stage_key=spec.key())


def scenario(server: ExecutorServer, sched: Peer, meta: Peer, other: Peer, client: Peer, other_address: str) -> None:
    """Every message type the executor takes, on the connection it comes on."""
    ident, register, _ = sched.recv(protocol.RegisterExecutor)
    assert ident is not None
    meta_address = meta.sock.getsockopt_string(zmq.LAST_ENDPOINT)
    sched.send(protocol.Registered(executor_id=server.executor_id, shuffle_meta_address=meta_address), to=ident)

    # BSP: a source task, then reducers whose inputs are looked up and fetched (or refused)
    source = StageSpec(partitions=1, input=RangeSource(start=0, stop=5, step=1, partitions=1), ops=[], output=ResultWrite())
    read = ShuffleRead(shuffle_id=7, map_partitions=1, aggregator=GROUP)
    reduce = StageSpec(partitions=2, input=read, ops=[], output=ResultWrite())
    stages = {source.key(): source, reduce.key(): reduce}
    sched.send(protocol.LaunchTasks(tasks=[bsp_task(0, 0, source)], stages=stages), to=ident)
    sched.recv(protocol.TaskFinished)
    sched.send(protocol.LaunchTasks(tasks=[bsp_task(1, 0, reduce)]), to=ident)
    meta_ident, lookup, _ = meta.recv(protocol.LookupMapOutputs)
    assert isinstance(lookup, protocol.LookupMapOutputs)
    location = protocol.MapLocation(map_partition=0, executor_id="other", address=other_address, sizes=[9, 9])
    meta.send(protocol.MapOutputs(request_id=lookup.request_id, locations=[location]), to=meta_ident)
    other_ident, fetch, _ = other.recv(protocol.FetchBlocks)
    assert isinstance(fetch, protocol.FetchBlocks)
    other.send(protocol.Blocks(request_id=fetch.request_id, map_partitions=[0]), (dumps_block([("k", [1, 2])]),), to=other_ident)
    sched.recv(protocol.TaskFinished)
    sched.send(protocol.LaunchTasks(tasks=[bsp_task(1, 1, reduce)]), to=ident)
    _, lookup, _ = meta.recv(protocol.LookupMapOutputs)
    assert isinstance(lookup, protocol.LookupMapOutputs)
    meta.send(protocol.ErrorReply(reason="no such shuffle", request_id=lookup.request_id), to=meta_ident)
    sched.recv(protocol.TaskFailed)

    # persisted blocks: one computed and kept here (and registered), one fetched from its holder
    persisted = StageSpec(partitions=1, input=PersistedInput("d", 1, Branch(input=source.input, ops=[], partitions=1)), ops=[],
                          output=ResultWrite())
    sched.send(protocol.LaunchTasks(tasks=[bsp_task(2, 0, persisted)], stages={persisted.key(): persisted}), to=ident)
    meta.recv(protocol.RegisterPersisted)
    sched.recv(protocol.TaskFinished)
    elsewhere = protocol.TaskDescriptor(job_id="bsp", stage_id=3, partition=0, stage_key=persisted.key(), persisted={"d": other_address})
    sched.send(protocol.LaunchTasks(tasks=[elsewhere]), to=ident)
    _, fetch_persisted, _ = other.recv(protocol.FetchPersisted)
    assert isinstance(fetch_persisted, protocol.FetchPersisted)
    other.send(protocol.PersistedData(request_id=fetch_persisted.request_id), (dumps_block([1, 2]),), to=other_ident)
    sched.recv(protocol.TaskFinished)

    # Drizzle: a map task whose block is pushed to the other executor; the group is reported
    blob = dumps_function(functools.partial(ops.map_op, to_pair))
    mapper = StageSpec(partitions=1, input=RangeSource(start=0, stop=6, step=1, partitions=1), ops=[code_key(blob)],
                       output=ShuffleWrite(shuffle_id=9, partitions=1, aggregator=GROUP))
    task = protocol.TaskDescriptor(job_id="dz", stage_id=0, partition=0, stage_key=mapper.key(), push_to=[other_address])
    sched.send(protocol.LaunchGroup(group_id=1, tasks=[task], stages={mapper.key(): mapper}, code={code_key(blob): blob}), to=ident)
    other.recv(protocol.PushBlocks)
    sched.recv(protocol.GroupDone)
    meta.recv(protocol.RegisterMapOutputs)

    # the block socket: a ping, the tracked tables, a fetch of that block, a push and a notice
    client.send(protocol.Ping(nonce=5))
    client.recv(protocol.Pong)
    client.send(protocol.GetTracked())
    client.recv(protocol.Tracked)
    client.send(protocol.FetchBlocks(request_id=3, job_id="dz", shuffle_id=9, reduce_partition=0, map_partitions=[0]))
    client.recv(protocol.Blocks)
    client.send(protocol.FetchPersisted(request_id=4, dataset_id="d", partition=0))
    client.recv(protocol.PersistedData)
    client.send(protocol.PushBlocks(job_id="early", shuffle_id=3, map_partition=0, reduce_partitions=[0]), (b"block",))
    client.send(protocol.BlocksReady(job_id="early", shuffle_id=3, map_partition=1, reduce_partitions=[0], address=other_address))
    _, fetch, _ = other.recv(protocol.FetchBlocks)
    assert isinstance(fetch, protocol.FetchBlocks)
    other.send(protocol.ErrorReply(reason="gone", request_id=fetch.request_id), to=other_ident)

    # the scheduler's housekeeping, then it forgets us: we register again, on a fresh connection
    housekeeping = (protocol.ReleaseJob(job_ids=["early"]), protocol.CancelJobs(job_ids=["dz"]),
                    protocol.PruneCheckpoints(state_id="s", before=1), protocol.ForgetStates(state_ids=["s"]),
                    protocol.ForgetPersisted(dataset_ids=["d"]),
                    protocol.ErrorReply(reason="just so"), protocol.Pong(nonce=1, service="scheduler"),
                    protocol.HandOverStates(partitions=[("s", 0, 3)]), protocol.HandedOver(partitions=[("s", 0)]),
                    protocol.DecommissionAnswer(executor_id=server.executor_id, accepted=True))
    for msg in housekeeping:
        sched.send(msg, to=ident)
    sched.send(protocol.Reregister(executor_id=server.executor_id), to=ident)
    again, register, _ = sched.recv(protocol.RegisterExecutor)
    assert again is not None and again != ident
    sched.send(protocol.Registered(executor_id=server.executor_id, shuffle_meta_address=meta_address), to=again)
    for peer in (sched, meta, other, client):
        peer.drain()
    # and at last it is let go: it stops, to exit 0
    sched.send(protocol.Leave(executor_id=server.executor_id), to=again)
    wait_until(lambda: not server.loop.running, timeout=WAIT, what="the executor to stop when let go")
    assert server.loop.exit_code == 0


@pytest.fixture()
def service_loop_in_this_thread():  # type: ignore[no-untyped-def]
    """ServiceLoop.run takes SIGINT/SIGTERM and tunes the GC as a service process would: undo both."""
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    thresholds = gc.get_threshold()
    yield
    for s, handler in handlers.items():
        signal.signal(s, handler)
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_every_message_goes_through_handle_and_the_server_sends_exactly_what_handle_returned(
        tmp_path: Path, service_loop_in_this_thread: None) -> None:
    ctx = zmq.Context()
    base = fast_settings()
    sockets = {name: transport.new_socket(ctx, zmq.ROUTER, base) for name in ("sched", "meta", "other")}
    addresses = {name: transport.bind(sock, "tcp://127.0.0.1:*") for name, sock in sockets.items()}
    settings = fast_settings(scheduler_address=addresses["sched"], executor_bind="tcp://127.0.0.1:*",
                             checkpoint_dir=str(tmp_path))
    server = ExecutorServer(settings, structlog.get_logger(), executor_id="e-under-test")
    handled: list[tuple[Event, list[Instruction]]] = []
    core_handle = server.state.handle

    def recording(event: Event) -> list[Instruction]:
        out = core_handle(event)
        handled.append((event, list(out)))
        return out

    server.state.handle = recording  # type: ignore[method-assign]  # the live server's one call into its core
    client_sock = transport.new_socket(ctx, zmq.DEALER, settings)
    client_sock.connect(server.data_address)
    sched, meta, other = (Peer(sockets[n], router=True) for n in ("sched", "meta", "other"))
    client = Peer(client_sock, router=False)
    failure: list[BaseException] = []

    def play() -> None:
        try:
            scenario(server, sched, meta, other, client, addresses["other"])
        except BaseException as exc:  # noqa: BLE001 - re-raised on the test's thread
            failure.append(exc)
        finally:
            server.loop.stop()

    player = threading.Thread(target=play, name="peers")
    player.start()
    try:
        server.run()  # on this thread: ServiceLoop takes signals, which only the main thread may
    finally:
        player.join(timeout=WAIT)
        for sock in (*sockets.values(), client_sock):
            sock.close(0)
        ctx.term()
    if failure:
        raise failure[0]

    # the server carries out every kind of instruction (a RunTask goes to the runner, after the rest)
    assert set(typing.get_args(Instruction)) == {*server._carry_out, RunTask}

    # every message type the server takes went through handle, keyed by the connection it came on
    seen = {(type(e), type(e.msg)) for e, _ in handled if isinstance(e, Received)}
    for kinds, source in ((SCHEDULER_MESSAGES, FromScheduler), (PEER_MESSAGES, Received)):
        assert {(source, k) for k in kinds} <= seen, {(source, k) for k in kinds} - seen
    assert {k for _, k in seen if k in BLOCK_SOCKET_MESSAGES} == set(BLOCK_SOCKET_MESSAGES)

    # and what each peer received is exactly what handle asked to send there, in order
    def frames(msg: protocol.Message, payloads: tuple[object, ...]) -> tuple[bytes, ...]:
        return tuple(bytes(f) for f in protocol.encode(msg, payloads))  # type: ignore[arg-type]

    instructions = [i for _, out in handled for i in out]
    expected = {
        "sched": [frames(i.msg, i.payloads) for i in instructions if isinstance(i, ToScheduler)],
        "meta": [frames(i.msg, ()) for i in instructions if isinstance(i, ToShuffleMeta)],
        "other": [frames(i.msg, i.payloads) for i in instructions if isinstance(i, ToPeer) and i.address == addresses["other"]],
        "client": [frames(i.msg, i.payloads) for i in instructions if isinstance(i, Send)],
    }
    received = {name: [frames(m, tuple(p)) for _, m, p in peer.got]
                for name, peer in (("sched", sched), ("meta", meta), ("other", other), ("client", client))}
    assert all(not isinstance(i, ToPeer) or i.address == addresses["other"] for i in instructions)
    for name in expected:
        assert received[name] == expected[name], name
    assert [type(m) for _, m, _ in sched.got] == [protocol.RegisterExecutor, protocol.TaskFinished, protocol.TaskFinished, protocol.TaskFailed,
                                                  protocol.TaskFinished, protocol.TaskFinished, protocol.GroupDone, protocol.RegisterExecutor]
    assert [type(m) for _, m, _ in client.got] == [protocol.Pong, protocol.Tracked, protocol.Blocks, protocol.PersistedData]
    assert [type(m) for _, m, _ in other.got] == [protocol.FetchBlocks, protocol.FetchPersisted, protocol.PushBlocks, protocol.FetchBlocks]
