"""The shuffle_meta loop: one ROUTER socket, a handler table, a timer for look-up deadlines."""

from __future__ import annotations

import time
from typing import Any

import zmq

from common import transport
from common.protocol import (
    ErrorReply,
    ForgetExecutor,
    ForgetJob,
    LookupMapOutputs,
    Message,
    Ping,
    Pong,
    RegisterMapOutput,
)
from common.settings import Settings
from services.shuffle_meta.state import Reply, ShuffleMetaState


class ShuffleMetaServer:
    def __init__(self, settings: Settings, log: Any, ready_file: str | None = None) -> None:
        self.settings = settings
        self.log = log
        self.state = ShuffleMetaState()
        self.ctx = zmq.Context()
        self.sock = transport.new_socket(self.ctx, zmq.ROUTER, settings)
        self.endpoint = transport.bind(self.sock, settings.shuffle_meta_bind)
        self.loop = transport.ServiceLoop(settings, log)
        self.loop.add_reader(self.sock, self._on_readable)
        self.loop.every(0.05, self._tick)
        self.handlers = {
            RegisterMapOutput: self._on_register,
            LookupMapOutputs: self._on_lookup,
            ForgetJob: self._on_forget_job,
            ForgetExecutor: self._on_forget_executor,
            Ping: self._on_ping,
        }
        if ready_file:
            transport.write_ready_file(ready_file, self.endpoint)
        log.info("listening", endpoint=self.endpoint)

    def run(self) -> None:
        try:
            self.loop.run()
        finally:
            self.sock.close(0)
            self.ctx.term()

    def _on_readable(self, sock: zmq.Socket) -> None:
        transport.drain_router(sock, self.settings, self.log, self._dispatch)

    def _dispatch(self, peer: bytes, msg: Message, payloads: list[object]) -> None:
        handler = self.handlers.get(type(msg))
        if handler is None:
            self._send([Reply(peer, ErrorReply(reason=f"shuffle_meta does not handle {type(msg).__name__}"))])
            return
        self._send(handler(peer, msg))

    def _send(self, replies: list[Reply]) -> None:
        for r in replies:
            transport.send(self.sock, r.msg, to=r.peer)

    def _tick(self) -> None:
        self._send(self.state.tick(time.monotonic()))

    def _on_register(self, peer: bytes, msg: RegisterMapOutput) -> list[Reply]:
        return self.state.register(msg.job_id, msg.shuffle_id, msg.location)

    def _on_lookup(self, peer: bytes, msg: LookupMapOutputs) -> list[Reply]:
        return self.state.lookup(peer, msg, time.monotonic())

    def _on_forget_job(self, peer: bytes, msg: ForgetJob) -> list[Reply]:
        return self.state.forget_job(msg.job_id)

    def _on_forget_executor(self, peer: bytes, msg: ForgetExecutor) -> list[Reply]:
        self.state.forget_executor(msg.executor_id)
        return []

    def _on_ping(self, peer: bytes, msg: Ping) -> list[Reply]:
        return [Reply(peer, Pong(nonce=msg.nonce, service="shuffle_meta"))]
