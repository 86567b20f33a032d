"""Why a service did not answer: what a socket monitor saw while a DEALER tried to reach it.

A peer holding other CurveZMQ keys (or speaking plaintext to a CurveZMQ service) never gets a
message through, so from the messages alone it looks exactly like a wrong port. ZeroMQ's socket
monitor tells them apart at once: a refused handshake, a connection never accepted, or a
handshake that succeeded and then silence. Drivers (connect) and `squall health` use this to say
which it was, and a refused handshake fails at once instead of after the connect timeout.
"""

from __future__ import annotations

import re

import zmq
from squall.common.settings import Settings
from zmq.utils.monitor import recv_monitor_message

_HANDSHAKE_FAILED = (
    int(zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL) | int(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL) | int(zmq.EVENT_HANDSHAKE_FAILED_AUTH)
)
_MECHANISM_MISMATCH = int(zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH)
LOCAL_CLUSTER_HINT = "for a LocalCluster, connect with cluster.connect() or squall.connect(cluster): it holds the cluster's keys"


_ADDRESS = re.compile(r"tcp://(\[[0-9A-Fa-f:.]+\]|[^\s:/\[\]]+):\d{1,5}|(ipc|inproc)://\S+")


def address_problem(address: object, service: str) -> str:
    """What is wrong with an address to connect to ("" if nothing): ZeroMQ's own error for a
    malformed one says only "Invalid argument"."""
    if isinstance(address, str) and _ADDRESS.fullmatch(address):
        return ""
    hint = " (e.g. tcp://127.0.0.1:7077)"
    if isinstance(address, str) and re.fullmatch(r"[^\s:/]+:\d{1,5}", address):
        hint = f": did you mean tcp://{address}?"
    article = "an" if service[:1] in "aeiou" else "a"
    return f"{address!r} is not {article} {service} address: expected tcp://host:port{hint}"


class ConnectionProbe:
    """Watches one DEALER's connection attempts. Make it before the socket connects."""

    def __init__(self, sock: zmq.SyncSocket, address: str, settings: Settings) -> None:
        self.address = address
        self.settings = settings
        self._sock = sock
        self._monitor: zmq.SyncSocket | None = sock.get_monitor_socket()
        self.connected = False
        self.handshake_succeeded = False
        self.refused = ""  # why the peer refused the handshake, once it has

    def poll(self) -> str:
        """Read the events so far; the reason the handshake was refused ("" while it was not)."""
        while self._monitor is not None and not self.refused and self._monitor.poll(0):
            event = recv_monitor_message(self._monitor)
            kind, value = int(event["event"]), int(event["value"])
            if kind == zmq.EVENT_CONNECTED:
                self.connected = True
            elif kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.handshake_succeeded = True
            elif kind & _HANDSHAKE_FAILED:
                self.refused = self._refusal(kind, value)
        return self.refused

    def silence(self, service: str, timeout: float) -> str:
        """Why no `service` answered within `timeout` seconds, as far as the monitor saw."""
        head = f"no {service} answered at {self.address} within {timeout:.3g}s"
        if self.poll():
            return f"{head}: {self.refused}"
        if not self.connected:
            return f"{head}: nothing accepted a connection there (is the {service} running, and is the address right?)"
        if self.handshake_succeeded:
            return f"{head}: something there accepted this process's keys but did not answer as a Squall {service}"
        return (
            f"{head}: something there accepted the connection but did not complete a handshake; if it is the {service}, "
            f"its keys may differ from this process's (SQUALL_CURVE_PUBLIC_KEY, SQUALL_CURVE_SECRET_KEY); {LOCAL_CLUSTER_HINT}"
        )

    def close(self) -> None:
        if self._monitor is not None:
            self._sock.disable_monitor()
            self._monitor.close(0)
            self._monitor = None

    def _refusal(self, kind: int, value: int) -> str:
        # Which side reports a mismatch of mechanisms first is a race: the other side may see only
        # a connection closed during the handshake (no detail). A plaintext process is refused
        # only by a CurveZMQ service, though.
        if self.settings.plaintext:
            return (
                f"{self.address} speaks CurveZMQ and this process plaintext (SQUALL_PLAINTEXT is set): "
                f"use the cluster's keys (SQUALL_CURVE_PUBLIC_KEY, SQUALL_CURVE_SECRET_KEY) instead; {LOCAL_CLUSTER_HINT}"
            )
        if kind == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL and value == _MECHANISM_MISMATCH:
            return f"{self.address} speaks plaintext and this process CurveZMQ: set SQUALL_PLAINTEXT=true to talk to it (loopback only)"
        return (
            f"{self.address} refused the handshake: the cluster's CurveZMQ keys differ from this process's "
            f"(SQUALL_CURVE_PUBLIC_KEY, SQUALL_CURVE_SECRET_KEY), or it speaks plaintext; {LOCAL_CLUSTER_HINT}"
        )
