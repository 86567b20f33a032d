"""The scheduler loop: one ROUTER socket for drivers and executors, a DEALER to shuffle_meta."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import zmq

from common import transport
from common.protocol import (
    ErrorReply,
    GetClusterStatus,
    Heartbeat,
    JobAccepted,
    JobDone,
    JobFailed,
    Message,
    Ping,
    Pong,
    RegisterExecutor,
    SubmitJob,
    TaskFailed,
    TaskFinished,
)
from common.settings import Settings
from services.scheduler.state import Action, SchedulerState, Send, ToShuffleMeta

Handler = Callable[[bytes, Any, list[object], float], list[Action]]


class SchedulerServer:
    def __init__(self, settings: Settings, log: Any, ready_file: str | None = None) -> None:
        self.settings = settings
        self.log = log
        self.state = SchedulerState(settings)
        self.ctx = zmq.Context()
        self.sock = transport.new_socket(self.ctx, zmq.ROUTER, settings)
        self.endpoint = transport.bind(self.sock, settings.scheduler_bind)
        self.meta = transport.new_socket(self.ctx, zmq.DEALER, settings)
        self.meta.connect(settings.shuffle_meta_address)
        self.loop = transport.ServiceLoop(settings, log)
        self.loop.add_reader(self.sock, self._on_readable)
        self.loop.add_reader(self.meta, self._on_meta_readable)
        self.loop.every(min(0.05, settings.heartbeat_interval / 2), self._tick)
        self.handlers: dict[type, Handler] = {
            RegisterExecutor: lambda peer, m, p, now: self.state.register(peer, m, now),
            Heartbeat: lambda peer, m, p, now: self.state.heartbeat(peer, m, now),
            SubmitJob: lambda peer, m, p, now: self.state.submit(peer, m, now),
            TaskFinished: lambda peer, m, p, now: self.state.task_finished(m, p, now),
            TaskFailed: lambda peer, m, p, now: self.state.task_failed(m, now),
            GetClusterStatus: lambda peer, m, p, now: [Send(peer, self.state.status())],
            Ping: lambda peer, m, p, now: [Send(peer, Pong(nonce=m.nonce, service="scheduler"))],
        }
        if ready_file:
            transport.write_ready_file(ready_file, self.endpoint)
        log.info("listening", endpoint=self.endpoint, shuffle_meta=settings.shuffle_meta_address)

    def run(self) -> None:
        try:
            self.loop.run()
        finally:
            self.sock.close(0)
            self.meta.close(0)
            self.ctx.term()

    def _on_readable(self, sock: zmq.Socket) -> None:
        transport.drain_router(sock, self.settings, self.log, self._dispatch)

    def _dispatch(self, peer: bytes, msg: Message, payloads: list[object]) -> None:
        handler = self.handlers.get(type(msg))
        if handler is None:
            self._perform([Send(peer, ErrorReply(reason=f"the scheduler does not handle {type(msg).__name__}"))])
            return
        self._perform(handler(peer, msg, payloads, time.monotonic()))

    def _on_meta_readable(self, sock: zmq.Socket) -> None:
        # shuffle_meta only answers the scheduler with errors (its messages to us are one-way).
        transport.drain_dealer(sock, self.settings, self.log, lambda m, p: self.log.warning("shuffle_meta_said", message=repr(m)))

    def _tick(self) -> None:
        self._perform(self.state.tick(time.monotonic()))

    def _perform(self, actions: list[Action]) -> None:
        while self.state.lost:
            executor_id, reason = self.state.lost.popleft()
            self.log.warning("executor_lost", executor=executor_id, reason=reason)
        for action in actions:
            if isinstance(action, Send):
                self._log_job_event(action.msg)
                transport.send(self.sock, action.msg, action.payloads, to=action.peer)
            elif isinstance(action, ToShuffleMeta):
                transport.send(self.meta, action.msg)

    def _log_job_event(self, msg: Message) -> None:
        if isinstance(msg, JobAccepted):
            self.log.info("job_accepted", job=msg.job_id, stages=msg.stages, tasks=msg.tasks)
        elif isinstance(msg, JobDone):
            self.log.info("job_done", job=msg.job_id, elapsed=round(msg.elapsed, 4))
        elif isinstance(msg, JobFailed):
            self.log.warning("job_failed", job=msg.job_id, kind=msg.kind, reason=msg.message)
