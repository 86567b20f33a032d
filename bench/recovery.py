"""Batch latency around an executor's SIGKILL: parallel replay versus single-survivor replay.

For each replay mode a fresh local cluster runs a stateful stream (a running total per key, kept
with update_state_by_key). The first --fill-seconds of batches load all --keys keys into the
state; after that each batch touches a small deterministic slice of them. After --seconds-before
the executor owning state partitions 1, 5, 9, ... is SIGKILLed, half a batch before a state
checkpoint is due, so the survivors rebuild its partitions from the previous checkpoint and replay
about --checkpoint-every batches (the worst case for replay; the table shows how many). The
stream runs --seconds-after more seconds, then every batch's output is checked against plain
Python.

    python -m bench.recovery [--executors 4] [--keys 400000] [--partitions 12] [--seconds-before 6]
                             [--seconds-after 8] [--checkpoint-every 10] [--modes parallel single]
                             [--plot recovery.png]

How to read the table (all times from the kill; squall.recovery_stats defines them):
- steady p50: median batch latency over the --steady-window seconds before the kill;
- peak: the worst latency of a batch delivered after the kill (the batch in flight counts);
- detect: until ctx.status() no longer lists the killed executor (polled every 5 ms);
- recovered: until the end of the first batch from which 5 batches in a row are within
  max(1.5 x steady, steady + 20 ms); "never" if that did not happen before the stream stopped;
- rebuilt by: survivors that loaded a checkpoint of the lost partitions ("state_restored" in their
  logs); from ckpt / replayed: the checkpointed batch they started from (-1: empty) and how many
  batches they replayed after it. Parallel replay should show a lower peak and recovery time.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from squall import LocalCluster, Settings, sources
from squall.recovery_stats import (
    batch_points,
    latencies_before,
    peak_latency_after,
    recovery_time,
    steady_latency,
)

INTERVAL = 0.1
SLACK = 0.02  # recovered: within max(1.5 x steady, steady + 20 ms); 2 busy cores jitter by ~20 ms


@dataclass(frozen=True)
class Workload:
    """Batch b < fill touches keys [b*K/fill, (b+1)*K/fill); later batches touch per_batch keys,
    a window moving through the key space. Each batch's slice is cut into `partitions` contiguous
    chunks, one per source partition, so every source partition feeds every state partition."""

    keys: int
    partitions: int
    fill: int
    per_batch: int

    def touched(self, batch: int) -> range | list[int]:
        if batch < self.fill:
            return range(batch * self.keys // self.fill, (batch + 1) * self.keys // self.fill)
        start = (batch - self.fill) * self.per_batch % self.keys
        stop = start + self.per_batch
        return range(start, stop) if stop <= self.keys else [*range(start, self.keys), *range(stop - self.keys)]

    def records(self, partition: int, batch: int) -> list[tuple[int, int]]:
        keys = self.touched(batch)
        chunk = -(-len(keys) // self.partitions)
        return [(k, (k * 31 + batch) % 97 + 1) for k in keys[partition * chunk:(partition + 1) * chunk]]


def add(values: list[int], old: int | None) -> int:
    return (old or 0) + sum(values)


def expected_outputs(work: Workload, batches: int) -> list[dict[int, int]]:
    """Plain Python: each batch's (key, running total) for the keys it touched."""
    totals: Counter[int] = Counter()
    out = []
    for b in range(batches):
        for p in range(work.partitions):
            for k, v in work.records(p, b):
                totals[k] += v
        out.append({k: totals[k] for k in work.touched(b)})
    return out


def kill_time(started: float, seconds_before: float, every: int) -> float:
    """Half a batch before the first checkpoint due at or after `seconds_before`: checkpoints
    follow batches every-1, 2*every-1, ... (groups of one batch), due when such a batch ends."""
    due = max(1, math.ceil(round(seconds_before / INTERVAL, 6) / every)) * every  # batches, up to a checkpoint
    return started + (due - 0.5) * INTERVAL


def log_events(text: str, event: str, since: float) -> list[dict[str, Any]]:
    """JSON log lines of `event` logged at or after `since` (wall clock)."""
    found = []
    for line in text.splitlines():
        if f'"{event}"' not in line:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") == event and datetime.fromisoformat(entry["timestamp"]).timestamp() >= since:
            found.append(entry)
    return found


def run_mode(mode: str, args: argparse.Namespace, work: Workload) -> dict[str, Any]:
    settings = Settings.from_env(log_level="info", replay=mode, checkpoint_every_groups=args.checkpoint_every)
    got: list[tuple[int, dict[int, int]]] = []
    lock = threading.Lock()

    def sink(batch: int, records: list[Any]) -> None:
        with lock:
            got.append((batch, dict(records)))

    with LocalCluster(executors=args.executors, settings=settings) as cluster, cluster.connect() as ctx:
        victim = sorted(cluster.executor_names())[1]  # owns state partitions 1, 5, 9, ...
        stream = (
            ctx.stream(sources.generator(work.records, partitions=args.partitions), batch_interval=INTERVAL, group_size=1)
            .update_state_by_key(add, partitions=args.partitions)
            .foreach_batch(sink)
            .start()
        )
        state = stream.metrics_state
        kill_at = kill_time(state.started, args.seconds_before, args.checkpoint_every)
        time.sleep(max(0.0, kill_at - time.time()))  # a benchmark's schedule, not a wait for a condition
        killed = time.time()
        os.kill(cluster.pids[victim], signal.SIGKILL)
        detected = None
        while time.time() < killed + args.seconds_after and detected is None:
            if victim not in {e.executor_id for e in ctx.status().executors}:
                detected = time.time() - killed
            else:
                time.sleep(0.005)
        time.sleep(max(0.0, killed + args.seconds_after - time.time()))
        stream.stop(timeout=60)
        restored = {n: log_events(cluster.log_text(n), "state_restored", killed - 1.0) for n in cluster.executor_names()}
        replaying = log_events(cluster.log_text("scheduler"), "replaying", killed - 1.0)

    points = batch_points(state.started, INTERVAL, state.latencies)
    steady = steady_latency(latencies_before(points, killed, window=args.steady_window))
    ckpts = {e["batch"] if e["batch"] is not None else -1 for es in restored.values() for e in es}
    first_replayed = min((min(e["batches"]) for e in replaying if e["batches"]), default=None)
    with lock:
        outputs = sorted(got)
    reference = expected_outputs(work, len(outputs))
    correct = [b for b, _ in outputs] == list(range(len(outputs))) and all(
        records == reference[b] for b, records in outputs)
    return {
        "mode": mode,
        "steady": steady,
        "peak": peak_latency_after(points, killed),
        "detect": detected,
        "recovered": recovery_time(points, killed, steady, slack=SLACK),
        "rebuilt_by": sum(1 for es in restored.values() if es),
        "ckpt": ",".join(str(c) for c in sorted(ckpts)) or "-",
        "replayed": first_replayed - 1 - max(ckpts) if first_replayed is not None and ckpts else None,
        "batches": len(outputs),
        "correct": "yes" if correct else "no",
        "curve": [(end - killed, latency) for end, latency in points],
    }


def print_table(rows: list[dict[str, Any]], args: argparse.Namespace, work: Workload) -> None:
    def ms(x: float | None) -> str:
        return "-" if x is None else f"{x * 1000:.0f}"

    print(f"machine: {os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}")
    print(f"workload: {args.executors} executors, {work.keys:,} keys in {args.partitions} state partitions "
          f"(filled in {work.fill} batches), then {work.per_batch:,} keys per batch of {INTERVAL * 1000:.0f} ms; "
          f"checkpoint every {args.checkpoint_every} batches\n")
    print("| replay   | steady p50 ms | peak ms | detect ms | recovered s | rebuilt by | from ckpt | replayed | batches | correct |")
    print("|----------|---------------|---------|-----------|-------------|------------|-----------|----------|---------|---------|")
    for r in rows:
        recovered = "never" if r["recovered"] is None else f"{r['recovered']:.2f}"
        replayed = "?" if r["replayed"] is None else str(r["replayed"])
        print(f"| {r['mode']:<8} | {ms(r['steady']):>13} | {ms(r['peak']):>7} | {ms(r['detect']):>9} | {recovered:>11} "
              f"| {r['rebuilt_by']:>10} | {r['ckpt']:>9} | {replayed:>8} | {r['batches']:>7} | {r['correct']:>7} |")


def plot(rows: list[dict[str, Any]], path: str) -> None:
    try:
        import matplotlib
    except ImportError:
        print(f"\nno plot: matplotlib is not installed (python -m pip install -e '.[plot]'), so {path} was not drawn")
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    for r in rows:
        xs, ys = zip(*[(t, lat * 1000) for t, lat in r["curve"] if t > -4], strict=True)
        ax.plot(xs, ys, marker=".", markersize=3, linewidth=1, label=f"{r['mode']} replay")
    ax.axvline(0.0, color="black", linestyle="--", linewidth=1, label="SIGKILL")
    ax.set_yscale("log")
    ax.set_xlabel("batch end, seconds from the kill")
    ax.set_ylabel("batch latency, ms (log)")
    ax.set_title("Squall: batch latency around an executor SIGKILL")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"\nplot: {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.recovery", description=__doc__.split("\n\n")[0])
    parser.add_argument("--executors", type=int, default=4)
    parser.add_argument("--keys", type=int, default=400_000, help="keys in the state once filled (default 400000)")
    parser.add_argument("--partitions", type=int, default=12, help="source and state partitions (default 12)")
    parser.add_argument("--per-batch", type=int, default=2_000, help="keys each batch touches after the fill (default 2000)")
    parser.add_argument("--fill-seconds", type=float, default=2.0, help="time over which the keys are loaded (default 2)")
    parser.add_argument("--seconds-before", type=float, default=6.0, help="run at least this long before the kill")
    parser.add_argument("--seconds-after", type=float, default=8.0, help="run this long after the kill")
    parser.add_argument("--steady-window", type=float, default=2.0, help="seconds before the kill for the steady latency")
    parser.add_argument("--checkpoint-every", type=int, default=10, help="checkpoint state every N groups of 1 batch")
    parser.add_argument("--modes", nargs="+", choices=["parallel", "single"], default=["parallel", "single"])
    parser.add_argument("--plot", default=None, metavar="PNG", help="draw latency over time to this PNG (needs matplotlib)")
    args = parser.parse_args(argv)
    if args.executors < 2 or args.partitions < 2:
        parser.error("a kill needs at least 2 executors and 2 partitions")
    work = Workload(args.keys, args.partitions, max(1, round(args.fill_seconds / INTERVAL)), args.per_batch)
    rows = [run_mode(mode, args, work) for mode in args.modes]
    print_table(rows, args, work)
    if args.plot:
        plot(rows, args.plot)
    return 0 if all(r["correct"] == "yes" for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
