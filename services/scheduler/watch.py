"""Noticing a dead executor by its dropped connection, well before its heartbeats are missed.

The scheduler keeps one DEALER connected to every live executor's block address and watches it
with a ZeroMQ socket monitor. When an executor's process dies its kernel closes the connection,
and the monitor reports the endpoint at once (about 2 ms on loopback, against a heartbeat budget
of 0.4 s). The DEALER never sends anything. Heartbeats remain the detector for what keeps the
connection open: a stopped (SIGSTOP) or hung process, or a partition the kernel has not noticed.
"""

from __future__ import annotations

import zmq
from zmq.utils.monitor import recv_monitor_message

from common import transport
from common.settings import Settings


class ConnectionWatch:
    def __init__(self, ctx: zmq.Context, settings: Settings) -> None:
        self._sock = transport.new_socket(ctx, zmq.DEALER, settings)  # CurveZMQ, like every cluster socket
        self.monitor = self._sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        self._watched: dict[str, str] = {}  # executor id -> endpoint

    def sync(self, executors: dict[str, str]) -> None:
        """Watch exactly these executors (id -> block address)."""
        for executor_id, endpoint in list(self._watched.items()):
            if executors.get(executor_id) != endpoint:
                self._forget(executor_id)
        for executor_id, endpoint in executors.items():
            if executor_id not in self._watched:
                self._sock.connect(endpoint)
                self._watched[executor_id] = endpoint

    def disconnected(self) -> list[str]:
        """Executors whose connection dropped since the last call (they are no longer watched)."""
        gone: list[str] = []
        while self.monitor.poll(0):
            event = recv_monitor_message(self.monitor)
            endpoint = event["endpoint"].decode() if isinstance(event["endpoint"], bytes) else str(event["endpoint"])
            for executor_id, watched in list(self._watched.items()):
                if watched == endpoint:
                    self._forget(executor_id)
                    gone.append(executor_id)
        return gone

    def _forget(self, executor_id: str) -> None:
        endpoint = self._watched.pop(executor_id)
        try:
            self._sock.disconnect(endpoint)
        except zmq.ZMQError:
            pass  # never connected, or already gone

    def close(self) -> None:
        self._sock.disable_monitor()
        self.monitor.close(0)
        self._sock.close(0)
