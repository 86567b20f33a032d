"""LocalCluster: a real scheduler, shuffle_meta and N executor processes on loopback.

Each service binds a free port and reports it through a ready file. The cluster is always torn
down: on close(), on leaving a `with` block, at interpreter exit, on Ctrl-C, and when the driver
process dies (the children watch their parent and, on Linux, get SIGKILL with it). The work
directory of a driver killed outright is removed by the next local cluster (squall.workdirs).
"""

from __future__ import annotations

import atexit
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import weakref

from squall.common import security
from squall.common.settings import Settings
from squall.context import Context, connect
from squall.errors import SquallError
from squall.workdirs import create_workdir, remove_orphaned_workdirs

_PR_SET_PDEATHSIG = 1
_live_clusters: weakref.WeakSet[LocalCluster] = weakref.WeakSet()


class ClusterStartError(SquallError):
    """A service of a local cluster did not come up."""


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass  # not Linux: the --parent-pid watchdog still applies


class LocalCluster:
    """A real cluster on this machine: a scheduler, shuffle_meta and `executors` executor
    processes (default 4) on loopback, started at once; connect() gives a Context to it.

    `settings` default to Settings.from_env(); without keys (and not plaintext) the cluster makes
    a key pair of its own. The scheduler serves its live dashboard on a free loopback port (unless
    `settings` name another dashboard_port, or -1 for none); `dashboard_url` says where ("" when
    there is none). Logs, ready files and (unless settings.checkpoint_dir is set)
    checkpoints go to `workdir`, a fresh <tmp>/squall-local-* directory removed on close().
    Raises ValueError for fewer than one executor, ClusterStartError when a service does not
    come up within `start_timeout` seconds (default 30). Use it as a context manager.
    """

    def __init__(self, executors: int = 4, settings: Settings | None = None, start_timeout: float = 30.0) -> None:
        if executors < 1:
            raise ValueError("a local cluster needs at least one executor")
        base = settings or Settings.from_env()
        remove_orphaned_workdirs()  # those of local clusters whose driver was killed (SIGKILL)
        self.workdir = create_workdir()
        if not base.plaintext and not base.curve_secret_key:  # ephemeral keys, for this cluster only
            public, secret = security.new_keypair()
            base = base.replace(curve_public_key=public, curve_secret_key=secret)
        self.settings = base.replace(
            # The default port is one per machine: several local clusters (and a deployed
            # scheduler) would contend for it, so a local cluster takes a free one unless told.
            dashboard_port=0 if base.dashboard_port == Settings.dashboard_port else base.dashboard_port,
            checkpoint_dir=base.checkpoint_dir or str(self.workdir / "checkpoints"),
            scheduler_bind="tcp://127.0.0.1:*",
            shuffle_meta_bind="tcp://127.0.0.1:*",
            executor_bind="tcp://127.0.0.1:*",
            # Every service serves metrics on a free port of its own (a fixed one would clash), unless none is asked for.
            metrics_port=-1 if base.metrics_port < 0 else 0,
            parent_pid=os.getpid(),
        )
        self.executor_count = executors
        self.start_timeout = start_timeout
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.address = ""
        self.shuffle_meta_address = ""
        self.dashboard_url = ""
        self._closed = False
        _live_clusters.add(self)
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    # --- lifecycle ------------------------------------------------------------------------------

    def _start(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        self.shuffle_meta_address = self._spawn("shuffle_meta", "squall.services.shuffle_meta", [], deadline)
        self.settings = self.settings.replace(shuffle_meta_address=self.shuffle_meta_address)
        self.address = self._spawn("scheduler", "squall.services.scheduler", ["--shuffle-meta", self.shuffle_meta_address], deadline)
        self.settings = self.settings.replace(scheduler_address=self.address)
        self.dashboard_url = self._dashboard_url()
        for i in range(self.executor_count):
            self.start_executor(f"executor-{i}", wait=False)
        self.wait_for_executors(self.executor_count, timeout=max(0.1, deadline - time.monotonic()))

    def start_executor(self, name: str, wait: bool = True) -> subprocess.Popen[bytes]:
        """Start one more executor process (named `name`, also its executor id) and return it;
        with `wait` (default), once it reports ready (ClusterStartError if it does not in time)."""
        args = ["--scheduler", self.address, "--executor-id", name]
        self._spawn(name, "squall.services.executor", args, time.monotonic() + self.start_timeout, wait=wait)
        return self.processes[name]

    def restart_service(self, name: str) -> None:
        """Start shuffle_meta or the scheduler again, on the address it had (after a crash)."""
        if name == "shuffle_meta":
            module, args, bind = "squall.services.shuffle_meta", [], {"SQUALL_SHUFFLE_META_BIND": self.shuffle_meta_address}
        elif name == "scheduler":
            module, args = "squall.services.scheduler", ["--shuffle-meta", self.shuffle_meta_address]
            bind = {"SQUALL_SCHEDULER_BIND": self.address}
        else:
            raise ValueError(f"only shuffle_meta and the scheduler restart in place, not {name!r}")
        old = self.processes.get(name)
        if old is not None and old.poll() is None:
            raise ValueError(f"{name} is still running")
        (self.workdir / f"{name}.ready").unlink(missing_ok=True)
        (self.workdir / f"{name}.ready.dashboard").unlink(missing_ok=True)
        (self.workdir / f"{name}.ready.metrics").unlink(missing_ok=True)
        self._spawn(name, module, args, time.monotonic() + self.start_timeout, env=bind)
        if name == "scheduler":
            self.dashboard_url = self._dashboard_url()

    def close(self) -> None:
        """Stop every service (SIGINT, then SIGKILL whatever is still alive after a grace period)
        and remove the work directory. Calling it again does nothing."""
        if self._closed:
            return
        self._closed = True
        stop_processes(list(self.processes.values()))
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- use ------------------------------------------------------------------------------------

    def connect(self) -> Context:
        """A new Context connected to this cluster's scheduler, with the cluster's settings."""
        return connect(self.address, self.settings)

    @property
    def pids(self) -> dict[str, int]:
        """Process id of every service started, by name (scheduler, shuffle_meta, executor-0, ...)."""
        return {name: p.pid for name, p in self.processes.items()}

    @property
    def metrics_urls(self) -> dict[str, str]:
        """The Prometheus metrics URL of every service started that serves them, by name
        (scheduler, shuffle_meta, executor-0, ...); empty when settings.metrics_port is -1."""
        urls = {}
        for name in self.processes:
            path = self.workdir / f"{name}.ready.metrics"
            if path.exists():
                urls[name] = path.read_text().strip()
        return urls

    def executor_names(self) -> list[str]:
        """The names of the executors started (executor-0, executor-1, ... and any added)."""
        return [n for n in self.processes if n.startswith("executor")]

    def wait_for_executors(self, count: int, timeout: float = 10.0) -> None:
        """Until `count` executors are registered with the scheduler (polls, with a deadline)."""
        deadline = time.monotonic() + timeout
        with self.connect() as ctx:
            while True:
                have = len(ctx.status().executors)
                if have == count:
                    return
                self._check_alive()
                if time.monotonic() > deadline:
                    raise ClusterStartError(f"{have} of {count} executors registered within {timeout:g}s; logs in {self.workdir}")
                time.sleep(0.02)

    def log_text(self, name: str) -> str:
        """The log of service `name` so far ("" if it has none)."""
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # --- plumbing -------------------------------------------------------------------------------

    def _spawn(self, name: str, module: str, args: list[str], deadline: float, wait: bool = True,
               env: dict[str, str] | None = None) -> str:
        ready = self.workdir / f"{name}.ready"
        log = open(self.workdir / f"{name}.log", "ab")
        env = {**os.environ, **self.settings.to_env(), "PYTHONUNBUFFERED": "1", **(env or {})}
        cmd = [sys.executable, "-m", module, "--ready-file", str(ready), "--parent-pid", str(os.getpid()), *args]
        in_main_thread = threading.current_thread() is threading.main_thread()
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=env,
            # The driver's directory: functions from the user's own modules beside the script
            # are pickled by reference, and the executors import them from there.
            cwd=os.getcwd(),
            # Own process group: a Ctrl-C typed at the driver's terminal interrupts the driver
            # only, which then tears the cluster down itself (a REPL user keeps the cluster).
            # Not an own session: Linux gives each session its own scheduling group (autogroup),
            # with an equal share of the CPU whatever its threads' niceness, and latency tasks
            # only win the CPU from other executors' batch tasks (Settings.batch_nice) within one.
            process_group=0,
            preexec_fn=_die_with_parent if in_main_thread and sys.platform == "linux" else None,
        )
        log.close()
        self.processes[name] = proc
        if not wait:
            return ""
        while not ready.exists():
            if proc.poll() is not None:
                raise ClusterStartError(f"{name} exited with code {proc.returncode}:\n{self.log_text(name)[-2000:]}")
            if time.monotonic() > deadline:
                raise ClusterStartError(f"{name} did not report ready in time; log: {self.workdir / (name + '.log')}")
            time.sleep(0.01)
        return ready.read_text().strip()

    def _dashboard_url(self) -> str:
        """Where the scheduler serves its dashboard: it writes the URL beside its ready file
        before that file, and writes none when it has no dashboard."""
        path = self.workdir / "scheduler.ready.dashboard"
        return path.read_text().strip() if path.exists() else ""

    def _check_alive(self) -> None:
        for name, p in self.processes.items():
            if p.poll() is not None and not self._closed:
                raise ClusterStartError(f"{name} exited with code {p.returncode}:\n{self.log_text(name)[-2000:]}")


def stop_processes(procs: list[subprocess.Popen[bytes]], grace: float = 3.0) -> None:
    """SIGINT each process, then SIGKILL whatever is still alive after `grace` seconds; returns
    once all are reaped (no zombies left behind). SIGINT stops a service at once; SIGTERM would
    have executors leave gracefully, waiting to be let go by a scheduler that is stopping too."""
    for p in procs:
        if p.poll() is None:
            _signal(p, signal.SIGINT)
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(timeout=max(0.01, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal(p, signal.SIGKILL)
            p.wait(timeout=5)


def _signal(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        proc.send_signal(sig)
    except ProcessLookupError:
        pass


@atexit.register
def _close_all() -> None:
    for cluster in list(_live_clusters):
        cluster.close()
