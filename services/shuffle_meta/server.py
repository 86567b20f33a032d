"""The shuffle_meta loop: one ROUTER socket and a timer for look-up deadlines.

It only moves bytes and time: each message that arrives, and each tick, is an event for the core
(state.py), and the core's Sends go out in order.

Block directory look-ups (LookupPersisted) go to the core after every other message read with
them. The scheduler asks where a job's persisted datasets are held as soon as the job before it
is over, while the executor that kept a block of that job sends its registration here on another
connection: the two can arrive together, in either order. So when the socket is readable, every
message already queued is read, and the look-ups among them are answered last: a registration
sent before the job's report is seen by the look-up that report leads to.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import zmq
from squall.common import metrics_endpoint, security, transport
from squall.common.core import Event, Received, Tick, stimulus
from squall.common.protocol import ErrorReply, LookupPersisted, Message
from squall.common.settings import Settings
from squall.services.shuffle_meta.metrics import ShuffleMetaCollector
from squall.services.shuffle_meta.state import ShuffleMetaState


class ShuffleMetaServer:
    def __init__(self, settings: Settings, log: Any, ready_file: str | None = None) -> None:
        self.settings = settings
        self.log = log
        self.state = ShuffleMetaState()
        self.metrics = metrics_endpoint.start(settings, log, "shuffle_meta")
        if self.metrics is not None:
            self.metrics.registry.register(ShuffleMetaCollector(self.state))
        security.check(settings, [settings.shuffle_meta_bind])
        self.ctx = zmq.Context()
        self.auth = security.start_authenticator(self.ctx, settings)  # before anything can connect
        self.sock = transport.new_socket(self.ctx, zmq.ROUTER, settings)
        self.endpoint = transport.bind(self.sock, settings.shuffle_meta_bind)
        self.loop = transport.ServiceLoop(settings, log)
        self.loop.add_reader(self.sock, self._on_readable)
        self.loop.every(0.05, self._tick)
        # Every message type the core takes goes to it; drain_router answers any other with ErrorReply.
        self.handlers: transport.RouterHandlers = {t: self._receive for t in self.state.handles()}
        self.handlers[LookupPersisted] = self._defer
        self._deferred: list[tuple[bytes, Message]] = []  # look-ups read in this pass, answered at its end
        if ready_file:
            metrics_endpoint.write_url_file(ready_file, self.metrics)
            transport.write_ready_file(ready_file, self.endpoint)
        log.info("listening", endpoint=self.endpoint)

    def run(self) -> None:
        try:
            self.loop.run()
        finally:
            self.sock.close(0)
            if self.auth is not None:
                self.auth.stop()
            if self.metrics is not None:
                self.metrics.close()
            self.ctx.term()

    def _on_readable(self, sock: zmq.Socket[bytes]) -> None:
        transport.drain_router(sock, self.settings, self.log, self.handlers, "shuffle_meta", limit=sys.maxsize)  # until none is left
        deferred, self._deferred = self._deferred, []
        for peer, msg in deferred:
            try:
                self._receive(peer, msg, [])
            except Exception as exc:
                self.log.exception("handler_failed", message=type(msg).__name__)
                reason = f"internal error handling {type(msg).__name__}: {exc}"
                transport.send(self.sock, ErrorReply(reason=reason, request_id=getattr(msg, "request_id", 0)), to=peer)

    def _defer(self, peer: bytes, msg: Message, payloads: list[object]) -> None:
        self._deferred.append((peer, msg))

    def _receive(self, peer: bytes, msg: Message, payloads: list[object]) -> None:
        self._perform(Received(msg=msg, payloads=payloads, peer=peer, now=time.monotonic(), stimulus_id=stimulus(type(msg).__name__)))

    def _tick(self) -> None:
        self._perform(Tick(now=time.monotonic(), stimulus_id=stimulus("tick")))

    def _perform(self, event: Event) -> None:
        for send in self.state.handle(event):
            transport.send(self.sock, send.msg, send.payloads, to=send.peer)
