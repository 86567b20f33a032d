"""The shuffle_meta loop: one ROUTER socket, a handler table, a timer for look-up deadlines."""

from __future__ import annotations

import time
from typing import Any

import zmq
from squall.common import security, transport
from squall.common.protocol import (
    ForgetExecutor,
    ForgetJob,
    GetTracked,
    LookupMapOutputs,
    Ping,
    Pong,
    RegisterMapOutputs,
)
from squall.common.settings import Settings
from squall.common.tracked import tracked_reply
from squall.services.shuffle_meta.state import Reply, ShuffleMetaState


class ShuffleMetaServer:
    def __init__(self, settings: Settings, log: Any, ready_file: str | None = None) -> None:
        self.settings = settings
        self.log = log
        self.state = ShuffleMetaState()
        security.check(settings, [settings.shuffle_meta_bind])
        self.ctx = zmq.Context()
        self.auth = security.start_authenticator(self.ctx, settings)  # before anything can connect
        self.sock = transport.new_socket(self.ctx, zmq.ROUTER, settings)
        self.endpoint = transport.bind(self.sock, settings.shuffle_meta_bind)
        self.loop = transport.ServiceLoop(settings, log)
        self.loop.add_reader(self.sock, self._on_readable)
        self.loop.every(0.05, self._tick)
        self.handlers: transport.RouterHandlers = {
            RegisterMapOutputs: lambda peer, m, p: [r for o in m.outputs for r in self.state.register(o.job_id, o.shuffle_id, o.location)],
            LookupMapOutputs: lambda peer, m, p: self.state.lookup(peer, m, time.monotonic()),
            ForgetJob: lambda peer, m, p: [r for job_id in m.job_ids for r in self.state.forget_job(job_id)],
            ForgetExecutor: lambda peer, m, p: self.state.forget_executor(m.executor_id),
            Ping: lambda peer, m, p: [Reply(peer, Pong(nonce=m.nonce, service="shuffle_meta"))],
            GetTracked: lambda peer, m, p: [Reply(peer, tracked_reply("shuffle_meta", self.state.tracked(), m.heap))],
        }
        if ready_file:
            transport.write_ready_file(ready_file, self.endpoint)
        log.info("listening", endpoint=self.endpoint)

    def run(self) -> None:
        try:
            self.loop.run()
        finally:
            self.sock.close(0)
            if self.auth is not None:
                self.auth.stop()
            self.ctx.term()

    def _on_readable(self, sock: zmq.Socket) -> None:
        transport.drain_router(sock, self.settings, self.log, self.handlers, "shuffle_meta", self._send)

    def _send(self, replies: list[Reply] | None) -> None:
        for r in replies or ():
            transport.send(self.sock, r.msg, to=r.peer)

    def _tick(self) -> None:
        self._send(self.state.tick(time.monotonic()))
