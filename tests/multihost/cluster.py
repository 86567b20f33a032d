"""A Squall cluster spread over a Network: every service runs in its own host's namespace.

shuffle_meta listens on its host's address at port 7078, the scheduler on its own at 7077, and
each executor on its host's address (any port), advertised to its peers with that address. The
test process stays in the root namespace and reaches the scheduler over the bridge. Services get
the cluster's settings as SQUALL_* variables (the checkpoint directory is shared: namespaces share
the filesystem) and carry --parent-pid, so the session's orphan check sees them; close() stops
them all, SIGTERM then SIGKILL, also when starting failed half-way.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import zmq
from squall.common.settings import Settings

from squall import Context, connect
from squall.local import stop_processes
from tests.multihost.netns import Host, Network
from tests.polling import wait_until

SCHEDULER_PORT = 7077
SHUFFLE_META_PORT = 7078
_PR_SET_PDEATHSIG = 1
_ROOT = Path(__file__).resolve().parents[2]  # holds the `services` package


def curve_keys() -> dict[str, str]:
    """A fresh CurveZMQ key pair, as the settings curve_public_key and curve_secret_key (z85)."""
    public, secret = zmq.curve_keypair()
    return {"curve_public_key": public.decode(), "curve_secret_key": secret.decode()}


class SpreadCluster:
    def __init__(self, network: Network, workdir: Path, settings: Settings, scheduler: str = "sched",
                 shuffle_meta: str = "meta", executors: Sequence[str] = ("ex0", "ex1", "ex2"),
                 start_timeout: float = 30.0) -> None:
        self.network = network
        self.workdir = workdir
        self.executors = list(executors)
        self.start_timeout = start_timeout
        sched, meta = network.hosts[scheduler], network.hosts[shuffle_meta]
        self.address = f"tcp://{sched.address}:{SCHEDULER_PORT}"
        self.settings = settings.replace(
            scheduler_address=self.address,
            shuffle_meta_address=f"tcp://{meta.address}:{SHUFFLE_META_PORT}",
            checkpoint_dir=settings.checkpoint_dir or str(workdir / "checkpoints"),
        )
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        try:
            self._spawn("shuffle_meta", meta, "squall.services.shuffle_meta", ["--bind", self.settings.shuffle_meta_address])
            self._spawn("scheduler", sched, "squall.services.scheduler",
                        ["--bind", self.address, "--shuffle-meta", self.settings.shuffle_meta_address])
            for name in self.executors:
                host = network.hosts[name]
                args = ["--scheduler", self.address, "--executor-id", name,
                        "--bind", f"tcp://{host.address}:*", "--advertise-host", host.address]
                self._spawn(name, host, "squall.services.executor", args)
            for name in self.processes:
                self._wait_ready(name)
        except BaseException:
            self.close()
            raise

    def connect(self) -> Context:
        return connect(self.address, self.settings)

    def close(self) -> None:
        """Stop every service: SIGTERM, then SIGKILL whatever is alive after a grace period."""
        stop_processes(list(self.processes.values()))

    def log_text(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def logs(self, lines: int = 20) -> str:
        """The services' last log lines, for a failure message."""
        return "\n".join(f"--- {n}\n" + "\n".join(self.log_text(n).splitlines()[-lines:]) for n in self.processes)

    def __enter__(self) -> SpreadCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _spawn(self, name: str, host: Host, module: str, args: list[str]) -> None:
        ready = self.workdir / f"{name}.ready"
        argv = [sys.executable, "-m", module, "--ready-file", str(ready), "--parent-pid", str(os.getpid()), *args]
        command = host.command(argv)
        env = {**os.environ, **self.settings.to_env(), "PYTHONUNBUFFERED": "1"}
        with open(self.workdir / f"{name}.log", "ab") as log:
            self.processes[name] = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, cwd=_ROOT, start_new_session=True,
                preexec_fn=_die_with_parent if threading.current_thread() is threading.main_thread() else None,
            )

    def _wait_ready(self, name: str) -> None:
        ready, proc = self.workdir / f"{name}.ready", self.processes[name]

        def is_ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited with code {proc.returncode}:\n{self.log_text(name)[-2000:]}")
            return ready.exists()

        wait_until(is_ready, timeout=self.start_timeout, what=f"{name} to report ready (log: {self.workdir / name}.log)")


def _die_with_parent() -> None:  # in the child, between fork and exec (`ip netns exec` execs again)
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
