"""The Yahoo Streaming Benchmark on Squall (and, with --peers, on its peer engines).

Sources emit JSON ad events (squall.ysb.make_event) at a fixed offered rate; the job
parses them, keeps views, joins ad to campaign through a broadcast table and counts views per
campaign per tumbling event-time window. For each offered rate (events per second over all source
partitions) it prints the achieved input rate (events the sources produced in the delivered
batches, per second), the output rate (window results per second) and
the p50/p99 window latency (emit time minus window end), and the highest rate sustained with a
p99 within the bound (default: twice the batch interval). Group sizes are tuned at run time
("auto") and printed over time.

    python -m bench.ysb [--rates 20000 50000 100000] [--seconds 30] [--window 10] [--peers [ENGINE ...]]
                        [--source rate redis]

With --source redis the events come from Redis Streams written by a generator process and the
window counts go back to Redis exactly once, latency measured at landing (bench.ysb_redis), and
redis-benchmark's XADD and XRANGE rates are printed. --peers runs the same job on PySpark
Structured Streaming, Bytewax and PyFlink (bench.ysb_spark, bench.ysb_bytewax, bench.ysb_flink),
each after Squall's cluster is stopped; one table holds every engine's rows.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import math
import statistics
import time
from typing import Any

from bench import machine
from bench.ysb_workload import LatencyStats, is_sustained
from squall import LocalCluster, Settings
from squall.windows import WindowResult
from squall.ysb import DEFAULT_WINDOW_SECONDS, PARTITIONS, verify, ysb_stream

WARMUP_SECONDS = 3.0  # as the peers': the windows that start this long after the stream's start are measured


def run_squall_ysb(ctx: Any, rate: int, seconds: float, window: float, batch_interval: float, check: bool = False) -> dict[str, Any]:
    """One offered rate (events per second over all source partitions) for `seconds`: achieved
    input events per second and window latencies (window_latencies: measured as the peers'
    are)."""
    results: list[WindowResult] = []
    stream = ysb_stream(ctx, rate, window, batch_interval, results)
    time.sleep(seconds)
    stopped_at = time.time()
    stream.stop()
    state = stream.metrics_state
    delivered = state.batches
    # Events the sources produced in the batches delivered, over the time they took to come out.
    achieved = (state.input_records or 0) / max(1e-9, min(stopped_at, time.time()) - state.started)
    # One latency per result, in the order delivered (the stream's metrics take them as results come).
    latencies, unfinished = window_latencies(list(zip(results, state.window_latencies, strict=True)), state.started,
                                             stopped_at, window)
    stats = LatencyStats(tuple(latencies))
    outcome = {
        "offered": rate,
        "achieved": achieved,
        "p50": stats.p50,
        "p99": stats.p99,
        "windows": len(latencies),
        "unfinished": unfinished,
        "output_per_second": state.output_records / max(1e-9, min(stopped_at, time.time()) - state.started),
        "group_sizes": list(state.group_sizes),
        "overhead": settled_overhead(list(state.overheads)),
        "batches": delivered,
    }
    if check:
        outcome["correct"] = verify(results, state.started, rate, batch_interval, delivered, window)
    return outcome


def window_latencies(results: list[tuple[WindowResult, float]], started: float, stopped: float,
                     window: float) -> tuple[list[float], int]:
    """The latency of each measured window, as the peers measure theirs: the time its final count
    (the last of its campaigns' results) arrived minus its end. Measured are the windows that start
    WARMUP_SECONDS or more after the stream started and end by the stop; one with no result by
    the stop counts until the stop (and as unfinished). Returns (latencies, unfinished)."""
    final: dict[float, float] = {}
    for result, latency in results:
        final[result.start] = max(final.get(result.start, 0.0), latency)
    first = math.ceil((started + WARMUP_SECONDS) / window - 1e-9)
    starts = [k * window for k in range(first, math.floor(stopped / window + 1e-9))]
    latencies, unfinished = [], 0
    for start in starts:
        found = next((v for s, v in final.items() if abs(s - start) < 1e-6 * window), None)
        if found is None:
            latencies.append(stopped - (start + window))
            unfinished += 1
        else:
            latencies.append(found)
    return latencies, unfinished


def group_size_trace(sizes: list[int], batch_interval: float, points: int = 8) -> str:
    """The group size over the run, sampled at `points` evenly spaced groups, each as
    "<seconds into the stream>s:<size>" (a group starts where the batches before it end)."""
    if not sizes:
        return "-"
    starts = [0]
    for size in sizes[:-1]:
        starts.append(starts[-1] + size)
    step = max(1, len(sizes) // points)
    return " ".join(f"{starts[k] * batch_interval:.1f}s:{sizes[k]}" for k in range(0, len(sizes), step)[:points])


def settled_overhead(overheads: list[float], warmup_fraction: float = 0.2) -> float | None:
    """The median coordination overhead of the groups after the first `warmup_fraction` of them."""
    settled = overheads[int(len(overheads) * warmup_fraction):]
    return statistics.median(settled) if settled else None


# Peer engines for --peers: (name in the table, module, function). Each function takes (rate,
# seconds, window, batch_interval) and returns bench.ysb_spark.run_spark_ysb's keys, or "skipped"
# with the reason when its engine is not installed or cannot start.
PEERS = (
    ("PySpark", "bench.ysb_spark", "run_spark_ysb"),
    ("Bytewax", "bench.ysb_bytewax", "run_bytewax_ysb"),
    ("PyFlink", "bench.ysb_flink", "run_flink_ysb"),
)


def run_peer(engine: str, module: str, function: str, rate: int, seconds: float, window: float,
             batch_interval: float) -> dict[str, Any]:
    """One peer at one offered rate: its result, or a "skipped" row saying why it did not run."""
    try:
        run = getattr(importlib.import_module(module), function)
    except ImportError as exc:
        return {"engine": engine, "offered": rate, "skipped": f"not installed ({exc})"}
    try:
        result = dict(run(rate, seconds=seconds, window=window, batch_interval=batch_interval))
    except Exception as exc:  # noqa: BLE001 - one engine's failure is a row of the table, not the end of the run
        first_line = (str(exc).strip().splitlines() or [""])[0]
        return {"engine": engine, "offered": rate, "skipped": f"failed: {type(exc).__name__}: {first_line[:160]}"}
    result["engine"] = engine
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ysb", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", type=int, nargs="+", default=[20_000, 50_000, 100_000], help="offered events per second")
    parser.add_argument("--seconds", type=float, default=30.0, help="run time per rate (default 30)")
    parser.add_argument("--window", type=float, default=DEFAULT_WINDOW_SECONDS, help="window length in seconds (default 10)")
    parser.add_argument("--batch-interval", type=float, default=0.1, help="micro-batch interval (default 0.1 s)")
    parser.add_argument("--executors", type=int, default=4)
    parser.add_argument("--latency-bound", type=float, default=None, help="p99 bound for 'sustained' (default 2x the batch interval)")
    parser.add_argument("--check", action="store_true", help="verify every window count against plain Python (slow; rate source)")
    parser.add_argument("--peers", nargs="*", metavar="ENGINE", default=None,
                        help=f"also run peer engines on the in-process generator: {', '.join(p[0] for p in PEERS)} "
                             "(all of them when none is named; those not installed are listed as skipped)")
    parser.add_argument("--peer-rates", type=int, nargs="+", default=None,
                        help="offered rates for the peers (default: --rates): engines that fall behind early need not "
                             "spend a run on every rate Squall is offered")
    parser.add_argument("--source", choices=["rate", "redis"], nargs="+", default=["rate"],
                        help="rate: events made on the executors (default); redis: Redis Streams fed by a generator "
                             "process; both: one row each")
    parser.add_argument("--redis-url", default=None, help="with --source redis: the Redis to use (default: a private redis-server)")
    parser.add_argument("--events-per-entry", type=int, default=0,
                        help="with --source redis: events per stream entry at most (default 0: a partition's events of "
                             "each 5 ms tick in one entry, as a batching producer writes them; 1: an entry per event)")
    args = parser.parse_args(argv)
    peers = [] if args.peers is None else [p for p in PEERS if not args.peers or p[0].lower() in {n.lower() for n in args.peers}]
    if args.peers and len(peers) < len(args.peers):
        print(f"--peers: unknown engine among {args.peers}; known: {', '.join(p[0] for p in PEERS)}")
        return 2
    bound = args.latency_bound or 2 * args.batch_interval

    print(machine.header("bench.ysb", argv))
    print(f"YSB: {PARTITIONS} source partitions, {args.executors} executors, {args.batch_interval * 1000:.0f} ms batches, "
          f"{args.window:g} s windows, {args.seconds:g} s per rate, sources {' '.join(args.source)}; "
          f"sustained = achieved >= 95% of offered and p99 <= {bound * 1000:.0f} ms\n")
    rows: list[dict[str, Any]] = []
    redis_rates: dict[str, float] | None = None
    settings = Settings.from_env(log_level="warning", metrics_window=1_000_000)  # every sample of a run
    with contextlib.ExitStack() as redis, LocalCluster(executors=args.executors, settings=settings) as cluster, \
            cluster.connect() as ctx:
        for source in args.source:
            if source == "redis":
                from bench import ysb_redis

                url = args.redis_url or redis.enter_context(ysb_redis.local_redis())
            for rate in sorted(args.rates):
                if source == "redis":
                    result = ysb_redis.run_redis_ysb(ctx, url, rate, args.seconds, args.window, args.batch_interval,
                                                     args.events_per_entry)
                    result["engine"] = "Squall/Redis"
                else:
                    result = run_squall_ysb(ctx, rate, args.seconds, args.window, args.batch_interval, args.check)
                    result["engine"] = "Squall"
                rows.append(result)
                print(format_row(result, args.batch_interval), flush=True)  # as it comes: a long run shows progress
        if "redis" in args.source:
            redis_rates = ysb_redis.redis_benchmark(url)  # after the runs: Redis's own rates on this machine
    for engine, module, function in peers:  # after the cluster is gone: each engine has the machine to itself
        for rate in sorted(args.peer_rates or args.rates):
            rows.append(run_peer(engine, module, function, rate, args.seconds, args.window, args.batch_interval))
            print(format_row(rows[-1], args.batch_interval), flush=True)
    print("\nAll engines:")
    print(format_table(rows, args.batch_interval, settings))
    print()
    for engine in dict.fromkeys(r["engine"] for r in rows):
        sustained = [r["offered"] for r in rows if r["engine"] == engine and is_sustained(r, bound)]
        print(f"highest rate {engine} sustained with p99 <= {bound * 1000:.0f} ms: "
              f"{f'{max(sustained):,}/s' if sustained else 'none of those offered'}")
    if redis_rates is not None:
        print("redis-benchmark on this machine (pipeline 16, 8 clients): "
              + ", ".join(f"{command} {rps:,.0f} requests/s" for command, rps in redis_rates.items()))
    return 0


def format_table(rows: list[dict[str, Any]], batch_interval: float, settings: Settings) -> str:
    """Every engine's rows in one table, with a legend."""
    lines = [f"{'engine':<13} {'offered/s':>10} {'input/s':>11} {'output/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'windows':>8} "
             f"{'overhead':>8}  notes (Squall: group size over time, seconds:size)"]
    lines += [format_row(r, batch_interval) for r in rows]
    lines.append(f"overhead: median share of each group's span spent on coordination at its boundary, after the first 20% "
                 f"of groups (auto group size keeps it within {settings.group_overhead_lower:.0%}-"
                 f"{settings.group_overhead_upper:.0%}, or at size 1 below it). Squall/Redis: events from Redis Streams "
                 "written by a generator process, counts landed in Redis; peers: the in-process generator.")
    return "\n".join(lines)


def format_row(r: dict[str, Any], batch_interval: float) -> str:
    """One run's line of the table, or its skipped note."""
    if r.get("skipped"):
        return f"{r['engine']:<13} {r['offered']:>10,} skipped: {r['skipped']}"
    notes = group_size_trace(r.get("group_sizes", []), batch_interval) if "group_sizes" in r else ""
    if "correct" in r:
        notes += f"  correct: {r['correct']}"
    for key, label in (("unfinished", "windows unfinished"), ("late", "events dropped as late")):
        if r.get(key):
            notes += f"  {r[key]:,} {label}"
    overhead = f"{r['overhead']:.1%}" if r.get("overhead") is not None else "-"
    output = f"{r['output_per_second']:,.0f}" if "output_per_second" in r else "-"
    return (f"{r['engine']:<13} {r['offered']:>10,} {r['achieved']:>11,.0f} {output:>9} {r['p50'] * 1000:>8.1f} "
            f"{r['p99'] * 1000:>8.1f} {r['windows']:>8} {overhead:>8}  {notes.strip()}")


if __name__ == "__main__":
    raise SystemExit(main())
