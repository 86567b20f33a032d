"""Socket helpers and the one event loop every service runs.

A service owns one thread: a ``zmq.Poller`` over its sockets plus a heap of timers. Handlers are
plain callables; the loop only moves bytes and time. Malformed input never escapes a handler:
``ServiceLoop`` catches ``ProtocolError`` at the socket boundary and answers it.
"""

from __future__ import annotations

import gc
import heapq
import itertools
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import zmq
from squall.common import c_heap, protocol, security
from squall.common.protocol import ErrorReply, Message, ProtocolError
from squall.common.settings import Settings


def new_socket(ctx: zmq.SyncContext, kind: int, settings: Settings) -> zmq.SyncSocket:
    """A cluster socket: no linger, the message size limit (larger messages are refused by
    ZeroMQ itself), and CurveZMQ with the cluster's keys (a ROUTER serves, a DEALER connects)."""
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, settings.max_message_bytes)
    # ZeroMQ's own heartbeats (answered by its I/O thread, whatever Python is doing): a connection
    # that stays silent for a few seconds is dropped and, on the connecting side, made again.
    # After a network partition heals, TCP's backed-off retransmissions of the old connection
    # could otherwise hold messages back for up to two minutes. (Deaths are detected sooner, by
    # the scheduler's watch connections, whose timeout is the death budget: scheduler/watch.py;
    # this one is kept well above it so a busy machine never trips it.)
    interval_ms = max(100, int(settings.heartbeat_interval * 1000))
    sock.setsockopt(zmq.HEARTBEAT_IVL, interval_ms)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, max(2000, int(settings.death_timeout * 4000)))
    # A connection attempt made during a partition waits out TCP's SYN backoff (1, 2, 4, 8 s...)
    # after the partition heals; give up on an attempt after a second and start a fresh one.
    sock.setsockopt(zmq.CONNECT_TIMEOUT, 1000)
    security.configure(sock, settings, server=kind == zmq.ROUTER)
    return sock


def bind(sock: zmq.SyncSocket, endpoint: str) -> str:
    """Bind to an endpoint (``tcp://host:*`` picks a free port) and return the bound endpoint."""
    sock.bind(endpoint)
    return sock.getsockopt_string(zmq.LAST_ENDPOINT)


def advertised(endpoint: str, host: str) -> str:
    """The address peers should use for a bound endpoint: replace a wildcard host."""
    if not endpoint.startswith("tcp://"):
        return endpoint
    bound_host, _, port = endpoint[len("tcp://") :].rpartition(":")
    if host:
        return f"tcp://{host}:{port}"
    if bound_host in ("0.0.0.0", "*", "[::]"):
        return f"tcp://127.0.0.1:{port}"
    return endpoint


# pyzmq's sugar layer (send_multipart, enum flags) costs about 4 us per message; the backend's
# send with plain int flags about 0.5 us. This engine lives on hops, so frames go out directly.
_backend_send = zmq.backend.Socket.send
_SNDMORE = int(zmq.SNDMORE)
_NOBLOCK = int(zmq.NOBLOCK)


def send_frames(sock: zmq.SyncSocket, frames: Sequence[object], flags: int = 0) -> None:
    """Send a multipart message. With NOBLOCK a full queue raises zmq.Again before any frame of
    the message is queued (ZeroMQ queues multipart messages atomically)."""
    last = len(frames) - 1
    for i, frame in enumerate(frames):
        # Frames are typed object across the protocol (bytes, memoryviews or zmq.Frames, which
        # ZeroMQ checks as it sends); pyzmq's overloads want one of those types by name.
        _backend_send(sock, frame, flags | _SNDMORE if i < last else flags)  # type: ignore[call-overload]


def send(sock: zmq.SyncSocket, msg: Message, payloads: Sequence[object] = (), to: bytes | None = None) -> None:
    frames = protocol.encode(msg, payloads)
    if to is not None:
        frames.insert(0, to)
    send_frames(sock, frames)


def try_send(sock: zmq.SyncSocket, msg: Message, payloads: Sequence[object] = ()) -> bool:
    """Send without blocking; False if the socket cannot take it now (no peer, queue full).

    For DEALERs towards peers that may be dead: a blocking send there would stall the loop."""
    try:
        send_frames(sock, protocol.encode(msg, payloads), _NOBLOCK)
    except zmq.Again:
        return False
    return True


def write_ready_file(path: str, endpoint: str) -> None:
    """Tell a parent process where we listen, atomically (it polls for the file)."""
    tmp = Path(path + ".tmp")
    tmp.write_text(endpoint)
    os.replace(tmp, path)


class Wakeup:
    """A pipe another thread writes a byte to, to wake a ServiceLoop that polls `fd`."""

    def __init__(self) -> None:
        self.fd, self._write_fd = os.pipe()
        os.set_blocking(self.fd, False)
        os.set_blocking(self._write_fd, False)

    def signal(self) -> None:
        try:
            os.write(self._write_fd, b"!")
        except BlockingIOError:
            pass  # the pipe is full of wake-ups not yet drained: the poller will wake anyway

    def close(self) -> None:
        for fd in (self.fd, self._write_fd):
            try:
                os.close(fd)
            except OSError:
                pass

    def drain(self) -> None:
        try:
            while os.read(self.fd, 4096):
                pass
        except BlockingIOError:
            pass


class ServiceLoop:
    """One thread: poll sockets, run due timers, dispatch decoded messages to handlers."""

    def __init__(self, settings: Settings, log: Any) -> None:
        self.settings = settings
        self.log = log
        self.poller = zmq.Poller()
        self._readers: dict[Any, Callable[[Any], None]] = {}
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._running = False
        self.exit_code = 0  # what the process exits with once run() returns
        # SIGTERM stops the loop, unless the service leaves gracefully: then on_terminate's
        # function runs on the loop (not in the signal handler) once per signal.
        self._terminate: Callable[[], None] | None = None
        self._term_wakeup: Wakeup | None = None
        self._terms = self._terms_seen = 0

    # --- registration ---------------------------------------------------------------------------

    def add_reader(self, sock: zmq.SyncSocket | int, on_readable: Callable[[Any], None]) -> None:
        """Call `on_readable(sock)` when a socket (or a file descriptor) has input."""
        self._readers[sock] = on_readable
        self.poller.register(sock, zmq.POLLIN)

    def remove_reader(self, sock: zmq.SyncSocket) -> None:
        self._readers.pop(sock, None)
        self.poller.unregister(sock)

    def call_at(self, when: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._timers, (when, next(self._seq), fn))

    def call_later(self, delay: float, fn: Callable[[], None]) -> None:
        self.call_at(time.monotonic() + delay, fn)

    def every(self, interval: float, fn: Callable[[], None]) -> None:
        def tick() -> None:
            try:
                fn()
            finally:
                self.call_later(interval, tick)

        self.call_later(interval, tick)

    def on_terminate(self, fn: Callable[[], None]) -> None:
        """Call `fn` on the loop at each SIGTERM instead of stopping (it decides when to stop)."""
        self._terminate = fn
        self._term_wakeup = Wakeup()
        self.add_reader(self._term_wakeup.fd, self._terminated)

    # --- running --------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._running

    def stop(self, *_: object) -> None:
        self._running = False

    def exit(self, code: int) -> None:
        """Stop, and have the process exit with `code`."""
        self.exit_code = code
        self._running = False

    def _on_sigterm(self, *_: object) -> None:
        if self._term_wakeup is None:
            self.stop()
        else:
            self._terms += 1
            self._term_wakeup.signal()

    def _terminated(self, fd: int) -> None:
        assert self._term_wakeup is not None and self._terminate is not None
        self._term_wakeup.drain()
        while self._terms_seen < self._terms:
            self._terms_seen += 1
            self._terminate()

    def run(self) -> None:
        self._running = True
        # Everything built so far lives as long as the service: keep it out of the cyclic GC's
        # scans, and collect the young generation less often (the loop allocates many small
        # short-lived messages that reference counting frees anyway).
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 20, 20)
        signal.signal(signal.SIGTERM, self._on_sigterm)
        signal.signal(signal.SIGINT, self.stop)
        if self.settings.parent_pid:
            self.every(0.25, self._check_parent)
        if self.settings.memory_trim_interval > 0:  # free C-heap pages back to the OS (common.c_heap)
            c_heap.map_large_blocks()
            self.every(self.settings.memory_trim_interval, c_heap.trim)
        while self._running:
            timeout_ms = self._run_due_timers()
            for sock, _ in self.poller.poll(timeout_ms):
                handler = self._readers.get(sock)
                if handler is not None:
                    handler(sock)

    def _run_due_timers(self) -> int:
        """Run the timers due when this pass starts (not ones they add: those wait for the next
        pass, after a poll), and return the poll timeout until the next one, in ms."""
        now = time.monotonic()
        while self._timers:
            when, _, fn = self._timers[0]
            if when > now:
                remaining = when - time.monotonic()
                return 0 if remaining <= 0 else int(remaining * 1000) + 1
            heapq.heappop(self._timers)
            try:
                fn()
            except Exception:
                self.log.exception("timer_failed")
        return 1000

    def _check_parent(self) -> None:
        if os.getppid() != self.settings.parent_pid:
            self.log.warning("parent_gone", parent_pid=self.settings.parent_pid)
            self.stop()


RouterHandlers = Mapping[type, Callable[[bytes, Any, list[object]], Any]]
DealerHandlers = Mapping[type, Callable[[Any, list[object]], Any]]


def drain_router(
    sock: zmq.SyncSocket,
    settings: Settings,
    log: Any,
    handlers: RouterHandlers,
    service: str,
    perform: Callable[[Any], None] = lambda result: None,
    observe: Callable[[Message], None] | None = None,
    limit: int = 256,
) -> None:
    """Read what a ROUTER socket has (up to `limit` messages), dispatch each through the handler
    table, and pass each handler's result to `perform`.

    A message that does not decode, that the table does not handle, or whose handler raises is
    answered with ErrorReply; none of them stops the loop.
    """
    for _ in range(limit):
        try:
            frames = sock.recv_multipart(_NOBLOCK)
        except zmq.Again:
            return
        identity = frames[0]
        try:
            msg, payloads = protocol.decode(frames[1:], settings.max_message_bytes)
        except ProtocolError as exc:
            log.warning("bad_message", error=str(exc), frames=len(frames) - 1)
            send(sock, ErrorReply(reason=f"protocol error: {exc}"), to=identity)
            continue
        if observe is not None:
            observe(msg)
        handler = handlers.get(type(msg))
        if handler is None:
            send(sock, ErrorReply(reason=f"{service} does not handle {type(msg).__name__}"), to=identity)
            continue
        try:
            perform(handler(identity, msg, payloads))
        except Exception as exc:
            log.exception("handler_failed", message=type(msg).__name__)
            send(sock, ErrorReply(reason=f"internal error handling {type(msg).__name__}: {exc}"), to=identity)


def drain_dealer(
    sock: zmq.SyncSocket,
    settings: Settings,
    log: Any,
    handlers: DealerHandlers,
    source: str,
    perform: Callable[[Any], None] = lambda result: None,
    limit: int = 256,
) -> None:
    """Like drain_router, for a DEALER socket: no identity, so problems are logged, not answered."""
    for _ in range(limit):
        try:
            frames = sock.recv_multipart(_NOBLOCK)
        except zmq.Again:
            return
        try:
            msg, payloads = protocol.decode(frames, settings.max_message_bytes)
        except ProtocolError as exc:
            log.warning("bad_message", error=str(exc), source=source)
            continue
        handler = handlers.get(type(msg))
        if handler is None:
            log.warning("unexpected_message", message=type(msg).__name__, source=source)
            continue
        try:
            perform(handler(msg, payloads))
        except Exception:
            log.exception("handler_failed", message=type(msg).__name__, source=source)
