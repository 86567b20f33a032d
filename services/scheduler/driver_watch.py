"""Noticing a driver that vanished without cancelling its runs (killed, or its host gone).

A driver's one connection is its DEALER to the scheduler's ROUTER, and a ROUTER does not say whose
connection dropped. So a socket monitor on the ROUTER reports every dropped connection, and for a
short while after each the scheduler's core asks for a probe of the drivers it holds runs or
keyed state for (ProbeDrivers): each is sent a keep-alive Pong (nonce 0, which drivers ignore)
with ROUTER_MANDATORY on, and the ROUTER refuses at once (EHOSTUNREACH) a peer whose connection
is gone. Nothing is sent while no connection drops.

How soon a vanished driver is noticed: its kernel closes the connection when its process dies,
so a killed driver is noticed within milliseconds; a driver whose host or network vanished is
dropped by ZeroMQ's heartbeats (HEARTBEAT_TIMEOUT of the cluster sockets, transport.new_socket:
max(2 s, 4 death timeouts)). A driver busy in user code keeps its connection, even holding the
GIL: ZeroMQ's I/O thread answers the heartbeats. Its runs go on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import zmq
from squall.common import protocol, transport
from squall.common.protocol import Message
from zmq.utils.monitor import recv_monitor_message


class DriverWatch:
    def __init__(self, sock: zmq.Socket[bytes], probe: Message, add_reader: Callable[[zmq.Socket[bytes]], None]) -> None:
        self._sock = sock
        self._probe = protocol.encode(probe)
        self.monitor = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        add_reader(self.monitor)  # the loop calls disconnected() when it is readable

    def disconnected(self) -> None:
        """A connection to the ROUTER dropped (whose, probes tell): take the monitor's reports."""
        while self.monitor.poll(0):
            recv_monitor_message(self.monitor)

    def unreachable(self, drivers: Iterable[bytes]) -> list[bytes]:
        """The drivers among these whose connection is gone."""
        return [driver for driver in drivers if not self._reachable(driver)]

    def _reachable(self, driver: bytes) -> bool:
        self._sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        try:
            transport.send_frames(self._sock, [driver, *self._probe], int(zmq.NOBLOCK))
        except zmq.ZMQError as exc:
            return exc.errno != zmq.EHOSTUNREACH  # EAGAIN: its queue is full, but it is there
        finally:
            self._sock.setsockopt(zmq.ROUTER_MANDATORY, 0)
        return True

    def close(self) -> None:
        self._sock.disable_monitor()
        self.monitor.close(0)
