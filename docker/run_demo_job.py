"""A short job against a running Squall cluster (docker-compose or Kubernetes), printing its results.

    docker-compose -f docker/docker-compose.yml run --rm driver [--batches 20]
    python docker/run_demo_job.py            # anywhere, with SQUALL_SCHEDULER_ADDRESS and the keys set

It connects to SQUALL_SCHEDULER_ADDRESS with the cluster's keys (SQUALL_CURVE_PUBLIC_KEY and
SQUALL_CURVE_SECRET_KEY), waits until enough executors have registered, runs a word count and a
run of micro-batches in Drizzle group mode, checks every result against plain Python and exits 0
if all of them match (1 if one does not, 2 if the cluster cannot be reached in time).
The image ships it as /opt/squall/run_demo_job.py.
"""

from __future__ import annotations

import argparse
import collections
import operator
import os
import sys
import time

import squall

TEXT = """the quick brown fox jumps over the lazy dog
a rose is a rose is a rose
the dog barks and the fox runs
squall runs micro batches in groups"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="run_demo_job.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--address", default=os.environ.get("SQUALL_SCHEDULER_ADDRESS", ""),
                        help="scheduler address (default: SQUALL_SCHEDULER_ADDRESS)")
    parser.add_argument("--min-executors", type=int, default=1, help="wait for this many executors (default 1)")
    parser.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the cluster (default 60)")
    parser.add_argument("--batches", type=int, default=20, help="micro-batches in the group run (default 20)")
    parser.add_argument("--group-size", type=int, default=10, help="micro-batches per group (default 10)")
    return parser


def connect_when_ready(address: str, min_executors: int, wait: float) -> squall.Context:
    """Connect, retrying until the scheduler answers and `min_executors` executors have registered."""
    deadline = time.monotonic() + wait
    while True:
        try:
            ctx = squall.connect(address)
        except squall.ConnectionError as exc:
            if time.monotonic() > deadline:
                raise
            print(f"waiting for the scheduler at {address}: {exc}", flush=True)
            continue
        have = len(ctx.status().executors)
        while have < min_executors and time.monotonic() < deadline:
            time.sleep(0.5)
            have = len(ctx.status().executors)
        if have < min_executors:
            ctx.close()
            raise squall.ConnectionError(f"{have} of {min_executors} executors registered within {wait:g}s")
        return ctx


def word_count(ctx: squall.Context) -> bool:
    lines = TEXT.splitlines()
    counts = (ctx.parallelize(lines, partitions=4)
                 .flat_map(str.split)
                 .map(lambda w: (w, 1))
                 .reduce_by_key(operator.add, partitions=4))
    got = dict(counts.collect())
    expected = dict(collections.Counter(" ".join(lines).split()))
    top = sorted(got.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
    print(f"word count: {len(got)} words, most common {top}", flush=True)
    return got == expected


def group_run(ctx: squall.Context, batches: int, group_size: int) -> bool:
    datasets = [ctx.range(b * 1000, (b + 1) * 1000, partitions=4).map(lambda x: (x % 10, x)).reduce_by_key(operator.add, 4)
                for b in range(batches)]
    start = time.perf_counter()
    results = ctx.run_jobs(datasets, group_size=group_size)
    elapsed = time.perf_counter() - start
    ok = True
    for b, result in enumerate(results):
        expected = collections.defaultdict(int)
        for x in range(b * 1000, (b + 1) * 1000):
            expected[x % 10] += x
        ok = ok and dict(result) == dict(expected)
    print(f"micro-batches: {batches} in groups of {group_size}, {elapsed * 1000 / max(1, batches):.2f} ms per batch, "
          f"batch 0 sums {sorted(dict(results[0]).items())[:3]}...", flush=True)
    return ok


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.address:
        print("run_demo_job.py: set SQUALL_SCHEDULER_ADDRESS or pass --address", file=sys.stderr)
        return 2
    try:
        ctx = connect_when_ready(args.address, args.min_executors, args.wait)
    except squall.ConnectionError as exc:
        print(f"run_demo_job.py: cannot use the cluster at {args.address}: {exc}", file=sys.stderr)
        return 2
    with ctx:
        executors = ctx.status().executors
        print(f"connected to {args.address}: {len(executors)} executors "
              f"({', '.join(sorted(e.executor_id for e in executors))})", flush=True)
        checks = {"word count": word_count(ctx), "micro-batches": group_run(ctx, args.batches, args.group_size)}
    for name, ok in checks.items():
        print(f"{name}: {'OK, matches plain Python' if ok else 'MISMATCH'}", flush=True)
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
