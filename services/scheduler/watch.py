"""Deciding that an executor's process is dead, without depending on its GIL.

The scheduler keeps a DEALER connected to each live executor's block address and watches it with
a ZeroMQ socket monitor. The DEALERs never send a message; ZeroMQ's own heartbeats (ZMTP PING and
PONG) run on them every heartbeat interval, and the executor's libzmq I/O thread answers them
whatever its Python threads are doing. So the connection drops, and the monitor reports it:

- when the process dies: its kernel closes the connection (about 2 ms on loopback);
- when it is stopped (SIGSTOP), frozen, or cut off by the network: no answer within the death
  budget (heartbeat_interval x heartbeat_misses), counted from the last thing it sent.

A task holding the GIL for minutes does neither. The monitor also reports when a connection is
up (its handshake done): from then on the application heartbeats no longer decide death.

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

Watched = tuple[str, int]  # (block address, which admission of the executor: Membership's `joined`)


def configure_heartbeats(sock: zmq.Socket[bytes], settings: Settings) -> None:
    """PING every heartbeat interval; drop the connection when nothing has come back for the death
    budget. libzmq starts the timeout at the first PING after the last thing received, so the
    budget is that PING's interval plus the timeout."""
    interval_ms = max(1, round(settings.heartbeat_interval * 1000))
    budget_ms = max(1, round(settings.death_timeout * 1000))
    sock.setsockopt(zmq.HEARTBEAT_IVL, interval_ms)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, max(interval_ms, budget_ms - interval_ms))


class ConnectionWatch:
    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], settings: Settings, add_reader: Callable[[zmq.Socket[bytes]], None],
                 remove_reader: Callable[[zmq.Socket[bytes]], None]) -> None:
        self._ctx = ctx
        self._settings = settings
        self._add_reader = add_reader  # the loop polls each monitor and calls changes(monitor)
        self._remove_reader = remove_reader
        self._watched: dict[str, tuple[Watched, zmq.Socket[bytes], zmq.Socket[bytes]]] = {}  # id -> (what, dealer, monitor)

    def count(self) -> int:
        """Watch connections open (one per registered executor)."""
        return len(self._watched)

    def sync(self, executors: dict[str, Watched]) -> None:
        """Watch exactly these executors (id -> (block address, admission))."""
        for executor_id, (watched, _, _) in list(self._watched.items()):
            if executors.get(executor_id) != watched:
                self._forget(executor_id)
        for executor_id, watched in executors.items():
            if executor_id not in self._watched:
                sock = transport.new_socket(self._ctx, zmq.DEALER, self._settings)  # CurveZMQ, like every cluster socket
                configure_heartbeats(sock, self._settings)
                monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)
                sock.connect(watched[0])
                self._watched[executor_id] = (watched, sock, monitor)
                self._add_reader(monitor)

    def changes(self, monitor: zmq.Socket[bytes]) -> tuple[list[tuple[str, int]], list[str]]:
        """What this monitor reports: ([(executor id, admission)] whose connection is now up,
        [executor id] whose connection dropped, no longer watched)."""
        up: list[tuple[str, int]] = []
        gone: list[str] = []
        owner = next((k for k, (_, _, m) in self._watched.items() if m is monitor), None)
        while owner is not None and monitor.poll(0):
            event = recv_monitor_message(monitor)["event"]
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                up.append((owner, self._watched[owner][0][1]))
            elif event == zmq.EVENT_DISCONNECTED:
                self._forget(owner)
                gone.append(owner)
                break
        return up, gone

    def _forget(self, executor_id: str) -> None:
        _, sock, monitor = self._watched.pop(executor_id)
        self._remove_reader(monitor)
        sock.disable_monitor()
        monitor.close(0)
        sock.close(0)

    def close(self) -> None:
        for executor_id in list(self._watched):
            self._forget(executor_id)
