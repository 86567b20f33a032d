"""A real executor server (in this process, on loopback sockets; the test plays the scheduler)
running a batch task when a latency task arrives: the batch task is suspended while the latency
task runs (it makes no progress meanwhile), heartbeats and GetTracked say so, it resumes when the
latency task is over, and a cancel stops it. On both batch lanes: the executor's batch process,
and its batch thread."""

from __future__ import annotations

import functools
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import structlog
import zmq
from squall.common import protocol, transport
from squall.common.plan import RangeSource, ResultWrite, StageSpec, code_key
from squall.common.serialization import dumps_function
from squall.services.executor.server import ExecutorServer

from squall import ops
from tests.cluster.helpers import BIG, PROGRESS, read_progress, write_progress
from tests.cluster.test_executor_server import WAIT, Peer, service_loop_in_this_thread  # noqa: F401 - a fixture
from tests.conftest import fast_settings
from tests.polling import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(60)]

SEEN = [0]  # records the batch task went through, in the process that runs it
LATENCY_MAY_END = threading.Event()


def count(x: int) -> int:
    SEEN[0] += 1
    if SEEN[0] % 100 == 0:
        write_progress(SEEN[0])
    return x


def never(x: int) -> bool:
    return False


def hold(records: Any) -> list[Any]:
    """The latency task: runs until the test lets it end (on the runner thread, GIL released)."""
    LATENCY_MAY_END.wait(WAIT)
    return list(records)


def stage(records: int, *fns: Any) -> tuple[StageSpec, dict[str, bytes]]:
    code = {code_key(b): b for b in (dumps_function(fn) for fn in fns)}
    spec = StageSpec(partitions=1, input=RangeSource(start=0, stop=records, step=1, partitions=1), ops=list(code), output=ResultWrite())
    return spec, code


def heartbeat_with(sock: zmq.Socket[Any], **fields: int) -> protocol.Heartbeat:
    """The next heartbeat on the scheduler socket that says `fields` (others are skipped)."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if sock.poll(50):
            msg, _ = protocol.decode(sock.recv_multipart()[1:], BIG)
            if isinstance(msg, protocol.Heartbeat) and all(getattr(msg, k) == v for k, v in fields.items()):
                return msg
    raise AssertionError(f"no heartbeat with {fields}")


def scenario(server: ExecutorServer, sched: Peer, client: Peer, meta_address: str) -> dict[str, float]:
    ident, _, _ = sched.recv(protocol.RegisterExecutor)
    sched.send(protocol.Registered(executor_id=server.executor_id, shuffle_meta_address=meta_address), to=ident)
    batch_spec, batch_code = stage(10**9, functools.partial(ops.map_op, count), functools.partial(ops.filter_op, never))
    batch = protocol.TaskDescriptor(job_id="b", stage_id=0, partition=0, stage_key=batch_spec.key(), priority="batch")
    sched.send(protocol.LaunchGroup(group_id=1, tasks=[batch], stages={batch_spec.key(): batch_spec}, code=batch_code), to=ident)
    wait_until(lambda: read_progress() > 1000, timeout=WAIT, what="the batch task to run")

    latency_spec, latency_code = stage(3, functools.partial(ops.partition_op, hold))
    latency = protocol.TaskDescriptor(job_id="l", stage_id=0, partition=0, stage_key=latency_spec.key())
    sched.send(protocol.LaunchGroup(group_id=2, tasks=[latency], stages={latency_spec.key(): latency_spec}, code=latency_code), to=ident)
    heartbeat_with(sched.sock, latency_tasks=1, batch_tasks=1, suspended_tasks=1)
    parked = read_progress()
    client.send(protocol.GetTracked())
    _, tracked, _ = client.recv(protocol.Tracked)
    assert isinstance(tracked, protocol.Tracked)
    assert read_progress() == parked  # suspended: no record more while the latency task runs

    LATENCY_MAY_END.set()
    _, done, _ = sched.recv(protocol.GroupDone)
    assert isinstance(done, protocol.GroupDone) and done.group_id == 2
    wait_until(lambda: read_progress() > parked + 1000, timeout=WAIT, what="the batch task to resume")
    sched.send(protocol.CancelJobs(job_ids=["b"]), to=ident)
    _, done, _ = sched.recv(protocol.GroupDone)
    assert isinstance(done, protocol.GroupDone) and done.group_id == 1
    heartbeat_with(sched.sock, latency_tasks=0, batch_tasks=0, suspended_tasks=0)
    return tracked.counters


@pytest.mark.usefixtures("service_loop_in_this_thread")
@pytest.mark.parametrize("lane", ["process", "thread"])
def test_a_latency_task_suspends_the_running_batch_task_which_resumes_after_it(
        tmp_path: Path, lane: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PROGRESS, str(tmp_path / "progress"))
    SEEN[0] = 0
    LATENCY_MAY_END.clear()
    ctx = zmq.Context()
    base = fast_settings()
    sched_sock = transport.new_socket(ctx, zmq.ROUTER, base)
    sched_address = transport.bind(sched_sock, "tcp://127.0.0.1:*")
    meta_sock = transport.new_socket(ctx, zmq.ROUTER, base)
    meta_address = transport.bind(meta_sock, "tcp://127.0.0.1:*")
    settings = fast_settings(scheduler_address=sched_address, executor_bind="tcp://127.0.0.1:*", checkpoint_dir=str(tmp_path),
                             batch_lane=lane)
    server = ExecutorServer(settings, structlog.get_logger(), executor_id="e-preempted")
    client_sock = transport.new_socket(ctx, zmq.DEALER, settings)
    client_sock.connect(server.data_address)
    sched, client = Peer(sched_sock, router=True), Peer(client_sock, router=False)
    result: list[Any] = []

    def play() -> None:
        try:
            result.append(scenario(server, sched, client, meta_address))
        except BaseException as exc:  # noqa: BLE001 - re-raised on the test's thread
            result.append(exc)
        finally:
            LATENCY_MAY_END.set()
            server.loop.stop()

    player = threading.Thread(target=play, name="scheduler")
    player.start()
    try:
        server.run()
    finally:
        player.join(timeout=WAIT)
        for sock in (sched_sock, meta_sock, client_sock):
            sock.close(0)
        ctx.term()
    (counters,) = result
    if isinstance(counters, BaseException):
        raise counters
    assert counters["suspensions"] == 1 and counters["kills"] == 0
    assert 0 < counters["suspension_p50_ms"] <= counters["suspension_max_ms"] < 1000
    # Nothing left parked, or stopped, once the executor closed.
    assert not server.runner.batch._thread.is_alive()
    if server.runner.batch_process is not None:
        assert server.runner.batch_process._child is None
