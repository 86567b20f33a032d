"""The Yahoo Streaming Benchmark on Squall (and, with --peers, on PySpark Structured Streaming).

Sources emit JSON ad events (squall.ysb.make_event) at a fixed offered rate; the job
parses them, keeps views, joins ad to campaign through a broadcast table and counts views per
campaign per tumbling event-time window. For each offered rate (events per second over all source
partitions) it prints the achieved input rate (events the sources produced in the delivered
batches, per second), the output rate (window results per second) and
the p50/p99 window latency (emit time minus window end), and the highest rate sustained with a
p99 within the bound (default: twice the batch interval). Group sizes are tuned at run time
("auto") and printed over time.

    python -m bench.ysb [--rates 20000 50000 100000] [--seconds 30] [--window 10] [--peers]

With --source redis the events come from Redis Streams written by a generator process and the
window counts go back to Redis exactly once, latency measured at landing (bench.ysb_redis).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from typing import Any

from bench import machine
from bench.ysb_workload import LatencyStats, highest_sustained_rate
from squall import LocalCluster, Settings
from squall.windows import WindowResult
from squall.ysb import DEFAULT_WINDOW_SECONDS, PARTITIONS, verify, ysb_stream


def run_squall_ysb(ctx: Any, rate: int, seconds: float, window: float, batch_interval: float, check: bool = False) -> dict[str, Any]:
    """One offered rate (events per second over all source partitions) for `seconds`: achieved
    input events per second and window latencies."""
    results: list[WindowResult] = []
    stream = ysb_stream(ctx, rate, window, batch_interval, results)
    time.sleep(seconds)
    stopped_at = time.time()
    stream.stop()
    state = stream.metrics_state
    delivered = state.batches
    # Events the sources produced in the batches delivered, over the time they took to come out.
    achieved = (state.input_records or 0) / max(1e-9, min(stopped_at, time.time()) - state.started)
    stats = LatencyStats(tuple(state.window_latencies))
    outcome = {
        "offered": rate,
        "achieved": achieved,
        "p50": stats.p50,
        "p99": stats.p99,
        "windows": len(results),
        "output_per_second": state.output_records / max(1e-9, min(stopped_at, time.time()) - state.started),
        "group_sizes": list(state.group_sizes),
        "overhead": settled_overhead(list(state.overheads)),
        "batches": delivered,
    }
    if check:
        outcome["correct"] = verify(results, state.started, rate, batch_interval, delivered, window)
    return outcome


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ysb", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", type=int, nargs="+", default=[20_000, 50_000, 100_000], help="offered events per second")
    parser.add_argument("--seconds", type=float, default=30.0, help="run time per rate (default 30)")
    parser.add_argument("--window", type=float, default=DEFAULT_WINDOW_SECONDS, help="window length in seconds (default 10)")
    parser.add_argument("--batch-interval", type=float, default=0.1, help="micro-batch interval (default 0.1 s)")
    parser.add_argument("--executors", type=int, default=4)
    parser.add_argument("--latency-bound", type=float, default=None, help="p99 bound for 'sustained' (default 2x the batch interval)")
    parser.add_argument("--check", action="store_true", help="verify every window count against plain Python (slow)")
    parser.add_argument("--peers", action="store_true", help="also run PySpark Structured Streaming")
    parser.add_argument("--source", choices=["rate", "redis"], default="rate",
                        help="rate: events made on the executors (default); redis: Redis Streams fed by a generator process")
    parser.add_argument("--redis-url", default=None, help="with --source redis: the Redis to use (default: a private redis-server)")
    args = parser.parse_args(argv)
    if args.source == "redis":
        if args.check or args.peers:
            print("--source redis: --check and --peers are for the rate source")
            return 2
    bound = args.latency_bound or 2 * args.batch_interval

    print(machine.header("bench.ysb", argv))
    print(f"YSB: {PARTITIONS} source partitions, {args.executors} executors, {args.batch_interval * 1000:.0f} ms batches, "
          f"{args.window:g} s windows, {args.seconds:g} s per rate, source {args.source}; sustained = achieved >= 95% of offered and p99 <= {bound * 1000:.0f} ms\n")
    rows = []
    settings = Settings.from_env(log_level="warning", metrics_window=1_000_000)  # every sample of a run
    with contextlib.ExitStack() as redis, LocalCluster(executors=args.executors, settings=settings) as cluster, \
            cluster.connect() as ctx:
        if args.source == "redis":
            from bench import ysb_redis

            url = args.redis_url or redis.enter_context(ysb_redis.local_redis())

        def run(rate: int) -> dict[str, Any]:
            if args.source == "redis":
                result = ysb_redis.run_redis_ysb(ctx, url, rate, args.seconds, args.window, args.batch_interval)
            else:
                result = run_squall_ysb(ctx, rate, args.seconds, args.window, args.batch_interval, args.check)
            result["engine"] = "Squall"
            rows.append(result)
            return result

        best, _ = highest_sustained_rate(args.rates, run, bound, stop_at_first_failure=False)
    if args.peers:
        try:
            from bench.ysb_spark import run_spark_ysb
        except ImportError as exc:
            print(f"PySpark skipped: {exc}")
        else:
            for rate in args.rates:
                result = dict(run_spark_ysb(rate=rate, seconds=args.seconds, window=args.window, batch_interval=args.batch_interval))
                result["engine"] = "PySpark"
                rows.append(result)
    print(f"{'engine':<8} {'offered/s':>10} {'input/s':>11} {'output/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'windows':>8} {'overhead':>8}  "
          "group size over time (seconds:size)")
    for r in rows:
        if r.get("skipped"):
            print(f"{r['engine']:<8} {r['offered']:>10,} skipped: {r['skipped']}")
            continue
        note = group_size_trace(r.get("group_sizes", []), args.batch_interval)
        overhead = f"{r['overhead']:.1%}" if r.get("overhead") is not None else "-"
        if "correct" in r:
            note += f"  correct: {r['correct']}"
        output = f"{r['output_per_second']:,.0f}" if "output_per_second" in r else "-"
        print(f"{r['engine']:<8} {r['offered']:>10,} {r['achieved']:>11,.0f} {output:>9} {r['p50'] * 1000:>8.1f} {r['p99'] * 1000:>8.1f} {r['windows']:>8} {overhead:>8}  {note}")
    print(f"overhead: median share of each group's span spent on coordination at its boundary, after the first 20% of "
          f"groups (auto group size keeps it within {settings.group_overhead_lower:.0%}-{settings.group_overhead_upper:.0%}, "
          "or at size 1 below it)")
    print(f"\nhighest rate Squall sustained with p99 <= {bound * 1000:.0f} ms: {f'{best:,}/s' if best else 'none of those offered'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
