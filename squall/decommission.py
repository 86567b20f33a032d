"""`squall decommission`: ask the scheduler to let an executor leave gracefully, and wait for it.

The scheduler hands the executor's keyed state partitions to the others, waits for its work in
flight, then tells it to go (docs/fault-tolerance.md, "Scaling"); this returns once the
executor is no longer a member, or says why it may not leave.
"""

from __future__ import annotations

import time

import zmq

from squall.common import security, transport
from squall.common.handshake import address_problem
from squall.common.protocol import (
    ClusterStatus,
    Decommission,
    DecommissionAnswer,
    ErrorReply,
    GetClusterStatus,
    Message,
)
from squall.common.settings import Settings
from squall.health import reply


def decommission(scheduler: str, executor_id: str, timeout: float, settings: Settings | None = None, wait: bool = True) -> tuple[bool, str]:
    """Ask the scheduler at `scheduler` to decommission `executor_id`; with `wait`, until it is gone
    (at most `timeout` seconds in all). (True, what happened) or (False, why not)."""
    settings = settings or Settings.from_env()
    if problem := address_problem(scheduler, "scheduler"):
        return False, problem
    try:
        security.check(settings, [scheduler])
    except security.SecurityError as exc:
        return False, str(exc)
    deadline = time.monotonic() + timeout
    ctx = zmq.Context()
    sock = transport.new_socket(ctx, zmq.DEALER, settings)
    try:
        sock.connect(scheduler)
        transport.send(sock, Decommission(executor_id=executor_id))
        answer = _receive(sock, settings, deadline, DecommissionAnswer)
        if answer is None:
            return False, f"the scheduler at {scheduler} did not answer within {timeout:g}s"
        assert isinstance(answer, DecommissionAnswer)
        if not answer.accepted:
            return False, answer.reason
        started = f"executor {executor_id} is leaving: {answer.partitions} keyed state partitions to hand over"
        if not wait:
            return True, started
        while time.monotonic() < deadline:
            transport.send(sock, GetClusterStatus())
            status = _receive(sock, settings, min(deadline, time.monotonic() + 1.0), ClusterStatus)
            if isinstance(status, ClusterStatus) and all(e.executor_id != executor_id for e in status.executors):
                return True, f"{started}; it has left"
            time.sleep(0.1)
        return False, f"{started}; it is still a member after {timeout:g}s (its work in flight, or a stream not running its state?)"
    finally:
        sock.close(0)
        ctx.term()


def _receive(sock: zmq.Socket[bytes], settings: Settings, deadline: float, kind: type[Message]) -> Message | None:
    """The first message of that kind before the deadline (an ErrorReply raises), or None."""
    msg = reply(sock, settings, deadline, kind, ErrorReply)
    if isinstance(msg, ErrorReply):
        raise RuntimeError(f"the scheduler refused: {msg.reason}")
    return msg
