"""A redis-server of a chaos trial's own: the binary from PATH, append-only (as a Redis that
Squall's exactly-once claims rely on must be), on a free loopback port, in the trial's temporary
directory, stopped when the trial ends."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from squall.errors import SquallError

START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0

MISSING = ("squall chaos --source redis starts a redis-server per trial, and there is no redis-server on PATH: "
           "install Debian's redis-server package (apt-get install redis-server), or give an existing Redis "
           "with --redis-url redis://host:port/db")


def binary() -> str:
    """The redis-server on PATH, or SquallError saying which package provides it."""
    found = shutil.which("redis-server")
    if found is None:
        raise SquallError(MISSING)
    return found


def redis_client_library() -> None:
    """SquallError naming the extra when the redis client library is not installed."""
    try:
        import redis  # noqa: F401
    except ImportError:
        raise SquallError("squall chaos --source redis needs the redis client library: pip install 'squall[redis]'") from None


@contextmanager
def local_redis(directory: Path) -> Iterator[str]:
    """Start redis-server in `directory` and yield its URL; SIGTERM it (then SIGKILL) on the way out."""
    import redis

    executable = binary()
    directory.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    process = subprocess.Popen(
        [executable, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory), "--appendonly", "yes",
         "--appendfsync", "everysec", "--save", "", "--protected-mode", "yes", "--logfile", str(directory / "redis.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        probe = redis.Redis(host="127.0.0.1", port=port, socket_timeout=0.5, socket_connect_timeout=0.5)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                if probe.ping():
                    break
            except redis.RedisError:
                pass
            if process.poll() is not None:
                raise SquallError(f"redis-server exited at start with status {process.returncode} "
                                  f"(its log: {directory / 'redis.log'})")
            if time.monotonic() > deadline:
                raise SquallError(f"redis-server did not answer on port {port} within {START_TIMEOUT:g}s")
            time.sleep(0.02)
        probe.close()
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT)


def _free_port() -> int:
    """A loopback port nothing listens on (bound and released at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
