"""Noticing a dead executor by its dropped connection, well before its heartbeats are missed.

The scheduler keeps a DEALER connected to each live executor's block address and watches it with
a ZeroMQ socket monitor. When an executor's process dies its kernel closes the connection, and
the monitor reports it at once (about 2 ms on loopback, against a heartbeat budget of 0.4 s).
The DEALERs never send anything. Heartbeats remain the detector for what keeps a connection open:
a stopped (SIGSTOP) or hung process, or a partition the kernel has not noticed.

Each registration of an executor gets a socket of its own, closed when it is forgotten: the old
connection of an executor that comes back after a partition may be torn down late, and its
"disconnected" event must not be taken for the new one's.
"""

from __future__ import annotations

from collections.abc import Callable

import zmq
from squall.common import transport
from squall.common.settings import Settings
from zmq.utils.monitor import recv_monitor_message


class ConnectionWatch:
    def __init__(self, ctx: zmq.Context, settings: Settings, add_reader: Callable[[zmq.Socket], None],
                 remove_reader: Callable[[zmq.Socket], None]) -> None:
        self._ctx = ctx
        self._settings = settings
        self._add_reader = add_reader  # the loop polls each monitor and calls disconnected(monitor)
        self._remove_reader = remove_reader
        self._watched: dict[str, tuple[str, zmq.Socket, zmq.Socket]] = {}  # id -> (endpoint, dealer, monitor)

    def sync(self, executors: dict[str, str]) -> None:
        """Watch exactly these executors (id -> block address)."""
        for executor_id, (endpoint, _, _) in list(self._watched.items()):
            if executors.get(executor_id) != endpoint:
                self._forget(executor_id)
        for executor_id, endpoint in executors.items():
            if executor_id not in self._watched:
                sock = transport.new_socket(self._ctx, zmq.DEALER, self._settings)  # CurveZMQ, like every cluster socket
                monitor = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
                sock.connect(endpoint)
                self._watched[executor_id] = (endpoint, sock, monitor)
                self._add_reader(monitor)

    def disconnected(self, monitor: zmq.Socket) -> list[str]:
        """The executor whose connection this monitor reports dropped (then no longer watched)."""
        gone: list[str] = []
        while monitor.poll(0):
            recv_monitor_message(monitor)
            for executor_id, (_, _, watched) in list(self._watched.items()):
                if watched is monitor:
                    self._forget(executor_id)
                    gone.append(executor_id)
            if monitor.closed:
                break
        return gone

    def _forget(self, executor_id: str) -> None:
        _, sock, monitor = self._watched.pop(executor_id)
        self._remove_reader(monitor)
        sock.disable_monitor()
        monitor.close(0)
        sock.close(0)

    def close(self) -> None:
        for executor_id in list(self._watched):
            self._forget(executor_id)
