"""The scheduler loop: one ROUTER socket for drivers and executors, a DEALER to shuffle_meta.

It only moves bytes and time: what arrives (a message, a tick, a watch connection up or down, a
dropped connection) becomes an event for the core (state.py), and the core's instructions are
carried out in order. Every decision is the core's.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import msgspec
import zmq
from squall.common import metrics_endpoint, security, transport
from squall.common.core import Event, Log, Received, Send, Tick, ToShuffleMeta, stimulus
from squall.common.protocol import ErrorReply, Message, PersistedLocations, Pong
from squall.common.settings import Settings
from squall.services.scheduler.dashboard import start_dashboard
from squall.services.scheduler.driver_watch import DriverWatch
from squall.services.scheduler.events import (
    ConnectionDropped,
    DriversGone,
    ExecutorConnected,
    ExecutorDisconnected,
    ProbeDrivers,
    WatchExecutors,
)
from squall.services.scheduler.metrics import SchedulerCollector
from squall.services.scheduler.state import SchedulerState
from squall.services.scheduler.watch import ConnectionWatch

# How often the core is given a Tick: deadlines (heartbeats, look-ups, hand-overs) and late
# micro-batches to copy are noticed this promptly (speculation: a copy a tick late is worth less).
TICK_SECONDS = 0.01
# How often the dashboard is handed a fresh snapshot of the cluster (it polls every second).
SNAPSHOT_SECONDS = 0.5


class SchedulerServer:
    def __init__(self, settings: Settings, log: Any, ready_file: str | None = None) -> None:
        self.settings = settings
        self.log = log
        # A new incarnation at each start; the clock offset turns batch times (wall clock) into the core's.
        self.state = SchedulerState(settings, incarnation=uuid.uuid4().hex, clock_offset=time.time() - time.monotonic())
        security.check(settings, [settings.scheduler_bind, settings.shuffle_meta_address])
        self.metrics = metrics_endpoint.start(settings, log, "scheduler")
        if self.metrics is not None:
            self.metrics.registry.register(SchedulerCollector(self.state))
            self.state.observed.metrics_url = self.metrics.url  # the snapshot shows it
        self.ctx = zmq.Context()
        self.auth = security.start_authenticator(self.ctx, settings)  # before anything can connect
        self.sock = transport.new_socket(self.ctx, zmq.ROUTER, settings)
        self.endpoint = transport.bind(self.sock, settings.scheduler_bind)
        self.state.observed.address, self.state.observed.started = self.endpoint, time.time()
        self.meta = transport.new_socket(self.ctx, zmq.DEALER, settings)
        self.meta.connect(settings.shuffle_meta_address)
        self.loop = transport.ServiceLoop(settings, log)
        self.loop.add_reader(self.sock, self._on_readable)
        self.loop.add_reader(self.meta, self._on_meta_readable)
        self.watch = ConnectionWatch(self.ctx, settings, lambda m: self.loop.add_reader(m, self._on_watch), self.loop.remove_reader)
        self.loop.every(min(TICK_SECONDS, settings.heartbeat_interval / 2), self._tick)
        keep_alive = Pong(nonce=0, service="scheduler", incarnation=self.state.incarnation)
        self.drivers = DriverWatch(self.sock, keep_alive, lambda m: self.loop.add_reader(m, self._on_driver_disconnect))
        # Every message type the core takes goes to it; drain_router answers any other with ErrorReply.
        # shuffle_meta answers the scheduler's block look-ups (persisted datasets), and errors:
        # those come only on its own socket.
        from_meta = (ErrorReply, PersistedLocations)
        self.handlers: transport.RouterHandlers = {t: self._receive for t in self.state.handles() if t not in from_meta}
        self.from_meta: transport.DealerHandlers = {ErrorReply: self._receive_from_meta, PersistedLocations: self._receive_from_meta}
        self.dashboard = start_dashboard(settings.dashboard_bind, settings.dashboard_port, log)
        self._snapshot_failing = False
        if self.dashboard is not None:
            self.state.observed.dashboard_url = self.dashboard.url
            self._publish_snapshot()
            self.loop.every(SNAPSHOT_SECONDS, self._publish_snapshot)
        if ready_file:
            if self.dashboard is not None:  # before the ready file: whoever waits for it finds both
                transport.write_ready_file(ready_file + ".dashboard", self.dashboard.url)
            metrics_endpoint.write_url_file(ready_file, self.metrics)
            transport.write_ready_file(ready_file, self.endpoint)
        log.info("listening", endpoint=self.endpoint, shuffle_meta=settings.shuffle_meta_address)

    def run(self) -> None:
        try:
            self.loop.run()
        finally:
            if self.dashboard is not None:
                self.dashboard.close()
            self.watch.close()
            self.drivers.close()
            self.sock.close(0)
            if self.auth is not None:
                self.auth.stop()
            self.meta.close(0)
            if self.metrics is not None:
                self.metrics.close()
            self.ctx.term()

    # --- what happens, as events ----------------------------------------------------------------

    def _on_readable(self, sock: zmq.Socket[bytes]) -> None:
        transport.drain_router(sock, self.settings, self.log, self.handlers, "the scheduler")

    def _receive(self, peer: bytes | None, msg: Message, payloads: list[object]) -> None:
        self._perform(Received(msg=msg, payloads=payloads, peer=peer, now=time.monotonic(), stimulus_id=stimulus(type(msg).__name__)))

    def _on_meta_readable(self, sock: zmq.Socket[bytes]) -> None:
        transport.drain_dealer(sock, self.settings, self.log, self.from_meta, "shuffle_meta")

    def _receive_from_meta(self, msg: Message, payloads: list[object]) -> None:
        self._receive(None, msg, payloads)

    def _on_watch(self, monitor: zmq.Socket[bytes]) -> None:
        up, gone = self.watch.changes(monitor)
        for executor_id, joined in up:
            self._perform(ExecutorConnected(executor_id=executor_id, joined=joined, now=time.monotonic(), stimulus_id=stimulus("watch-up")))
        for executor_id in gone:
            self._perform(ExecutorDisconnected(executor_id=executor_id, now=time.monotonic(), stimulus_id=stimulus("watch-down")))

    def _tick(self) -> None:
        self._perform(Tick(now=time.monotonic(), stimulus_id=stimulus("tick")))

    def _publish_snapshot(self) -> None:
        # The snapshot is built here, on the loop, and handed over as finished bytes: the
        # dashboard's thread never reads the core. A page for people must never stop the
        # scheduler: a snapshot that cannot be built is logged (once, not twice a second) and
        # the last one stays served.
        if self.dashboard is None:
            return
        try:
            self.dashboard.publish(msgspec.json.encode(self.state.snapshot(time.time())))
            self._snapshot_failing = False
        except Exception:
            if not self._snapshot_failing:
                self.log.exception("dashboard_snapshot_failed")
            self._snapshot_failing = True

    def _on_driver_disconnect(self, monitor: zmq.Socket[bytes]) -> None:
        self.drivers.disconnected()
        self._perform(ConnectionDropped(now=time.monotonic(), stimulus_id=stimulus("disconnect")))

    # --- what the core decided ------------------------------------------------------------------

    def _perform(self, event: Event) -> None:
        for ins in self.state.handle(event):
            if type(ins) is Send:
                if ins.frames is not None:
                    transport.send_frames(self.sock, [ins.peer, *ins.frames])
                else:
                    transport.send(self.sock, ins.msg, ins.payloads, to=ins.peer)
            elif type(ins) is ToShuffleMeta:
                transport.send(self.meta, ins.msg)
            elif type(ins) is Log:
                getattr(self.log, ins.level)(ins.event, stimulus=event.stimulus_id, **ins.fields)
            elif type(ins) is WatchExecutors:
                self.watch.sync(ins.executors)
            elif type(ins) is ProbeDrivers:
                gone = self.drivers.unreachable(ins.drivers)
                if gone:
                    self._perform(DriversGone(drivers=tuple(gone), now=time.monotonic(), stimulus_id=event.stimulus_id))
