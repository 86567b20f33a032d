"""Many real executor processes on one machine: the two-stage micro-benchmark, then a stateful
stream with an executor killed in the middle, on one local cluster of E executors (default 32).

Every micro-batch result is checked against plain Python, and every stream batch against a
running sum computed in plain Python (exactly once: no batch lost, repeated or reordered across
the kill). The scheduler's log must name one lost executor, the killed one: an executor declared
dead by mistake (a missed heartbeat on a machine running E executors on a few cores) fails the
run. Reported: start-up time, time per micro-batch, the stream's recovery, and the CPU each
kind of process used over the run: the scheduler's share is what tells whether one scheduler
keeps up with E executors.

    python -m bench.many_executors [--executors 32] [--batches 40] [--stream-batches 40]
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bench import machine
from bench.microbench import batch_dataset, batch_result
from bench.workloads import TWO_STAGE, expected_result
from squall import LocalCluster, Settings, sources

STREAM_KEYS, STREAM_PARTITIONS = 61, 8
MODES: list[tuple[str, dict[str, Any]]] = [
    ("Baseline (BSP)", dict(preschedule=False, group_size=1)),
    ("Drizzle, group 10", dict(preschedule=True, group_size=10)),
]


def stream_events(partition: int, batch: int) -> list[tuple[str, int]]:
    return [(f"k{(batch * 13 + partition * 7 + i) % STREAM_KEYS}", batch * 1000 + partition * 10 + i) for i in range(10)]


def running_sums(batches: int) -> list[dict[str, int]]:
    """Each batch's (key, running sum) for the keys it touched, in plain Python: the reference."""
    running: Counter[str] = Counter()
    out = []
    for batch in range(batches):
        touched = set()
        for partition in range(STREAM_PARTITIONS):
            for key, value in stream_events(partition, batch):
                running[key] += value
                touched.add(key)
        out.append({key: running[key] for key in touched})
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def poll(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.05)


@dataclass
class Report:
    executors: int
    death_timeout: float = 0.0  # the death budget the cluster ran with (heartbeat interval x misses)
    startup_s: float = 0.0
    batch_ms: dict[str, float] = field(default_factory=dict)  # micro-benchmark mode -> mean time per micro-batch
    stream_batches: int = 0
    killed: str = ""
    recovery_s: float = 0.0  # from the kill to the first batch after it
    stream_exact: bool = False
    lost: list[str] = field(default_factory=list)  # executors the scheduler declared dead, in order
    wall_s: float = 0.0
    cpu_s: dict[str, float] = field(default_factory=dict)  # scheduler, shuffle_meta, executors (all), driver

    @property
    def lost_by_mistake(self) -> list[str]:
        return [name for name in self.lost if name != self.killed]


def lost_executors(scheduler_log: str) -> list[str]:
    import json

    lost = []
    for line in scheduler_log.splitlines():
        if '"executor_lost"' in line:
            lost.append(json.loads(line)["executor"])
    return lost


def oversubscribed_settings(executors: int, base: Settings | None = None) -> Settings:
    """Settings for `executors` executor processes on this machine's cores: one slot each, and,
    beyond four executors per core, a death budget of 2 s. The default 0.4 s assumes that every
    process gets a core within a few hundred milliseconds; tens of processes queued on each core
    miss it now and then while alive (their libzmq threads answer the scheduler's heartbeats late)."""
    settings = (base or Settings.from_env()).replace(executor_slots=1)
    if executors > 4 * (os.cpu_count() or 1) and settings.death_timeout < 2.0:
        settings = settings.replace(heartbeat_misses=max(settings.heartbeat_misses, round(2.0 / settings.heartbeat_interval)))
    return settings


def run(executors: int = 32, batches: int = 40, stream_batches: int = 40, settings: Settings | None = None,
        modes: list[tuple[str, dict[str, Any]]] = MODES) -> Report:
    """Start the cluster, run both jobs (the micro-benchmark in `modes`), check them, and measure
    (see the module's doc)."""
    report = Report(executors)
    settings = oversubscribed_settings(executors, settings)
    report.death_timeout = settings.death_timeout
    started = time.monotonic()
    with LocalCluster(executors=executors, settings=settings, start_timeout=30 + executors) as cluster, cluster.connect() as ctx:
        report.startup_s = time.monotonic() - started
        pids = cluster.pids
        cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()} | {"driver": cpu_seconds(os.getpid())}
        wall_before = time.monotonic()

        tasks, reducers, numbers = 2 * executors, executors, 1000  # two map tasks and one reducer per executor
        expected = expected_result(TWO_STAGE, tasks, reducers, numbers)
        for name, mode in modes:
            datasets = [batch_dataset(ctx, TWO_STAGE, tasks, reducers, numbers) for _ in range(batches)]
            ctx.run_jobs(datasets[: min(5, batches)], **mode)  # warm-up: connections, code caches
            begun = time.monotonic()
            for index, records in enumerate(ctx.run_jobs(datasets, **mode)):
                if batch_result(TWO_STAGE, records) != expected:
                    raise AssertionError(f"{name}: micro-batch {index} differs from plain Python")
            report.batch_ms[name] = (time.monotonic() - begun) / batches * 1000

        got: list[tuple[int, dict[str, int]]] = []
        lock = threading.Lock()

        def sink(batch: int, records: list[tuple[str, int]]) -> None:
            with lock:
                got.append((batch, dict(records)))

        stream = (
            ctx.stream(sources.generator(stream_events, partitions=STREAM_PARTITIONS), batch_interval=0.1, group_size=5)
            .update_state_by_key(lambda values, old: (old or 0) + sum(values), partitions=executors)
            .foreach_batch(sink)
            .start()
        )
        try:
            poll(lambda: len(got) >= stream_batches // 2, 120, "the stream's first half")
            report.killed = f"executor-{executors // 2}"
            os.kill(pids[report.killed], signal.SIGKILL)
            killed_at, seen = time.monotonic(), len(got)
            poll(lambda: len(got) > seen, 120, "a batch after the kill")
            report.recovery_s = time.monotonic() - killed_at
            poll(lambda: len(got) >= stream_batches, 120, "the stream's second half")
        finally:
            stream.stop(timeout=60)
        report.stream_batches = len(got)
        reference = running_sums(len(got))
        report.stream_exact = [b for b, _ in got] == list(range(len(got))) and all(r == reference[b] for b, r in got)

        report.wall_s = time.monotonic() - wall_before
        used = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
        used["driver"] = cpu_seconds(os.getpid()) - cpu_before["driver"]
        used[report.killed] = 0.0  # its time died with it
        report.cpu_s = {
            "scheduler": used["scheduler"],
            "shuffle_meta": used["shuffle_meta"],
            "executors": sum(v for k, v in used.items() if k.startswith("executor")),
            "driver": used["driver"],
        }
        report.lost = lost_executors(cluster.log_text("scheduler"))
    return report


def format_report(report: Report) -> str:
    cores = os.cpu_count() or 1
    total = sum(report.cpu_s.values()) or 1.0
    lines = [
        f"{report.executors} executors (1 slot each) on {cores} cores, death budget {report.death_timeout:.1f} s: "
        f"started in {report.startup_s:.1f} s",
        "",
        f"{'two-stage micro-benchmark':<28} {'ms per micro-batch':>18}   "
        f"({2 * report.executors} map tasks, {report.executors} reducers per batch; every batch checked)",
    ]
    lines += [f"  {name:<26} {ms:>18.1f}" for name, ms in report.batch_ms.items()]
    lines += [
        "",
        f"stateful stream: {report.stream_batches} batches, {report.killed} killed (SIGKILL) half-way; "
        f"next batch {report.recovery_s:.1f} s after the kill; output exactly once and equal to plain Python: "
        f"{'yes' if report.stream_exact else 'NO'}",
        f"executors declared dead: {', '.join(report.lost) or 'none'}"
        f" ({'none by mistake' if not report.lost_by_mistake else 'BY MISTAKE: ' + ', '.join(report.lost_by_mistake)})",
        "",
        f"CPU over the run ({report.wall_s:.1f} s wall, {report.wall_s * cores:.1f} core-s available):",
    ]
    for name, seconds in report.cpu_s.items():
        lines.append(f"  {name:<13} {seconds:>7.2f} s   {seconds / report.wall_s:>6.1%} of a core   {seconds / total:>6.1%} of all used")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.many_executors", description=__doc__.split("\n\n")[0])
    parser.add_argument("--executors", type=int, default=32, help="executor processes (default 32)")
    parser.add_argument("--batches", type=int, default=40, help="micro-batches per micro-benchmark mode (default 40)")
    parser.add_argument("--stream-batches", type=int, default=40, help="stream batches, the kill half-way (default 40)")
    args = parser.parse_args(argv)
    print(machine.header("bench.many_executors", argv))
    report = run(args.executors, args.batches, args.stream_batches)
    print(format_report(report))
    return 0 if report.stream_exact and not report.lost_by_mistake else 1


if __name__ == "__main__":
    raise SystemExit(main())
