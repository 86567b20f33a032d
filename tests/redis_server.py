"""A real redis-server for tests: started on a free loopback port in a directory of its own,
with an append-only file so that a restart keeps what was written (as a production Redis
configured for durability would), stopped at the end. Tests that need it skip, saying why, where
the redis-server binary (Debian's redis-server package; .ci/run installs it) or the redis client
library (the dev extra) is missing."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.helpers import free_tcp_port

START_TIMEOUT = 10.0


class RedisServer:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_tcp_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory), "--appendonly", "yes",
             "--appendfsync", "always", "--save", "", "--protected-mode", "yes"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while not self._answers():
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited at start with status {self.process.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not answer on port {self.port} within {START_TIMEOUT:g}s")
            time.sleep(0.02)

    def stop(self) -> None:
        """Kill it (SIGKILL: what survives is what the append-only file holds)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def client(self) -> Any:
        import redis

        return redis.Redis.from_url(self.url)

    def _answers(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=0.5).ping())
        except redis.RedisError:
            return False


@pytest.fixture()
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (Debian's redis-server package; .ci/run installs it)")
    pytest.importorskip("redis", reason="the redis client library is not installed (pip install -e '.[dev]')")
    server = RedisServer(tmp_path / "redis")
    try:
        yield server
    finally:
        server.stop()
