"""One chaos trial: start a local cluster, run the stateful streams (workload.py), inject the
seeded plan's faults into real processes, stop, and compare the output with plain Python.

Per fault it reports the detection time (fault to the scheduler's executor_lost event), the
recovery time (fault to the point from which batch latency stays within 1.5x of its steady state:
squall.recovery_stats) and how many survivors shared the replay; for a slow_executor fault, the
stateless stream's p99 batch latency before it (steady) and while it lasts. A trial "hangs" if the streams
do not deliver or stop within their deadlines; a killed executor is replaced by a new one (as a
Deployment would), so a long plan never runs out of executors. A `scale` fault adds an executor
or decommissions one (SIGTERM); a decommissioned executor that does not exit 0, or whose work is
replayed, fails the trial (`graceless`).

With source="redis" the trial's job is redis_workload's instead (a writer process feeding Redis
Streams, a running count per key written back to Redis, compared after a drain), on a
redis-server of the trial's own (redis_server.py) or on the Redis at `redis_url`.
"""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from squall.chaos import redis_server, workload
from squall.chaos.plan import FAULT_KINDS, SLOW_FACTOR, Fault, plan_faults
from squall.chaos.redis_workload import RedisTrial
from squall.chaos.slow import Slowdown
from squall.common.settings import Settings
from squall.local import LocalCluster
from squall.recovery_stats import batch_points, recovery_time, steady_latency

GROUP_SIZE = 2
STOP_TIMEOUT = 20.0
DELIVERY_TIMEOUT = 20.0
DRAIN_TIMEOUT = 30.0  # a redis trial: for the stream to read every entry written once the writer stops
SOURCES = ("generator", "redis")
# A stream with a slowed executor runs this long after its last fault, and its steady latency is
# measured from SETTLE seconds after that fault: a p99 over about 100 batches, not a dozen.
STEADY_AFTER_SLOW = 12.0
SETTLE = 1.0


@dataclass
class FaultReport:
    kind: str
    target: str
    at: float  # wall clock
    detection: float | None = None
    recovery: float | None = None
    survivors: int | None = None
    note: str = ""
    duration: float = 0.0  # slow_executor: seconds slowed
    steady_p99: float | None = None  # slow_executor: the stateless stream's p99 latency before the fault
    fault_p99: float | None = None  # ... and of its batches ending while the fault lasts


@dataclass
class TrialResult:
    seed: int
    faults: list[FaultReport] = field(default_factory=list)
    batches: int = 0
    differences: list[str] = field(default_factory=list)
    hung: bool = False
    error: str = ""
    graceless: list[str] = field(default_factory=list)  # decommissions that were not graceful, and how
    records: int | None = None  # a redis trial: the records the writer wrote (and the counts cover)

    @property
    def ok(self) -> bool:
        return not self.differences and not self.hung and not self.error and not self.graceless


def run_trial(seed: int, kinds: tuple[str, ...] = ("kill_executor",), faults: int = 1, executors: int = 4,
              interval: float = 0.1, after: float = 3.0, settings: Settings | None = None, slow_for: float = 20.0,
              source: str = "generator", redis_url: str | None = None) -> TrialResult:
    """Run one trial of `faults` faults drawn from `kinds` with this seed (see plan.FAULT_KINDS);
    a slow_executor fault lasts `slow_for` seconds. `source` is "generator" (the generator and
    rate streams of workload.py) or "redis" (redis_workload.py, on `redis_url` or a redis-server
    started for the trial)."""
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; known: {', '.join(SOURCES)}")
    if source == "redis":
        redis_server.redis_client_library()
        if redis_url is None:
            redis_server.binary()  # before any cluster starts: the clear error at once
    base = settings or Settings.from_env(log_level="info", log_format="json")
    plan = plan_faults(seed, kinds, faults, death_budget=base.death_timeout, slow_for=slow_for)
    result = TrialResult(seed)
    slowdowns: list[Slowdown] = []
    redis: RedisTrial | None = None
    window_stream = windows = None
    with LocalCluster(executors=executors, settings=base) as cluster, cluster.connect() as ctx, \
            _redis_for(source, redis_url, cluster.workdir) as url:
        if url is not None:
            redis = RedisTrial.start(ctx, url, seed, interval, GROUP_SIZE)
            sum_stream, sums = redis.stream, redis.delivered
        else:
            sum_stream, sums, window_stream, windows = workload.start_streams(ctx, seed, interval, GROUP_SIZE)
        stateless, batch_sums = (workload.start_stateless(ctx, seed, interval, GROUP_SIZE)
                                 if any(f.kind == "slow_executor" for f in plan) else (None, None))
        streams = [s for s in (sum_stream, window_stream, stateless) if s is not None]
        started = sum_stream.metrics_state.started
        try:
            for fault in plan:
                _sleep_until(started + fault.at)
                if any(s._error for s in streams):  # noqa: SLF001 - fail fast: the stream already stopped
                    break
                result.faults.append(_inject(cluster, fault, sums, started, interval, slowdowns))
            # After a slowdown, long enough that the steady p99 beside it rests on 100 batches.
            tail = max(after, STEADY_AFTER_SLOW) if stateless is not None else after
            last = started + max((f.at + f.duration for f in plan), default=0.0) + tail
            _sleep_until(last)
            if not _wait(lambda: len(sums) >= (last - started) / interval * 0.5, DELIVERY_TIMEOUT):
                result.hung = True
            if redis is not None:
                result.error = redis.stop_writer()
                if not result.error and not _wait(redis.drained, DRAIN_TIMEOUT):
                    result.hung = True
        finally:
            for slowdown in slowdowns:
                slowdown.stop()
            for stream in streams:
                try:
                    if not _stop(stream):
                        result.hung = True
                except Exception as exc:  # noqa: BLE001 - a stream that failed: report, compare nothing
                    result.error = result.error or f"{type(exc).__name__}: {exc}"
            if redis is not None:
                if not result.error and not result.hung:
                    result.differences = redis.differences()
                result.records = redis.written
                redis.close(shared=redis_url is not None)
        result.batches = len(sums)
        if not result.error and window_stream is not None and windows is not None:
            result.differences = workload.sum_differences(seed, sums) + workload.window_differences(
                windows, window_stream.metrics_state.started, interval)
        if not result.error and batch_sums is not None:
            result.differences += workload.batch_sum_differences(seed, batch_sums)
        _measure(result, cluster, sum_stream, interval)
        if stateless is not None:
            _measure_slowdowns(result, stateless, interval)
    return result


def _redis_for(source: str, redis_url: str | None, workdir: Path) -> AbstractContextManager[str | None]:
    """The Redis URL of a redis trial (a redis-server in the trial's directory unless given), None otherwise."""
    if source != "redis":
        return nullcontext(None)
    if redis_url is not None:
        return nullcontext(redis_url)
    return redis_server.local_redis(workdir / "redis")


def _inject(cluster: LocalCluster, fault: Fault, sums: workload.Collected, started: float, interval: float,
            slowdowns: list[Slowdown]) -> FaultReport:
    if fault.kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault {fault.kind!r}")
    if fault.kind in ("kill_shuffle_meta", "kill_scheduler"):
        name = "shuffle_meta" if fault.kind == "kill_shuffle_meta" else "scheduler"
        os.kill(cluster.pids[name], signal.SIGKILL)
        at = time.time()
        cluster.processes[name].wait(timeout=5)
        cluster.restart_service(name)
        return FaultReport(fault.kind, name, at)
    live = sorted(n for n in cluster.executor_names() if cluster.processes[n].poll() is None)
    name = live[fault.executor % len(live)]
    note = ""
    if fault.kind == "scale":
        return _scale(cluster, fault, live, name)
    if fault.kind == "kill_at_dispatch":  # as a group's last batch comes out, the next is dispatched
        seen = len(sums)
        _wait(lambda: len(sums) > seen and len(sums) % GROUP_SIZE == 0, 5.0)
    elif fault.kind == "kill_mid_shuffle":  # just after a batch's end: its mappers are pushing
        now = time.time() - started
        _sleep_until(started + (int(now / interval) + 1) * interval + min(0.005, interval / 4))
    elif fault.kind == "kill_mid_checkpoint":
        writer = _catch_checkpoint_writer(cluster, live)
        if writer is None:
            note = "no checkpoint write caught in 5 s: killed at random"
        else:
            name = writer
    pid = cluster.pids[name]
    if fault.kind == "slow_executor":
        slowdowns.append(Slowdown(pid, SLOW_FACTOR, fault.duration))
        return FaultReport(fault.kind, name, time.time(), note=f"slowed {SLOW_FACTOR:.0f}x for {fault.duration:.1f}s",
                           duration=fault.duration)
    if fault.kind in ("stop_executor", "straggler"):
        os.kill(pid, signal.SIGSTOP)
        at = time.time()
        threading.Timer(fault.duration, lambda: _signal(pid, signal.SIGCONT)).start()
        return FaultReport(fault.kind, name, at, note=f"stopped {fault.duration:.2f}s")
    os.kill(pid, signal.SIGKILL)
    at = time.time()
    cluster.start_executor(f"{name}-r{int(at * 1000) % 100000}", wait=False)  # its replacement
    return FaultReport(fault.kind, name, at, note=note)


def _scale(cluster: LocalCluster, fault: Fault, live: list[str], name: str) -> FaultReport:
    """Decommission `name` (SIGTERM, as on a Kubernetes scale-down), or add an executor: always
    the latter when only one is left, which may not leave."""
    if fault.direction == "in" and len(live) > 1:
        cluster.processes[name].send_signal(signal.SIGTERM)
        return FaultReport(fault.kind, name, time.time(), note="decommissioned")
    added = f"executor-s{fault.executor}"
    at = time.time()
    cluster.start_executor(added, wait=False)
    return FaultReport(fault.kind, added, at, note="added")


def _catch_checkpoint_writer(cluster: LocalCluster, live: list[str]) -> str | None:
    """Poll the checkpoint directory for a half-written file (".<name>.<pid>.<id>.tmp") and name
    the executor writing it, or None if none is caught within 5 s."""
    root = Path(cluster.settings.checkpoint_root)
    by_pid = {cluster.pids[n]: n for n in live}
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        for _directory, _, files in os.walk(root):
            for f in files:
                if f.startswith(".") and f.endswith(".tmp"):
                    try:
                        pid = int(f.rsplit(".", 3)[1])
                    except (IndexError, ValueError):
                        continue
                    if pid in by_pid:
                        return by_pid[pid]
        time.sleep(0.0005)
    return None


def _measure(result: TrialResult, cluster: LocalCluster, stream: Any, interval: float) -> None:
    events = [json.loads(line) for line in cluster.log_text("scheduler").splitlines() if line.startswith("{")]
    metrics = stream.metrics_state
    points = batch_points(metrics.started, interval, list(metrics.latencies), metrics.first_latency_batch)
    first = min((f.at for f in result.faults), default=float("inf"))
    before = [lat for end, lat in points if end < first][5:] or [lat for _, lat in points[:5]]
    steady = steady_latency(before) if before else 0.0
    for report in result.faults:
        lost = [e for e in events if e.get("event") == "executor_lost" and e.get("executor") == report.target]
        if lost:
            report.detection = max(0.0, _epoch(lost[0]["timestamp"]) - report.at)
        replays = [e for e in events if e.get("event") == "replaying" and e.get("executor") == report.target]
        if replays:
            report.survivors = max(int(e.get("survivors", 0)) for e in replays)
        report.recovery = recovery_time(points, report.at, steady)
        if report.kind == "scale" and report.note == "decommissioned":
            code = _exit_code(cluster, report.target, STOP_TIMEOUT)
            if code != 0:
                result.graceless.append(f"{report.target} exited {code}" if code is not None else f"{report.target} did not exit")
            if lost or replays:
                result.graceless.append(f"{report.target} was {'replayed' if replays else 'lost'} instead of leaving gracefully")


def _exit_code(cluster: LocalCluster, name: str, timeout: float) -> int | None:
    proc = cluster.processes[name]
    _wait(lambda: proc.poll() is not None, timeout)
    return proc.poll()


def _measure_slowdowns(result: TrialResult, stream: Any, interval: float) -> None:
    """The stateless stream's p99 batch latency when no fault is on: before the first (past the
    stream's first five batches, the warm-up) and from SETTLE seconds after the last is over;
    and over the batches ending while each slow_executor fault lasted."""
    metrics = stream.metrics_state
    points = batch_points(metrics.started, interval, list(metrics.latencies), metrics.first_latency_batch)[5:]
    first = min((f.at for f in result.faults), default=float("inf"))
    over = max((f.at + f.duration for f in result.faults), default=float("-inf")) + SETTLE
    steady = p99([lat for end, lat in points if end < first or end > over])
    for report in result.faults:
        if report.kind == "slow_executor":
            report.steady_p99 = steady
            report.fault_p99 = p99([lat for end, lat in points if report.at <= end <= report.at + report.duration])


def p99(latencies: list[float]) -> float | None:
    """The 99th percentile (nearest rank) of `latencies`, None for none."""
    if not latencies:
        return None
    ordered = sorted(latencies)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _stop(stream: Any) -> bool:
    stream.stop(timeout=STOP_TIMEOUT)
    return not (stream._thread is not None and stream._thread.is_alive())  # noqa: SLF001


def _wait(condition: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _sleep_until(when: float) -> None:
    delay = when - time.time()
    if delay > 0:
        time.sleep(delay)  # the plan's schedule: a fault happens at its time, whatever the cluster does


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
