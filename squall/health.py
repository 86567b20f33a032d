"""`squall health`: probing a service over its own protocol (is it up, what does it hold)."""

from __future__ import annotations

import time

import zmq

from squall.common import protocol, security, transport
from squall.common.handshake import ConnectionProbe, address_problem
from squall.common.protocol import GetTracked, Message, Ping, Pong, ProtocolError, Tracked
from squall.common.settings import Settings


def check_service(service: str, address: str, timeout: float, settings: Settings | None = None) -> tuple[bool, str]:
    """Ping `address`; (True, detail) if a `service` answers within `timeout` seconds."""
    settings = settings or Settings.from_env()
    if problem := address_problem(address, service):
        return False, f"unhealthy: {problem}"
    try:
        security.check(settings, [address])
    except security.SecurityError as exc:
        return False, f"unhealthy: {exc}"
    ctx = zmq.Context()
    sock = transport.new_socket(ctx, zmq.DEALER, settings)
    probe = ConnectionProbe(sock, address, settings)
    try:
        sock.connect(address)
        transport.send(sock, Ping(nonce=4242))
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if probe.poll():
                return False, f"unhealthy: {probe.refused}"
            if not sock.poll(min(50, int(left * 1000) + 1)):
                continue
            try:
                msg, _ = protocol.decode(sock.recv_multipart(), settings.max_message_bytes)
            except ProtocolError:
                continue
            if isinstance(msg, Pong) and msg.nonce == 4242:
                if msg.service != service:
                    return False, f"unhealthy: {address} is {_a(msg.service)}, not {_a(service)}"
                return True, f"healthy: {service} at {address}"
        return False, f"unhealthy: {probe.silence(service, timeout)}"
    finally:
        probe.close()
        sock.close(0)
        ctx.term()


def tracked(address: str, settings: Settings, timeout: float = 5.0, heap: bool = False) -> Tracked:
    """Ask the service at `address` what it holds (GetTracked): the sizes of its tables and, with
    `heap`, its live Python objects by type. Raises TimeoutError if it does not answer in time."""
    ctx = zmq.Context()
    sock = transport.new_socket(ctx, zmq.DEALER, settings)
    try:
        sock.connect(address)
        transport.send(sock, GetTracked(heap=heap))
        msg = reply(sock, settings, time.monotonic() + timeout, Tracked)
        if isinstance(msg, Tracked):
            return msg
        raise TimeoutError(f"{address} did not say what it holds within {timeout:g}s")
    finally:
        sock.close(0)
        ctx.term()


def reply(sock: zmq.Socket[bytes], settings: Settings, deadline: float, *kinds: type[Message]) -> Message | None:
    """The first message on `sock` of one of `kinds` before `deadline` (time.monotonic()), or
    None; undecodable frames and other messages are passed over."""
    while (left := deadline - time.monotonic()) > 0:
        if not sock.poll(int(left * 1000) + 1):
            continue
        try:
            msg, _ = protocol.decode(sock.recv_multipart(), settings.max_message_bytes)
        except ProtocolError:
            continue
        if isinstance(msg, kinds):
            return msg
    return None


def _a(noun: str) -> str:
    return f"an {noun}" if noun[:1] in ("a", "e", "i", "o", "u") else f"a {noun}"
