"""The scheduler loop: one ROUTER socket for drivers and executors, a DEALER to shuffle_meta."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from typing import Any

import zmq
from squall.common import security, transport
from squall.common.protocol import (
    CancelRun,
    ErrorReply,
    ForgetStates,
    GetClusterStatus,
    GetMetrics,
    GetTracked,
    GroupDone,
    Heartbeat,
    JobDone,
    JobFailed,
    Message,
    Metrics,
    Ping,
    Pong,
    RegisterExecutor,
    ResultPartition,
    RunDone,
    StateCheckpointed,
    SubmitJobs,
    TaskFailed,
    TaskFinished,
)
from squall.common.settings import Settings
from squall.common.tracked import tracked_reply
from squall.services.scheduler.driver_watch import DriverWatch
from squall.services.scheduler.state import Action, SchedulerState, Send, ToShuffleMeta
from squall.services.scheduler.watch import ConnectionWatch

HUNG_NOTE = ("its process answers, but its heartbeats or its loop have stopped: a call holding the GIL, a task "
             "blocking the loop, or a deadlock; its work is left running")


class SchedulerServer:
    def __init__(self, settings: Settings, log: Any, ready_file: str | None = None) -> None:
        self.settings = settings
        self.log = log
        self.state = SchedulerState(settings)
        self.incarnation = uuid.uuid4().hex  # new at each start: drivers notice a restart by it
        security.check(settings, [settings.scheduler_bind, settings.shuffle_meta_address])
        self.ctx = zmq.Context()
        self.auth = security.start_authenticator(self.ctx, settings)  # before anything can connect
        self.sock = transport.new_socket(self.ctx, zmq.ROUTER, settings)
        self.endpoint = transport.bind(self.sock, settings.scheduler_bind)
        self.meta = transport.new_socket(self.ctx, zmq.DEALER, settings)
        self.meta.connect(settings.shuffle_meta_address)
        self.loop = transport.ServiceLoop(settings, log)
        self.loop.add_reader(self.sock, self._on_readable)
        self.loop.add_reader(self.meta, self._on_meta_readable)
        self._watched_version = -1
        self.watch = ConnectionWatch(self.ctx, settings, lambda m: self.loop.add_reader(m, self._on_watch), self.loop.remove_reader)
        self.loop.every(min(0.05, settings.heartbeat_interval / 2), self._tick)
        keep_alive = Pong(nonce=0, service="scheduler", incarnation=self.incarnation)
        self.drivers = DriverWatch(self.sock, keep_alive, lambda m: self.loop.add_reader(m, self._on_driver_disconnect))
        now = time.monotonic
        self.handlers: transport.RouterHandlers = {
            RegisterExecutor: lambda peer, m, p: self.state.register(peer, m, now()),
            Heartbeat: lambda peer, m, p: self.state.heartbeat(peer, m, now()),
            SubmitJobs: lambda peer, m, p: self.state.submit(peer, m, now()),
            CancelRun: lambda peer, m, p: self.state.cancel(m, now()),
            TaskFinished: lambda peer, m, p: self.state.task_finished(m, p, now()),
            TaskFailed: lambda peer, m, p: self.state.task_failed(m, now()),
            ResultPartition: lambda peer, m, p: self.state.result_partition(m, p, now()),
            GroupDone: lambda peer, m, p: self.state.group_done(m, now()),
            StateCheckpointed: lambda peer, m, p: self.state.state_checkpointed(m),
            ForgetStates: lambda peer, m, p: self.state.forget_states(m),
            GetClusterStatus: lambda peer, m, p: [Send(peer, self.state.status(now()))],
            GetMetrics: lambda peer, m, p: [Send(peer, Metrics(received=dict(self.received), sent=dict(self.sent)))],
            GetTracked: lambda peer, m, p: [Send(peer, tracked_reply("scheduler", self.tracked(), m.heap))],
            Ping: lambda peer, m, p: [Send(peer, Pong(nonce=m.nonce, service="scheduler", incarnation=self.incarnation))],
        }
        # Messages handled and sent, by type: shows what the scheduler is (not) involved in.
        self.received: Counter[str] = Counter()
        self.sent: Counter[str] = Counter()
        # shuffle_meta never answers the scheduler, except with errors.
        self.from_meta: transport.DealerHandlers = {
            ErrorReply: lambda m, p: self.log.warning("shuffle_meta_error", reason=m.reason),
        }
        if ready_file:
            transport.write_ready_file(ready_file, self.endpoint)
        log.info("listening", endpoint=self.endpoint, shuffle_meta=settings.shuffle_meta_address)

    def tracked(self) -> dict[str, int]:
        return {**self.state.tracked(), "watched": self.watch.count(), "message_types": len(self.received) + len(self.sent)}

    def run(self) -> None:
        try:
            self.loop.run()
        finally:
            self.watch.close()
            self.drivers.close()
            self.sock.close(0)
            if self.auth is not None:
                self.auth.stop()
            self.meta.close(0)
            self.ctx.term()

    def _on_readable(self, sock: zmq.Socket) -> None:
        transport.drain_router(sock, self.settings, self.log, self.handlers, "the scheduler", self._perform, self._count)

    def _count(self, msg: Message) -> None:
        self.received[type(msg).__name__] += 1

    def _on_meta_readable(self, sock: zmq.Socket) -> None:
        transport.drain_dealer(sock, self.settings, self.log, self.from_meta, "shuffle_meta")

    def _on_watch(self, monitor: zmq.Socket) -> None:
        up, gone = self.watch.changes(monitor)
        for executor_id, joined in up:
            self.state.members.connected(executor_id, joined)
        for executor_id in gone:
            if self.state.members.get(executor_id) is not None:
                reason = f"its connection dropped: closed, or silent for {self.settings.death_timeout:.2f}s"
                self._perform(self.state.executor_lost(executor_id, reason, time.monotonic()))

    def _tick(self) -> None:
        self._perform(self.state.tick(time.monotonic()))
        self._check_drivers()

    def _on_driver_disconnect(self, monitor: zmq.Socket) -> None:
        self.drivers.disconnected()
        self._check_drivers()

    def _check_drivers(self) -> None:
        now = time.monotonic()
        for driver in self.drivers.gone(self.state.drivers(), now):
            self.log.warning("driver_gone", driver=driver.hex())
            self._perform(self.state.driver_lost(driver, now))

    def _perform(self, actions: list[Action] | None) -> None:
        while self.state.lost:
            executor_id, reason = self.state.lost.popleft()
            self.log.warning("executor_lost", executor=executor_id, reason=reason)
        while self.state.recoveries:
            self.log.warning("replaying", **self.state.recoveries.popleft())  # type: ignore[arg-type]
        while self.state.cancellations:
            self.log.info("run_cancelled", **self.state.cancellations.popleft())  # type: ignore[arg-type]
        while self.state.hung:
            hung, details = self.state.hung.popleft()
            if hung:
                self.log.warning("executor_hung", **details, note=HUNG_NOTE)  # type: ignore[arg-type]
            else:
                self.log.info("executor_beating_again", **details)  # type: ignore[arg-type]
        members = self.state.members
        if members.version != self._watched_version:  # not on every message: only when membership changed
            self._watched_version = members.version
            self.watch.sync(members.watched())
        for action in actions or ():
            self.sent[type(action.msg).__name__] += 1
            if isinstance(action, Send):
                self._log_job_event(action.msg)
                if action.frames is not None:
                    transport.send_frames(self.sock, [action.peer, *action.frames])
                else:
                    transport.send(self.sock, action.msg, action.payloads, to=action.peer)
            elif isinstance(action, ToShuffleMeta):
                transport.send(self.meta, action.msg)

    def _log_job_event(self, msg: Message) -> None:
        if isinstance(msg, RunDone):
            self.log.info("run_done", run=msg.run_id, groups=len(msg.groups))
        elif isinstance(msg, JobDone):
            self.log.debug("job_done", job=msg.job_id, elapsed=round(msg.elapsed, 4))
        elif isinstance(msg, JobFailed):
            self.log.warning("job_failed", job=msg.job_id, kind=msg.kind, reason=msg.message)
