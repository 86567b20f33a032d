"""Small tools shared by the cluster tests: raw sockets, deadlines, process checks, a counting stream,
the plain-Python meaning of shuffles."""

from __future__ import annotations

import operator
import os
import socket
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import zmq
from squall.common import protocol, security
from squall.common.protocol import Message, Ping, Pong
from squall.common.settings import Settings

from squall import sources
from squall.sources import rate_batch

BIG = 1 << 30  # decode limit for replies we read in tests


PROGRESS = "SQUALL_TEST_PROGRESS"  # names the file a task's progress goes to (a batch process inherits it)


def write_progress(records: int) -> None:
    """In a task: say how many records it went through, wherever it runs (thread or process)."""
    fd = os.open(os.environ[PROGRESS], os.O_WRONLY | os.O_CREAT)
    os.pwrite(fd, records.to_bytes(8, "little"), 0)
    os.close(fd)


def read_progress() -> int:
    """In the test: what the task last said (0 before it said anything)."""
    try:
        with open(os.environ[PROGRESS], "rb") as f:
            return int.from_bytes(f.read(8), "little")
    except FileNotFoundError:
        return 0


def executor_pid() -> int:
    """In a task: the pid of the executor running it (batch tasks run in its batch process)."""
    return int(os.environ.get("SQUALL_EXECUTOR_PID", os.getpid()))


def raw_dealer(address: str, settings: Settings | None = None) -> zmq.Socket:
    """A DEALER with no size limit, as a misbehaving peer would use: with the cluster's keys
    (`settings`) it is a member gone wrong; without, an outsider."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if settings is not None:
        security.configure(sock, settings, server=False)
    sock.connect(address)
    return sock


def recv_message(sock: zmq.Socket, timeout: float = 5.0) -> tuple[Message, list[object]]:
    if not sock.poll(int(timeout * 1000)):
        raise AssertionError(f"no reply within {timeout:g}s")
    return protocol.decode(sock.recv_multipart(), BIG)


def request(sock: zmq.Socket, frames: Sequence[bytes], timeout: float = 5.0) -> Message:
    sock.send_multipart(list(frames))
    return recv_message(sock, timeout)[0]


def ping(sock: zmq.Socket, nonce: int = 7, timeout: float = 5.0) -> Pong:
    """Send Ping, skip unrelated replies, return the matching Pong."""
    sock.send_multipart(protocol.encode(Ping(nonce=nonce)))  # type: ignore[arg-type]
    deadline = time.monotonic() + timeout
    while True:
        msg, _ = recv_message(sock, max(0.01, deadline - time.monotonic()))
        if isinstance(msg, Pong) and msg.nonce == nonce:
            return msg


class Background:
    """Run fn in a daemon thread; remember its result (or exception) and when it finished.

    A call that does not finish in time is left running (daemon), so a hang becomes a failed
    assertion instead of a stuck test run.
    """

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.started = time.monotonic()
        self.finished_at: float | None = None
        self.outcome: Any = None
        self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True, name="background-call")
        self._thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            self.outcome = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            self.outcome = exc
        self.finished_at = time.monotonic()

    def join(self, timeout: float) -> bool:
        """True if the call finished within `timeout` seconds from now."""
        self._thread.join(timeout)
        return not self._thread.is_alive()


def run_with_deadline(fn: Callable[[], Any], timeout: float) -> tuple[bool, Any, float]:
    """(finished, result or exception, seconds taken) of fn, waiting at most `timeout`."""
    call = Background(fn)
    done = call.join(timeout)
    end = call.finished_at if done and call.finished_at is not None else time.monotonic()
    return done, call.outcome, end - call.started


def pid_running(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(") ", 1)[1][:1] != "Z"


def free_tcp_port() -> int:
    """A loopback port nothing listens on (bound and released at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def keyed_rate_count(ctx: Any, sink: Any, rate: float, partitions: int, interval: float, group_size: int, keys: int) -> Any:
    """A rate stream (not started) that counts each batch's events by index % keys into `sink`."""
    return (
        ctx.stream(sources.rate(rate, partitions=partitions), batch_interval=interval, group_size=group_size)
        .map(lambda event: (event[1] % keys, 1))
        .reduce_by_key(operator.add, 2)
        .foreach_batch(sink)
    )


def expected_rate_count(rate: float, partitions: int, interval: float, batch: int, keys: int) -> dict[int, int]:
    """What keyed_rate_count emits for `batch`: the same events, made again in plain Python."""
    return dict(Counter(i % keys for p in range(partitions) for _, i, _ in rate_batch(rate, partitions, interval, 0.0, None, p, batch)))


def grouped(pairs: Iterable[tuple[Any, Any]]) -> dict[Any, list[Any]]:
    """group_by_key in plain Python, each key's values sorted."""
    out = defaultdict(list)
    for k, v in pairs:
        out[k].append(v)
    return {k: sorted(vs) for k, vs in out.items()}


def reduced(pairs: Iterable[tuple[Any, Any]], fn: Callable[[Any, Any], Any] = operator.add) -> dict[Any, Any]:
    """reduce_by_key in plain Python."""
    out: dict[Any, Any] = {}
    for k, v in pairs:
        out[k] = fn(out[k], v) if k in out else v
    return out
