"""Batch latency around an executor's SIGKILL: parallel replay versus single-survivor replay.

For each replay mode a fresh local cluster runs a stateful stream (a running total per key, kept
with update_state_by_key). The first --fill-seconds of batches load all --keys keys into the state;
then each batch touches --per-batch of them. The executor owning state partitions 1, 5, 9, ... is
SIGKILLed half a batch before the first checkpoint due after --seconds-before, so the survivors
load the previous checkpoint (none yet, by default: the kill comes before the first) and replay
every batch since: the worst case, and the case where spreading the replay should pay. After
--seconds-after more seconds every batch's output is checked against plain Python. Modes run
interleaved --repeats times: on 2 cores one run's noise is as large as the effect.

    python -m bench.recovery [--executors 4] [--keys 1000000] [--partitions 12] [--seconds-before 6]
                             [--seconds-after 8] [--checkpoint-every 60] [--modes parallel single]
                             [--repeats 3] [--plot recovery.png]

Reading the table (times from the kill; squall.recovery_stats defines them):
- steady p50: median batch latency over the --steady-window seconds before the kill;
- peak: worst latency of a batch delivered after the kill (the batch in flight counts): detection
  plus the rebuild plus that batch. It is the number that shows the replay's cost;
- detect: until ctx.status() stops listing the victim (polled every 5 ms) / until the scheduler
  logged "executor_lost". The poll is late when the rebuild saturates the cores;
- recovered: to the end of the first batch from which 5 in a row are within max(1.5 x steady,
  steady + 20 ms) (20 ms: the jitter of 2 busy cores); "never" if not before the stream stopped;
- rebuilt by: survivors that loaded lost partitions ("state_restored" in their logs); from ckpt /
  replayed: the checkpointed batch they started from (-1: empty state) and batches replayed;
- other load: share of the machine's CPU used meanwhile by processes not of this benchmark.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import statistics
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bench import machine
from bench.plotting import pyplot
from squall import LocalCluster, Settings, StreamError, sources
from squall.recovery_stats import batch_points, latencies_before, peak_latency_after, recovery_time, steady_latency

INTERVAL = 0.1
SLACK = 0.02


@dataclass(frozen=True)
class Workload:
    """Batch b < fill touches keys [b*K/fill, (b+1)*K/fill); later ones touch per_batch keys, a
    window moving through the key space. A batch's slice is cut into one contiguous chunk per
    source partition, so every source partition feeds every state partition (a real shuffle)."""

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
    """Half a batch before the first checkpoint due at or after `seconds_before`: with groups of
    one batch, checkpoints follow batches every-1, 2*every-1, ..., due when such a batch ends."""
    due = max(1, math.ceil(round(seconds_before / INTERVAL, 6) / every)) * every
    return started + (due - 0.5) * INTERVAL


def log_events(text: str, event: str, since: float) -> list[dict[str, Any]]:
    """The JSON log lines of `event` logged at or after `since` (wall clock)."""
    found = []
    for line in text.splitlines():
        if f'"{event}"' in line:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("event") == event and datetime.fromisoformat(entry["timestamp"]).timestamp() >= since:
                found.append(entry)
    return found


def cpu_seconds(pids: list[int]) -> tuple[float, float] | None:
    """(busy CPU seconds of the whole machine, of these processes) so far; None off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        mine = 0
        for pid in pids:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read().rsplit(")", 1)[1].split()
            mine += int(stat[11]) + int(stat[12])  # utime, stime
    except (OSError, ValueError):
        return None
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(fields) - fields[3] - fields[4]) / tick, mine / tick  # all but idle and iowait


def run_mode(mode: str, args: argparse.Namespace, work: Workload) -> dict[str, Any]:
    """One fresh cluster, one stream, one kill; what happened, for summarize()."""
    settings = Settings.from_env(log_level="info", replay=mode, checkpoint_every_groups=args.checkpoint_every)
    got: list[tuple[int, dict[int, int]]] = []
    with LocalCluster(executors=args.executors, settings=settings) as cluster, cluster.connect() as ctx:
        victim = sorted(cluster.executor_names())[1]  # owns state partitions 1, 5, 9, ...
        stream = (
            ctx.stream(sources.generator(work.records, partitions=args.partitions), batch_interval=INTERVAL, group_size=1)
            .update_state_by_key(add, partitions=args.partitions)
            .foreach_batch(lambda batch, records: got.append((batch, dict(records))))  # called in order, one thread
            .start()
        )
        time.sleep(max(0.0, kill_time(stream.metrics_state.started, args.seconds_before, args.checkpoint_every) - time.time()))
        ours = [pid for name, pid in cluster.pids.items() if name != victim] + [os.getpid()]
        cpu_before, killed = cpu_seconds(ours), time.time()
        os.kill(cluster.pids[victim], signal.SIGKILL)
        detected = None
        while detected is None and time.time() < killed + args.seconds_after:
            if victim not in {e.executor_id for e in ctx.status().executors}:
                detected = time.time() - killed
            time.sleep(0.005)
        time.sleep(max(0.0, killed + args.seconds_after - time.time()))  # the benchmark's schedule
        cpu_after, elapsed = cpu_seconds(ours), time.time() - killed
        error = ""
        try:
            stream.stop(timeout=60)
            error = "" if stream.await_termination(0) else "the stream did not stop within 60 s"
        except StreamError as exc:
            error = str(exc)
        logs = {n: cluster.log_text(n) for n in ["scheduler", *cluster.executor_names()]}
    other = None
    if cpu_before and cpu_after:
        other = max(0.0, (cpu_after[0] - cpu_before[0]) - (cpu_after[1] - cpu_before[1])) / (elapsed * (os.cpu_count() or 1))
    return {"mode": mode, "metrics": stream.metrics_state, "got": list(got), "killed": killed, "detected": detected,
            "logs": logs, "other": other, "error": error}


def summarize(run: dict[str, Any], args: argparse.Namespace, work: Workload) -> dict[str, Any]:
    killed, logs = run["killed"], run["logs"]
    points = batch_points(run["metrics"].started, INTERVAL, run["metrics"].latencies, run["metrics"].first_latency_batch)
    steady = steady_latency(latencies_before(points, killed, window=args.steady_window))
    restored = {n: log_events(text, "state_restored", killed) for n, text in logs.items() if n != "scheduler"}
    ckpts = {e["batch"] if e["batch"] is not None else -1 for es in restored.values() for e in es}
    replaying = log_events(logs["scheduler"], "replaying", killed)
    first_replayed = min((min(e["batches"]) for e in replaying if e["batches"]), default=None)
    lost = log_events(logs["scheduler"], "executor_lost", killed)
    got = run["got"]
    reference = expected_outputs(work, len(got))
    in_order = [b for b, _ in got] == list(range(len(got)))
    correct = not run["error"] and in_order and all(records == reference[b] for b, records in got)
    return {
        **{k: run[k] for k in ("mode", "detected", "other", "error")},
        "steady": steady,
        "peak": peak_latency_after(points, killed),
        "logged": datetime.fromisoformat(lost[0]["timestamp"]).timestamp() - killed if lost else None,
        "recovered": recovery_time(points, killed, steady, slack=SLACK),
        "rebuilt_by": sum(1 for es in restored.values() if es),
        "ckpt": ",".join(str(c) for c in sorted(ckpts)) or "-",
        "replayed": "?" if first_replayed is None or not ckpts else str(first_replayed - 1 - max(ckpts)),
        "batches": len(got),
        "correct": "yes" if correct else "no",
        "curve": [(end - killed, latency) for end, latency in points],
    }


def ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1000:.0f}"


def print_table(rows: list[dict[str, Any]], args: argparse.Namespace, work: Workload) -> None:
    print(machine.header("bench.recovery"))
    print(f"workload: {args.executors} executors, {work.keys:,} keys in {args.partitions} state partitions (loaded in "
          f"{work.fill} batches), then {work.per_batch:,} keys per {INTERVAL * 1000:.0f} ms batch; checkpoint every "
          f"{args.checkpoint_every} batches; kill at {args.seconds_before:g}+ s, {args.seconds_after:g} s after\n")
    print("| replay   | steady p50 ms | peak ms | detect ms poll/log | recovered s | rebuilt by | from ckpt | replayed "
          "| batches | other load | correct |")
    print("|----------|---------------|---------|--------------------|-------------|------------|-----------|----------"
          "|---------|------------|---------|")
    for r in rows:
        recovered = "never" if r["recovered"] is None else f"{r['recovered']:.2f}"
        other = "?" if r["other"] is None else f"{r['other']:.0%}"
        print(f"| {r['mode']:<8} | {ms(r['steady']):>13} | {ms(r['peak']):>7} | {ms(r['detected']) + '/' + ms(r['logged']):>18} "
              f"| {recovered:>11} | {r['rebuilt_by']:>10} | {r['ckpt']:>9} | {r['replayed']:>8} | {r['batches']:>7} "
              f"| {other:>10} | {r['correct']:>7} |")
    for mode in args.modes if args.repeats > 1 else []:
        mine = [r for r in rows if r["mode"] == mode]
        peaks = [r["peak"] for r in mine if r["peak"] is not None]
        times = [r["recovered"] for r in mine if r["recovered"] is not None]
        print(f"{mode}: median peak {ms(statistics.median(peaks)) if peaks else '-'} ms, median recovered "
              f"{f'{statistics.median(times):.2f} s' if times else '-'} ({len(times)} of {len(mine)} runs recovered)")
    for r in rows:
        if r["error"]:
            print(f"{r['mode']}: {r['error']}")


def plot(rows: list[dict[str, Any]], path: str) -> None:
    plt = pyplot(path)
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(9, 4.5))
    colors, labelled = {"parallel": "tab:blue", "single": "tab:orange"}, set()
    for r in rows:  # every run of a mode in its color, so the spread between runs shows
        xs, ys = zip(*[(t, lat * 1000) for t, lat in r["curve"] if t > -3], strict=True)
        label = None if r["mode"] in labelled else f"{r['mode']} replay"
        labelled.add(r["mode"])
        ax.plot(xs, ys, color=colors[r["mode"]], marker=".", markersize=3, linewidth=1, alpha=0.8, label=label)
    ax.axvline(0.0, color="black", linestyle="--", linewidth=1, label="SIGKILL")
    ax.set(yscale="log", xlabel="batch end, seconds from the kill", ylabel="batch latency, ms (log scale)",
           title="Squall: batch latency around an executor SIGKILL")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"\nplot: {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.recovery", description=__doc__.split("\n\n")[0])
    add_arg = parser.add_argument
    add_arg("--executors", type=int, default=4)
    add_arg("--keys", type=int, default=1_000_000, help="keys in the state once loaded (default 1000000)")
    add_arg("--partitions", type=int, default=12, help="source and state partitions (default 12)")
    add_arg("--per-batch", type=int, default=2_000, help="keys each batch touches after the load (default 2000)")
    add_arg("--fill-seconds", type=float, default=2.0, help="seconds of batches that load the keys (default 2)")
    add_arg("--seconds-before", type=float, default=6.0, help="run at least this long before the kill (default 6)")
    add_arg("--seconds-after", type=float, default=8.0, help="run this long after the kill (default 8)")
    add_arg("--steady-window", type=float, default=2.0, help="seconds before the kill for the steady latency")
    add_arg("--checkpoint-every", type=int, default=60, help="checkpoint state every N groups of 1 batch (default 60)")
    add_arg("--modes", nargs="+", choices=["parallel", "single"], default=["parallel", "single"])
    add_arg("--repeats", type=int, default=3, help="runs per mode, interleaved (default 3)")
    add_arg("--plot", default=None, metavar="PNG", help="draw latency over time to this PNG (needs matplotlib)")
    args = parser.parse_args(argv)
    if args.executors < 2 or args.partitions < 2 or args.repeats < 1:
        parser.error("a kill needs at least 2 executors and 2 partitions, and one run")
    if args.seconds_before < args.fill_seconds + args.steady_window:
        parser.error("--seconds-before must cover --fill-seconds and --steady-window: steady means after the load")
    work = Workload(args.keys, args.partitions, max(1, round(args.fill_seconds / INTERVAL)), args.per_batch)
    rows = [summarize(run_mode(mode, args, work), args, work) for _ in range(args.repeats) for mode in args.modes]
    print_table(rows, args, work)
    if args.plot:
        plot(rows, args.plot)
    return 0 if all(r["correct"] == "yes" for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
