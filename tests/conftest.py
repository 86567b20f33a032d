"""Shared fixtures: a real local cluster with short heartbeats, and checks for orphans (service
processes, the default checkpoint directory)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from squall.common.checkpoint_store import default_checkpoint_dir
from squall.common.security import new_keypair

from squall import LocalCluster, Settings
from tests.redis_server import redis_server  # noqa: F401 - the fixture, for every test that asks for it

SERVICE_MODULES = ("squall.services.scheduler", "squall.services.executor", "squall.services.shuffle_meta")


TEST_PUBLIC_KEY, TEST_SECRET_KEY = new_keypair()  # the test session's cluster keys

# The default checkpoint_dir. Tests give every store and executor a directory of their own, so
# the suite must not create this one (it cannot tell whether it wrote into one that was there).
DEFAULT_CHECKPOINT_DIR = Path(default_checkpoint_dir())
DEFAULT_CHECKPOINT_DIR_EXISTED = DEFAULT_CHECKPOINT_DIR.exists()


def fast_settings(**overrides: object) -> Settings:
    """Short heartbeats and timeouts so that failures are detected in a fraction of a second,
    and this session's cluster keys (so clusters and drivers made from it talk to each other)."""
    base = Settings(
        curve_public_key=TEST_PUBLIC_KEY,
        curve_secret_key=TEST_SECRET_KEY,
        heartbeat_interval=0.05,
        heartbeat_misses=6,
        connect_timeout=5.0,
        scheduler_silence_timeout=5.0,
        shuffle_lookup_timeout=5.0,
        shuffle_fetch_timeout=5.0,
        log_level="info",
    )
    return base.replace(**overrides)


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    """One 4-executor cluster shared by tests that do not break it."""
    with LocalCluster(executors=4, settings=fast_settings()) as c:
        yield c


@pytest.fixture()
def ctx(cluster: LocalCluster):  # type: ignore[no-untyped-def]
    with cluster.connect() as context:
        yield context


def service_processes(parent_pid: int) -> list[tuple[int, str]]:
    """Live service processes started by `parent_pid` (they carry --parent-pid on their command line)."""
    found = []
    marker = f"--parent-pid\x00{parent_pid}\x00"
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes().decode(errors="replace")
            state = (entry / "stat").read_text().split(") ", 1)[1][0]
        except OSError:
            continue
        if marker in raw + "\x00" and any(m in raw for m in SERVICE_MODULES) and state != "Z":
            found.append((int(entry.name), raw.replace("\x00", " ").strip()))
    return found


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """No service process may outlive the test session."""
    import squall.local

    squall.local._close_all()
    deadline = time.monotonic() + 5.0
    left = service_processes(os.getpid())
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = service_processes(os.getpid())
    if left:
        print("\nORPHANED SERVICE PROCESSES:\n" + "\n".join(f"  {pid}: {cmd}" for pid, cmd in left))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if not DEFAULT_CHECKPOINT_DIR_EXISTED and DEFAULT_CHECKPOINT_DIR.exists():
        print(f"\nTHE SUITE CREATED {DEFAULT_CHECKPOINT_DIR} (the default checkpoint_dir): a test left a store or an executor "
              "on the default; give it a temporary directory")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
