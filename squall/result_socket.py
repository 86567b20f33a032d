"""The driver's result socket: where executors send Drizzle results straight to the driver.

A ROUTER bound on an ephemeral port, secured like every cluster socket: CurveZMQ with the
cluster's key pair, and a ZAP handler of its own (in a ZeroMQ context of its own, so that a
driver connected to two clusters admits on each socket only the members of its cluster) that
admits only holders of it. Executors connect to it as they connect to each other, and send
ResultPartition; nothing is sent back.

It binds where executors can reach it: `driver_host` when set (on every interface), else the
address this host reaches the scheduler from (loopback for a local cluster).
"""

from __future__ import annotations

import socket
import time
from typing import Any
from urllib.parse import urlsplit

import zmq

from squall.common import security, transport
from squall.common.protocol import Message, ProtocolError, ResultPartition, decode
from squall.common.settings import Settings
from squall.driver_log import driver_log

log = driver_log("results")


class ResultArrived(Message, frozen=True):
    """Not on the wire: a ResultPartition an executor sent straight to this driver, and when it
    arrived (the driver's monotonic clock: a batch's finishing time, whenever it is read)."""

    result: ResultPartition
    arrived: float


class ResultSocket:
    def __init__(self, scheduler_address: str, settings: Settings) -> None:
        self.settings = settings
        host = settings.driver_host or local_host_towards(scheduler_address)
        bind_host = "*" if settings.driver_host else host
        self._ctx: zmq.SyncContext = zmq.Context()
        self._auth = security.start_authenticator(self._ctx, settings)  # before anything can connect
        self.sock = transport.new_socket(self._ctx, zmq.ROUTER, settings)
        try:
            bound = transport.bind(self.sock, f"tcp://{_bracketed(bind_host)}:*")
        except zmq.ZMQError:
            self.close()
            raise
        self.address = transport.advertised(bound, _bracketed(host))
        self.rejected = 0  # messages that were not results

    def receive(self) -> list[tuple[ResultArrived, list[object]]]:
        """The results that have arrived (without waiting). A message that does not decode, or
        is no result, is logged and left out (`rejected` counts them): it never stops the driver."""
        arrived: list[tuple[ResultArrived, list[object]]] = []
        while True:
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return arrived
            try:
                msg, payloads = decode(frames[1:], self.settings.max_message_bytes)
            except ProtocolError as exc:
                self._reject(str(exc))
                continue
            if isinstance(msg, ResultPartition):
                arrived.append((ResultArrived(result=msg, arrived=time.monotonic()), payloads))
            else:
                self._reject(f"a {type(msg).__name__}, where only results are expected")

    def _reject(self, why: str) -> None:
        self.rejected += 1
        log.warning("result_socket_rejected", address=self.address, reason=why)

    def close(self) -> None:
        if not self.sock.closed:
            self.sock.close(0)
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        self._ctx.term()


def local_host_towards(address: str) -> str:
    """The IP address this host reaches `address` (tcp://host:port) from: the one executors near
    the scheduler can reach the driver at. Loopback for a loopback scheduler (or one whose host
    does not resolve: the scheduler's connection will say what is wrong with it)."""
    parts = urlsplit(address)
    host, port = parts.hostname or "", parts.port or 1
    if not host or security.is_loopback(address):
        return "127.0.0.1"
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0][0]
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((host, port))  # a datagram socket sends nothing on connect: it only picks a route
            local: Any = probe.getsockname()[0]
    except OSError:
        return "127.0.0.1"
    return str(local)


def _bracketed(host: str) -> str:
    """An IPv6 address in brackets, as ZeroMQ endpoints write it."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
