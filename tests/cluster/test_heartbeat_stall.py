"""An executor's heartbeats say that its process is stopped or starved, in every beat: a real
heartbeat thread in its own process, slowed as the slow_executor fault does it (stopped 40 of
every 50 ms), beating to a real socket here. A beat that measured only its own wake-up would say
so only when it happened to fall due inside a stop, and the scheduler would hand the straggler
work whenever the phase of its stops against its beats drifted that way."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import zmq
from squall.common import protocol, security, transport
from squall.common.protocol import Heartbeat

from squall.chaos.slow import Slowdown
from tests.conftest import fast_settings

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(60)]

REPO = Path(__file__).resolve().parents[2]

BEATING = """
import sys, threading
import structlog, zmq
from squall.services.executor.heartbeat import Heartbeater
from tests.conftest import fast_settings

settings = fast_settings(scheduler_address=sys.argv[1], heartbeat_interval=0.1, curve_public_key=sys.argv[2],
                         curve_secret_key=sys.argv[3])
heartbeater = Heartbeater(zmq.Context(), settings, "victim", "victim-1", structlog.get_logger())
heartbeater.active.set()
threading.Event().wait()  # beat until killed
"""

BEATS = 20
STOPPED_FOR = 0.02  # seconds: half of each 40 ms stop, well above the 8 ms that marks a stall


def beats(sock: zmq.Socket[Any], count: int, settings: Any, timeout: float = 20.0) -> list[Heartbeat]:
    seen: list[Heartbeat] = []
    deadline = time.monotonic() + timeout
    while len(seen) < count:
        assert time.monotonic() < deadline, f"{len(seen)} beats in {timeout:g} s"
        if sock.poll(100):
            msg, _ = protocol.decode(sock.recv_multipart()[1:], settings.max_message_bytes)
            if isinstance(msg, Heartbeat):
                seen.append(msg)
    return seen


def test_every_beat_of_a_process_stopped_most_of_every_moment_says_how_long() -> None:
    settings = fast_settings()
    ctx = zmq.Context()
    auth = security.start_authenticator(ctx, settings)  # the cluster's keys, as the scheduler admits them
    sock = transport.new_socket(ctx, zmq.ROUTER, settings)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    child = subprocess.Popen([sys.executable, "-c", BEATING, f"tcp://127.0.0.1:{port}",
                              settings.curve_public_key, settings.curve_secret_key], cwd=REPO)  # this session's keys
    slowdown: Slowdown | None = None
    try:
        beats(sock, 3, settings)  # it beats
        slowdown = Slowdown(child.pid, factor=5.0, duration=30.0)
        beats(sock, 2, settings)  # beats straddling the start of the slowdown
        slowed = [round(b.stalled, 3) for b in beats(sock, BEATS, settings)]
        assert sum(s >= STOPPED_FOR for s in slowed) >= BEATS - 1, f"stalled seconds of each beat: {slowed}"
    finally:
        if slowdown is not None:
            slowdown.stop()
        child.kill()
        child.wait(timeout=5)
        sock.close(0)
        if auth is not None:
            auth.stop()
        ctx.term()
