"""Drizzle's micro-benchmark (SOSP 2017, section 6.2) on Squall, and with --peers on Dask, Ray and
PySpark in the same run.

Workloads (bench.workloads): single-stage, each task sums 10k numbers; two-stage, each map task
folds 10k numbers into R partial sums keyed by x % R and R reducers sum them. B micro-batches
(default 100) run back to back on a local cluster of E executors (default 4), T tasks per stage.

Squall rows: Baseline (BSP: the scheduler launches each stage when the previous one is done and
reducers pull), Only pre-scheduling (group size 1), Drizzle with groups of 10 and of 100.
Time per micro-batch: for Squall, the interval between consecutive batch completions at the
driver (the first from the run's submission), which for one batch at a time is exactly the
peers' measure, submit to result. Every batch's result is checked against plain Python.

The compute floor is what a micro-batch's map work costs the machine: one map task's time (its
function timed alone in this process, the median of many runs) x map tasks / cores. "over floor"
is the mean minus it: what the engine adds to each micro-batch.

    python -m bench.microbench [--workload two-stage|single-stage|both] [--batches 100] [--peers]

With --metrics-cost it measures instead what serving Prometheus metrics costs a micro-batch
(bench.metrics_cost): Drizzle group 100 with metrics on and scraped, and off, alternating.
"""

from __future__ import annotations

import argparse
import operator
import os
import statistics
import time
from dataclasses import dataclass
from typing import Any

from bench import machine
from bench.workloads import (
    DEFAULT_BATCHES,
    DEFAULT_NUMBERS,
    DEFAULT_REDUCERS,
    DEFAULT_TASKS,
    SINGLE_STAGE,
    WORKLOADS,
    expected_result,
    fold_task,
    median_and_p90,
    sum_task,
)
from squall import Context, LocalCluster

MODES: list[tuple[str, dict[str, Any]]] = [
    ("Baseline (BSP)", dict(preschedule=False, group_size=1)),
    ("Only pre-scheduling", dict(preschedule=True, group_size=1)),
    ("Drizzle, group 10", dict(preschedule=True, group_size=10)),
    ("Drizzle, group 100", dict(preschedule=True, group_size=100)),
]


@dataclass
class Row:
    name: str
    workload: str
    mean_ms: float  # total time / batches: the paper's time per micro-batch, robust to bursts
    median_ms: float
    p90_ms: float
    note: str = ""


def batch_dataset(ctx: Context, workload: str, tasks: int, reducers: int, numbers: int) -> Any:
    """One micro-batch as a Squall dataset: task i is partition i of range(tasks)."""
    tasks_ds = ctx.range(tasks, partitions=tasks)
    if workload == SINGLE_STAGE:
        return tasks_ds.map(lambda i: sum_task(i, numbers))
    folds = tasks_ds.flat_map(lambda i: enumerate(fold_task(i, numbers, reducers)))
    return folds.reduce_by_key(operator.add, reducers)


def batch_result(workload: str, records: list[Any]) -> Any:
    if workload == SINGLE_STAGE:
        return sum(records)
    return [value for _, value in sorted(records)]


def run_squall(ctx: Context, workload: str, batches: int, tasks: int, reducers: int, numbers: int) -> list[Row]:
    expected = expected_result(workload, tasks, reducers, numbers)
    rows = []
    for name, mode in MODES:
        datasets = [batch_dataset(ctx, workload, tasks, reducers, numbers) for _ in range(batches)]
        ctx.run_jobs(datasets[: min(10, batches)], **mode)  # warm-up: connections, code caches
        results = ctx.run_jobs(datasets, **mode)
        for index, records in enumerate(results):
            if batch_result(workload, records) != expected:
                raise AssertionError(f"{name}: micro-batch {index} gave {batch_result(workload, records)!r}, expected {expected!r}")
        stats = ctx.last_run
        assert stats is not None
        intervals = stats.batch_intervals
        median, p90 = median_and_p90(intervals)
        note = ""
        if stats.groups:
            note = f"{len(stats.groups)} groups, {sum(g.launch_bytes for g in stats.groups) / batches:,.0f} B launched per batch"
        rows.append(Row(name, workload, sum(intervals) / len(intervals) * 1000, median * 1000, p90 * 1000, note))
    return rows


def run_peers(workload: str, batches: int, tasks: int, reducers: int, numbers: int) -> list[Row]:
    from bench import peers

    rows = []
    for name, peer in [("Ray", "ray"), ("Dask distributed", "dask"), ("PySpark", "spark")]:
        result = peers.run_peer(peer, workload=workload, batches=batches, tasks=tasks, reducers=reducers, numbers=numbers)
        if result.skipped:
            rows.append(Row(name, workload, float("nan"), float("nan"), float("nan"), f"skipped: {result.skipped}"))
            continue
        seconds = result.batch_seconds
        median, p90 = median_and_p90(seconds)
        mean = sum(seconds) / len(seconds)
        rows.append(Row(name, workload, mean * 1000, median * 1000, p90 * 1000, f"start-up {result.startup_seconds:.1f} s"))
    return rows


def compute_floor_ms(workload: str, tasks: int, reducers: int, numbers: int, cores: int) -> tuple[float, float]:
    """(one map task's time, the floor: that x tasks / cores), in ms: the task's function timed
    alone in this process, the median of 201 runs after 20 to warm up."""
    def one() -> object:
        return sum_task(1, numbers) if workload == SINGLE_STAGE else fold_task(1, numbers, reducers)

    for _ in range(20):
        one()
    times = []
    for _ in range(201):
        start = time.perf_counter()
        one()
        times.append(time.perf_counter() - start)
    task_ms = statistics.median(times) * 1000
    return task_ms, task_ms * tasks / cores


def format_table(rows: list[Row], reference: dict[str, float], floors: dict[str, float] | None = None) -> str:
    def ms(value: float) -> str:
        return f"{value:.2f}" if value == value else "-"

    floors = floors or {}
    lines = [
        f"{'workload':<13} {'engine / mode':<22} {'mean ms':>8} {'over floor':>10} {'median ms':>10} {'p90 ms':>8} "
        f"{'mean / Drizzle-100':>19}  note",
        "-" * 123,
    ]
    for row in rows:
        ref = reference.get(row.workload)
        ratio = f"{row.mean_ms / ref:.1f}x" if ref and row.mean_ms == row.mean_ms else "-"
        floor = floors.get(row.workload)
        over = ms(row.mean_ms - floor) if floor is not None else "-"
        lines.append(
            f"{row.workload:<13} {row.name:<22} {ms(row.mean_ms):>8} {over:>10} {ms(row.median_ms):>10} {ms(row.p90_ms):>8} "
            f"{ratio:>19}  {row.note}"
        )
    lines.append(
        "\nmean = total time / micro-batches (the Drizzle paper's time per micro-batch). Squall's median and p90 are over "
        "the intervals between\nconsecutive batch completions (where results arrive: the driver, or in BSP the scheduler); in pipelined groups "
        "completions come in "
        "bursts, so judge by the mean.\nPeers run one micro-batch at a time, submit to result, as a stream engine built on "
        "them would; so does Squall's baseline."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.microbench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", choices=[*WORKLOADS, "both"], default="both")
    parser.add_argument("--batches", type=int, default=DEFAULT_BATCHES, help="micro-batches per mode (default 100)")
    parser.add_argument("--executors", type=int, default=4, help="Squall executor processes (default 4)")
    parser.add_argument("--tasks", type=int, default=DEFAULT_TASKS, help="tasks per stage (default 4)")
    parser.add_argument("--reducers", type=int, default=DEFAULT_REDUCERS, help="reduce tasks (default 4)")
    parser.add_argument("--numbers", type=int, default=DEFAULT_NUMBERS, help="numbers per map task (default 10000)")
    parser.add_argument("--peers", action="store_true", help="also run Ray, Dask distributed and PySpark")
    parser.add_argument("--metrics-cost", action="store_true",
                        help="instead: Drizzle group 100 with metrics on (scraped every second) and off, alternating")
    parser.add_argument("--rounds", type=int, default=5, help="with --metrics-cost: runs on each cluster (default 5)")
    args = parser.parse_args(argv)
    if args.batches < 1 or args.rounds < 1:
        parser.error("--batches and --rounds must be at least 1")
    workloads = list(WORKLOADS) if args.workload == "both" else [args.workload]
    shape = (args.tasks, args.reducers, args.numbers)

    print(machine.header("bench.microbench", argv))
    if args.metrics_cost:
        from bench import metrics_cost

        workload = workloads[-1]  # two-stage unless one is named
        result = metrics_cost.run(workload, args.batches, args.rounds, args.executors, shape)
        print(metrics_cost.report(result, workload, args.batches, args.rounds))
        return 0
    print(f"{args.batches} micro-batches per mode; {args.executors} executors; {args.tasks} tasks per stage; "
          f"{args.reducers} reducers; {args.numbers:,} numbers per task\n")
    rows: list[Row] = []
    with LocalCluster(executors=args.executors) as cluster, cluster.connect() as ctx:
        for workload in workloads:
            rows += run_squall(ctx, workload, args.batches, *shape)
    reference = {r.workload: r.mean_ms for r in rows if r.name == MODES[-1][0]}
    cores = os.cpu_count() or 1
    floors: dict[str, float] = {}
    for workload in workloads:
        task_ms, floors[workload] = compute_floor_ms(workload, args.tasks, args.reducers, args.numbers, cores)
        print(f"{workload}: one map task {task_ms:.3f} ms; compute floor {floors[workload]:.3f} ms "
              f"({args.tasks} tasks / {cores} cores)")
    print()
    if args.peers:
        for workload in workloads:
            rows += run_peers(workload, args.batches, *shape)
    rows.sort(key=lambda r: workloads.index(r.workload))
    print(format_table(rows, reference, floors))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
