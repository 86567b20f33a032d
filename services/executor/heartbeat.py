"""The executor's heartbeat thread: beats on its own socket, whatever the loop is doing.

Beats say that the executor's Python threads run, for how long its loop has not gone round, and
how late the thread itself woke lately (the process stopped or starved: a straggler, speeds.py).
They do not decide death: the scheduler's watch connection does (ZeroMQ heartbeats, answered
without the GIL), so a task holding the GIL for long is no death. Beats silent, or a loop silent,
past hung_timeout get the executor reported as hung. If the scheduler answers a beat with
Reregister (it restarted, or gave up on us), the thread stops beating and wakes the loop through
a pipe, and the loop registers again.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import zmq
from squall.common import protocol, transport
from squall.common.protocol import Heartbeat, ProtocolError, Reregister
from squall.common.settings import Settings

# Between beats the thread wakes this often, to measure how late it wakes: a beat carries the
# longest delay since the previous one. A process stopped or starved for tens of milliseconds of
# every moment shows it in every beat, whatever the phase of its stops against the beats (one
# wake-up per beat would see it only when a beat happened to fall in a stop).
STALL_PROBE = 0.01
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_bytes() -> int:
    """This process's resident memory (0 where /proc does not tell)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return 0


class Heartbeater:
    def __init__(self, ctx: zmq.Context[Any], settings: Settings, executor_id: str, incarnation: str, log: Any) -> None:
        self.settings = settings
        self.log = log
        self.beat = Heartbeat(executor_id=executor_id, incarnation=incarnation)
        self.registration = 0  # the loop bumps it before each registration after the first
        self.active = threading.Event()  # set while we are registered
        self.reregister = threading.Event()  # the scheduler asked us to register again
        self.wakeup = transport.Wakeup()  # the loop polls wakeup.fd
        self.loop_seen = time.monotonic()  # when the loop last went round (it calls loop_alive)
        self.load = (0, 0, 0)  # latency tasks, batch tasks, suspended ones, as the loop last saw them (it sets it whole)
        # Persisted bytes by dataset, and batch tasks finished by "job:stage", as the loop last saw
        # them (it sets each whole; for the dashboard).
        self.persisted: dict[str, int] = {}
        self.batch_done: dict[str, int] = {}
        self._ctx = ctx
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name="squall-heartbeat", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)

    def _work(self) -> None:
        sock = self._connect()
        connected_for = self.registration
        try:
            due = time.monotonic() + self.settings.heartbeat_interval
            stalled = 0.0  # the longest this thread woke late since the last beat
            probe = time.monotonic() + STALL_PROBE
            while not self._stop.wait(max(0.0, min(probe, due) - time.monotonic())):
                now = time.monotonic()
                stalled = max(stalled, now - min(probe, due))  # stopped or starved for that long
                probe = now + STALL_PROBE
                if now < due:
                    continue
                due = max(due + self.settings.heartbeat_interval, now)
                if self.active.is_set() and connected_for != self.registration:
                    # Registered again: beat on a fresh connection, not one that may be stuck
                    # behind a healed partition's backed-off retransmissions.
                    sock.close(0)
                    sock, connected_for = self._connect(), self.registration
                if self.active.is_set():
                    loop_silent = round(max(0.0, now - self.loop_seen), 3)
                    latency, batch, suspended = self.load
                    persisted = self.persisted
                    transport.try_send(sock, Heartbeat(executor_id=self.beat.executor_id, incarnation=self.beat.incarnation,
                                                       registration=self.registration, loop_silent=loop_silent,
                                                       latency_tasks=latency, batch_tasks=batch, suspended_tasks=suspended,
                                                       stalled=round(stalled, 4), memory_bytes=resident_bytes(),
                                                       persisted_bytes=sum(persisted.values()), persisted=persisted,
                                                       batch_done=self.batch_done))
                stalled = 0.0
                while sock.poll(0):
                    self._answer(sock.recv_multipart())
        finally:
            sock.close(0)

    def loop_alive(self) -> None:
        """Called by the loop at each round of a timer: beats then tell how long it has been stuck."""
        self.loop_seen = time.monotonic()

    def _connect(self) -> zmq.Socket[Any]:
        sock = transport.new_socket(self._ctx, zmq.DEALER, self.settings)
        sock.connect(self.settings.scheduler_address)
        return sock

    def _answer(self, frames: list[bytes]) -> None:
        try:
            msg, _ = protocol.decode(frames, self.settings.max_message_bytes)
        except ProtocolError as exc:
            self.log.warning("bad_message", error=str(exc), source="scheduler")
            return
        if isinstance(msg, Reregister):
            if msg.registration < self.registration:
                return  # it answers a beat from before our latest registration, which it has seen since
            self.active.clear()
            self.reregister.set()
            self.wakeup.signal()
