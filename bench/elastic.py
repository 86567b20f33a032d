"""A stateful stream scaled out and in while it runs: 4 -> 6 -> 2 executors.

A local cluster of --start executors runs a running sum per key (update_state_by_key over
--partitions state partitions). After --phase seconds, executors are added up to --peak; after
another --phase, all but --end of them are decommissioned at once (SIGTERM, as a Kubernetes
scale-down sends), the first ones started leaving. After a last --phase the stream stops and
every batch's output is compared with plain Python.

    python -m bench.elastic [--start 4] [--peak 6] [--end 2] [--partitions 12] [--phase 6]
                            [--interval 0.1] [--group-size 2]

Reading the table:
- exact: every batch delivered once, in order, equal to plain Python;
- steady p99: the 99th percentile of batch latency (interval end to sink) in the first phase,
  its first second left out (warm-up);
- worst / p99: the worst batch latency after each change (up to the next), over the steady p99;
- replays: "replaying" events in the scheduler's log (a graceful change has none); exits: the exit
  codes of the executors decommissioned (0: let go after handing their state over);
- partitions: keyed state partitions each executor holds at the end (GetTracked), which should
  differ by at most one.
"""

from __future__ import annotations

import argparse
import math
import signal
import threading
import time
from collections import Counter
from typing import Any

from bench import machine
from squall import LocalCluster, Settings, sources
from squall.health import tracked

KEYS = 997
SOURCES = 4
RECORDS = 50  # per source partition and batch


def events(partition: int, batch: int) -> list[tuple[int, int]]:
    return [((batch * 31 + partition * RECORDS + i) % KEYS, batch + i) for i in range(RECORDS)]


def add(values: list[int], old: int | None) -> int:
    return (old or 0) + sum(values)


def expected(batches: int) -> list[dict[int, int]]:
    running: Counter[int] = Counter()
    out = []
    for batch in range(batches):
        touched = set()
        for p in range(SOURCES):
            for key, value in events(p, batch):
                running[key] += value
                touched.add(key)
        out.append({k: running[k] for k in touched})
    return out


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)] if ordered else float("nan")


def run(args: argparse.Namespace) -> dict[str, Any]:
    settings = Settings.from_env(log_level="info", log_format="json")
    got: list[tuple[int, dict[int, int], float]] = []
    lock = threading.Lock()

    def sink(batch: int, records: list[Any]) -> None:
        with lock:
            got.append((batch, dict(records), time.time()))

    with LocalCluster(executors=args.start, settings=settings) as cluster, cluster.connect() as ctx:
        stream = (
            ctx.stream(sources.generator(events, partitions=SOURCES), batch_interval=args.interval, group_size=args.group_size)
            .update_state_by_key(add, partitions=args.partitions)
            .foreach_batch(sink)
            .start()
        )
        began = time.time()
        time.sleep(args.phase)
        scaled_out = time.time()
        for i in range(args.start, args.peak):
            cluster.start_executor(f"executor-{i}", wait=False)
        time.sleep(args.phase)
        scaled_in = time.time()
        leaving = sorted(cluster.executor_names())[: args.peak - args.end]
        for name in leaving:
            cluster.processes[name].send_signal(signal.SIGTERM)
        time.sleep(args.phase)
        deadline = time.monotonic() + 30
        while any(cluster.processes[n].poll() is None for n in leaving) and time.monotonic() < deadline:
            time.sleep(0.05)
        held = {e.executor_id: tracked(e.data_address, cluster.settings).sizes["keyed.next_batch"] for e in ctx.status().executors}
        stream.stop(timeout=30)
        started = stream.metrics_state.started
        log = cluster.log_text("scheduler")
        return {
            "got": list(got), "started": started, "began": began, "scaled_out": scaled_out, "scaled_in": scaled_in,
            "replays": log.count('"replaying"'), "exits": {n: cluster.processes[n].poll() for n in leaving}, "held": held,
        }


def summarize(outcome: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    got = outcome["got"]
    batches = [b for b, _, _ in got]
    reference = expected(len(got))
    exact = batches == list(range(len(got))) and all(records == reference[b] for b, records, _ in got)
    started = outcome["started"]
    points = [(started + (b + 1) * args.interval, delivered - (started + (b + 1) * args.interval)) for b, _, delivered in got]
    steady = p99([lat for end, lat in points if started + 1.0 <= end < outcome["scaled_out"]])
    out_worst = max((lat for end, lat in points if outcome["scaled_out"] <= end + lat and end < outcome["scaled_in"]), default=float("nan"))
    in_worst = max((lat for end, lat in points if outcome["scaled_in"] <= end + lat), default=float("nan"))
    return {"exact": exact, "batches": len(got), "steady": steady, "out_worst": out_worst, "in_worst": in_worst,
            "replays": outcome["replays"], "exits": outcome["exits"], "held": outcome["held"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.elastic", description=__doc__.split("\n\n")[0])
    parser.add_argument("--start", type=int, default=4)
    parser.add_argument("--peak", type=int, default=6)
    parser.add_argument("--end", type=int, default=2)
    parser.add_argument("--partitions", type=int, default=12, help="keyed state partitions")
    parser.add_argument("--phase", type=float, default=6.0, help="seconds between two changes")
    parser.add_argument("--interval", type=float, default=0.1, help="batch interval, seconds")
    parser.add_argument("--group-size", type=int, default=2)
    args = parser.parse_args(argv)
    if not 1 <= args.end < args.peak or args.start > args.peak:
        parser.error("need 1 <= --end < --peak and --start <= --peak")
    row = summarize(run(args), args)
    print(machine.header("bench.elastic", argv))
    print(f"workload: running sum of {KEYS} keys over {args.partitions} state partitions, {SOURCES} x {RECORDS} records per "
          f"{args.interval * 1000:.0f} ms batch, groups of {args.group_size}; {args.start} -> {args.peak} -> {args.end} executors, "
          f"{args.phase:g} s apart")
    print(f"{'exact':>6} {'batches':>8} {'steady p99':>11} {'worst/p99 out':>14} {'worst/p99 in':>13} {'replays':>8}  exits; partitions")
    steady = row["steady"]
    print(f"{'yes' if row['exact'] else 'NO':>6} {row['batches']:>8} {steady * 1000:>9.1f}ms {row['out_worst'] / steady:>13.2f}x "
          f"{row['in_worst'] / steady:>12.2f}x {row['replays']:>8}  {sorted(set(row['exits'].values()))}; "
          + ", ".join(f"{k}: {v}" for k, v in sorted(row["held"].items())))
    fine = row["exact"] and row["replays"] == 0 and set(row["exits"].values()) == {0}
    return 0 if fine else 1


if __name__ == "__main__":
    raise SystemExit(main())
