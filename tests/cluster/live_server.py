"""Running a service's server in this process, on real sockets, with its core's handle() recorded:
every event it was given and the instructions it returned. Tests then compare what peers received
with what handle() returned, to show the server only moves bytes and time.

The server's loop runs in the main thread (it installs signal handlers, which only the main thread
may); the test's peers are driven from a second thread, and the loop stops when that returns.
"""

from __future__ import annotations

import gc
import signal
import threading
from collections.abc import Callable
from typing import Any

import zmq
from squall.common import protocol, transport
from squall.common.core import Event, Received, Send
from squall.common.protocol import Message
from squall.common.settings import Settings

from tests.cluster.helpers import BIG


class RecordingLog:
    """Stands in for the service's structlog logger: keeps (level, event, fields)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Callable[..., None]:
        def write(event: str, **fields: Any) -> None:
            self.lines.append((level, event, fields))

        return write


class Recorder:
    """Wraps a core's handle(): keeps each event with the instructions it returned, in order."""

    def __init__(self, core: Any) -> None:
        self.calls: list[tuple[Event, list[Any]]] = []
        handle = core.handle

        def recorded(event: Event) -> list[Any]:
            instructions = handle(event)
            self.calls.append((event, list(instructions)))
            return instructions

        core.handle = recorded

    def instructions(self, kind: type | None = None) -> list[Any]:
        return [i for _, out in list(self.calls) for i in out if kind is None or isinstance(i, kind)]

    def received_types(self) -> set[type]:
        return {type(e.msg) for e, _ in list(self.calls) if isinstance(e, Received)}

    def event_types(self) -> set[type]:
        return {type(e) for e, _ in list(self.calls)}

    def sent_to(self, peer: bytes) -> list[tuple[Message, list[object]]]:
        return [(i.msg, list(i.payloads)) for i in self.instructions(Send) if i.peer == peer]


def serve_while(server: Any, drive: Callable[[], None], join_timeout: float = 10.0) -> None:
    """Run `server` (its run() in this thread) while `drive` runs in another; stop it when `drive`
    returns or raises (re-raised here). What the loop changes of the process is put back."""
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            drive()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            errors.append(exc)
        finally:
            server.loop.stop()

    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    threshold = gc.get_threshold()
    thread = threading.Thread(target=worker, name="drive", daemon=True)
    thread.start()
    try:
        server.run()
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        thread.join(join_timeout)
    if errors:
        raise errors[0]


def dealer(ctx: zmq.Context[zmq.Socket[bytes]], settings: Settings, address: str, identity: bytes) -> zmq.Socket[bytes]:
    """A cluster DEALER (the cluster's keys) with a routing identity of our choosing."""
    sock = transport.new_socket(ctx, zmq.DEALER, settings)
    sock.setsockopt(zmq.ROUTING_ID, identity)
    sock.connect(address)
    return sock


Inbox = list[tuple[Message, list[object]]]


def drain(sock: zmq.Socket[bytes], into: Inbox, senders: list[bytes] | None = None) -> Inbox:
    """Decode whatever the socket holds now into `into`; on a ROUTER, pass `senders` to keep each
    message's routing identity there."""
    while sock.poll(0):
        frames = sock.recv_multipart()
        if senders is not None:
            senders.append(frames[0])
            frames = frames[1:]
        into.append(protocol.decode(frames, BIG))
    return into
