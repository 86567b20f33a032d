"""Long lineages: time per iteration against iteration number, for iterative jobs whose datasets
derive from the last iteration's, on Squall with and without plan deltas, with checkpoints, and
on PySpark.

Workloads (bench.lineage_workloads says what they compute):

- pagerank: PageRank over a synthetic graph (100,000 edges, 10,000 vertices), 100 iterations.
  The links are grouped by source and persisted; each iteration makes
  ranks = links.join(ranks).flat_map(contributions).reduce_by_key(add).map_values(damped).persist();
- als: ALS matrix factorisation of a synthetic rating matrix (40,000 ratings, 2,000 users, 500
  items, factors of 4), 30 passes; the ratings are grouped by user and by item and persisted;
  each pass derives new user factors from the last item factors (a join, normal equations summed
  by reduce_by_key, a solve per user), and new item factors from those, both persisted;
- stream: a driver-side loop of 300 batches of 2,000 records (10,000 keys) whose state is a
  chain of persisted datasets: each batch's records (parallelize) cogrouped with the last
  state into the new state, (count, sum) per key.

Each iteration persists what it derives, runs an action on it (count), then unpersists what the
last iteration derived, as Spark users write it. Its time runs from building its datasets to
the action's return (the inputs are computed and kept before the first, and the stream runs one
untimed batch first, to warm the cluster up). Rows, each workload on a fresh local cluster of
--executors executors:

- "deltas on": Settings.plan_deltas on the driver (the default): a job sends the scheduler only
  the plan nodes it has not seen;
- "deltas off": plan_deltas=False on the driver: every job sends its whole plan;
- "deltas off, checkpoint every N": as "deltas off", and every N-th iteration's dataset is
  checkpoint()ed (the item factors in als), which cuts its lineage to one node (--checkpoint-every, 10);
- "PySpark": the same algorithms on RDDs (cache, unpersist, count), local[2], when pyspark is
  installed (bench.lineage_spark); --no-spark leaves it out.

Columns: the median time of the first and of the last tenth of the iterations (1-10 and 91-100
of 100), their ratio, the bytes the driver submitted for the first and the last iteration's
action (ctx.last_run.submitted_bytes), and whether the result matched the plain-Python reference
computed in the same run (PageRank ranks within 1e-9, the ALS loss to a relative 1e-9, the
stream's state exactly). --plot draws time per iteration against iteration number.

    python -m bench.lineage [--quick] [--workloads pagerank als stream] [--checkpoint-every 10]
                            [--iterations N] [--passes N] [--batches N] [--no-spark] [--plot lineage.png]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import operator
import statistics
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from bench import machine
from bench.lineage_workloads import (
    add_terms,
    als_loss,
    als_reference,
    batch_records,
    by_item,
    contributions,
    damped,
    edge,
    fold_batch,
    initial_rank,
    pagerank_reference,
    ranks_match,
    rating,
    solve,
    stream_reference,
    synthetic_links,
    synthetic_ratings,
    terms_for_others,
    with_initial_factor,
)
from bench.plotting import pyplot
from squall import Context, Dataset, LocalCluster, Settings, connect

WORKLOADS = ("pagerank", "als", "stream")


@dataclass(frozen=True)
class Sizes:
    edges: int = 100_000
    vertices: int = 10_000
    iterations: int = 100  # PageRank
    ratings: int = 40_000
    users: int = 2_000
    items: int = 500
    passes: int = 30  # ALS
    batches: int = 300  # stream
    records: int = 2_000  # per batch
    keys: int = 10_000
    partitions: int = 8
    checkpoint_every: int = 10


# Tiny: a check, in seconds, that every row runs and matches its reference.
QUICK = Sizes(edges=400, vertices=50, iterations=10, ratings=300, users=30, items=12, passes=5, batches=12, records=40,
              keys=30, partitions=4, checkpoint_every=3)


class Series:
    """One row's time per iteration and, per iteration, the bytes the driver submitted for its last job."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.submitted: list[int | None] = []

    @contextmanager
    def iteration(self, ctx: Context | None = None) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.seconds.append(time.perf_counter() - start)
        if ctx is not None:  # the figure that plan deltas shrink: the bytes of the action's submissions
            sent = ctx.last_run.submitted_bytes if ctx.last_run is not None else []
            self.submitted.append(sum(sent) if sent else None)


@dataclass
class Row:
    workload: str
    name: str
    seconds: list[float] = field(default_factory=list)
    submitted: list[int | None] = field(default_factory=list)
    matched: bool | None = None
    skipped: str | None = None  # why the row has no figures


# --- the workloads on Squall ---------------------------------------------------------------------


def checkpointed(ds: Dataset, iteration: int, every: int) -> None:
    if every and iteration % every == 0:
        ds.checkpoint()


def squall_pagerank(ctx: Context, sizes: Sizes, every: int, series: Series) -> dict[int, float]:
    p = sizes.partitions
    links = ctx.range(sizes.edges, partitions=p).map(partial(edge, sizes.vertices)).group_by_key(p).persist()
    ranks = links.map_values(initial_rank).persist()
    ranks.count()
    for iteration in range(1, sizes.iterations + 1):
        with series.iteration(ctx):
            new = links.join(ranks).flat_map(contributions).reduce_by_key(operator.add).map_values(damped).persist()
            checkpointed(new, iteration, every)
            new.count()
            ranks.unpersist()
            ranks = new
    return dict(ranks.collect())


def squall_als(ctx: Context, sizes: Sizes, every: int, series: Series) -> float:
    p = sizes.partitions
    ratings = ctx.range(sizes.ratings, partitions=p).map(partial(rating, sizes.users, sizes.items))
    of_user = ratings.group_by_key(p).persist()
    of_item = ratings.map(by_item).group_by_key(p).persist()
    items = of_item.map(with_initial_factor).persist()
    items.count()
    of_user.count()
    users: Dataset | None = None
    for iteration in range(1, sizes.passes + 1):
        with series.iteration(ctx):
            new_users = of_item.join(items).flat_map(terms_for_others).reduce_by_key(add_terms, p).map_values(solve).persist()
            new_items = of_user.join(new_users).flat_map(terms_for_others).reduce_by_key(add_terms, p).map_values(solve).persist()
            checkpointed(new_items, iteration, every)
            new_items.count()
            for old in (users, items):
                if old is not None:
                    old.unpersist()
            users, items = new_users, new_items
    assert users is not None, "no passes"
    return als_loss(synthetic_ratings(sizes.users, sizes.items, sizes.ratings), dict(users.collect()), dict(items.collect()))


def squall_stream(ctx: Context, sizes: Sizes, every: int, series: Series) -> dict[int, tuple[int, int]]:
    p = sizes.partitions
    state = ctx.parallelize([], p)
    ctx.parallelize(batch_records(-1, sizes.records, sizes.keys), p).cogroup(state, partitions=p).count()  # a warm-up
    for batch in range(sizes.batches):
        records = batch_records(batch, sizes.records, sizes.keys)
        with series.iteration(ctx):
            new = ctx.parallelize(records, p).cogroup(state, partitions=p).map_values(fold_batch).persist()
            checkpointed(new, batch + 1, every)
            new.count()
            state.unpersist()
            state = new
    return dict(state.collect())


@dataclass(frozen=True)
class Workload:
    squall: Callable[[Context, Sizes, int, Series], Any]
    reference: Callable[[Sizes], Any]
    matches: Callable[[Any, Any], bool]
    unit: str  # what one iteration is called


def _loss_matches(got: float, expected: float) -> bool:
    return math.isclose(got, expected, rel_tol=1e-9)


SPECS = {
    "pagerank": Workload(squall_pagerank, lambda s: pagerank_reference(synthetic_links(s.edges, s.vertices), s.iterations),
                         ranks_match, "iteration"),
    "als": Workload(squall_als, lambda s: als_reference(synthetic_ratings(s.users, s.items, s.ratings), s.passes),
                    _loss_matches, "pass"),
    "stream": Workload(squall_stream, lambda s: stream_reference(s.batches, s.records, s.keys), operator.eq, "batch"),
}


def squall_row(workload: str, name: str, deltas: bool, every: int, sizes: Sizes, executors: int, expected: Any) -> Row:
    """One row on a fresh cluster; a failure is the row's note, and the other rows still run."""
    row = Row(workload, name)
    series = Series()
    try:
        with LocalCluster(executors=executors, settings=Settings.from_env(log_level="warning")) as cluster, \
                connect(cluster, cluster.settings.replace(plan_deltas=deltas)) as ctx:
            got = SPECS[workload].squall(ctx, sizes, every, series)
        row.matched = SPECS[workload].matches(got, expected)
    except Exception as exc:  # noqa: BLE001 - reported in the table
        traceback.print_exc()
        row.skipped = f"failed after {len(series.seconds)} iterations: {type(exc).__name__}: {str(exc).splitlines()[0]}"
    row.seconds, row.submitted = series.seconds, series.submitted
    return row


# --- the table and the plot ----------------------------------------------------------------------


def tenths(seconds: list[float]) -> tuple[float, float]:
    """The median of the first tenth of the iterations and of the last (at least one each)."""
    tenth = max(1, len(seconds) // 10)
    return statistics.median(seconds[:tenth]), statistics.median(seconds[-tenth:])


def _bytes(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def format_table(rows: list[Row]) -> str:
    head = (f"{'workload':<9} {'row':<32} {'iters':>5} {'first ms':>9} {'last ms':>9} {'last/first':>10} "
            f"{'bytes/job first':>15} {'last':>12} {'matched':>7}")
    lines = [head, "-" * len(head)]
    for r in rows:
        start = f"{r.workload:<9} {r.name:<32}"
        if r.skipped or not r.seconds:
            lines.append(f"{start} {r.skipped or 'no iterations'}")
            continue
        first, last = tenths(r.seconds)
        matched = "-" if r.matched is None else "yes" if r.matched else "NO"
        lines.append(f"{start} {len(r.seconds):>5} {first * 1000:>9.1f} {last * 1000:>9.1f} {last / first:>10.2f} "
                     f"{_bytes(r.submitted[0] if r.submitted else None):>15} "
                     f"{_bytes(r.submitted[-1] if r.submitted else None):>12} {matched:>7}")
    return "\n".join(lines)


def plot(rows: list[Row], workloads: list[str], path: str) -> None:
    plt = pyplot(path)
    if plt is None:
        return
    fig, axes = plt.subplots(1, len(workloads), figsize=(5 * len(workloads), 4.5), squeeze=False)
    for ax, workload in zip(axes[0], workloads, strict=True):
        for r in rows:
            if r.workload == workload and r.seconds:
                ax.plot(range(1, len(r.seconds) + 1), [s * 1000 for s in r.seconds], label=r.name, linewidth=0.9)
        ax.set_title(workload)
        ax.set_xlabel(SPECS[workload].unit)
        ax.set_ylabel(f"ms per {SPECS[workload].unit}")
        ax.set_yscale("log")
        ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
        ax.legend(fontsize="small")
    fig.suptitle("Squall and PySpark: time per iteration as lineages grow")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"plot written to {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.lineage", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a quick check that everything runs")
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=WORKLOADS)
    parser.add_argument("--iterations", type=int, help="PageRank iterations (default 100)")
    parser.add_argument("--passes", type=int, help="ALS passes (default 30)")
    parser.add_argument("--batches", type=int, help="stream batches (default 300)")
    parser.add_argument("--checkpoint-every", type=int, help="the checkpoint row's interval, in iterations (default 10)")
    parser.add_argument("--executors", type=int, default=4)
    parser.add_argument("--no-spark", action="store_true", help="leave out the PySpark rows")
    parser.add_argument("--plot", metavar="PNG", help="draw time per iteration against iteration number (needs matplotlib)")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else Sizes()
    overrides = {"iterations": args.iterations, "passes": args.passes, "batches": args.batches,
                 "checkpoint_every": args.checkpoint_every}
    sizes = dataclasses.replace(sizes, **{k: v for k, v in overrides.items() if v is not None})
    print(machine.header("bench.lineage", argv))
    print(f"pagerank: {sizes.edges:,} edges, {sizes.vertices:,} vertices, {sizes.iterations} iterations; "
          f"als: {sizes.ratings:,} ratings, {sizes.users:,} users x {sizes.items:,} items, {sizes.passes} passes; "
          f"stream: {sizes.batches} batches of {sizes.records:,} records over {sizes.keys:,} keys; "
          f"{sizes.partitions} partitions, {args.executors} executors")
    every = sizes.checkpoint_every
    configurations = [("deltas on", True, 0), ("deltas off", False, 0), (f"deltas off, checkpoint every {every}", False, every)]
    rows: list[Row] = []
    for workload in args.workloads:
        started = time.perf_counter()
        expected = SPECS[workload].reference(sizes)
        print(f"\n{workload}: plain-Python reference in {time.perf_counter() - started:.1f} s", flush=True)
        for name, deltas, interval in configurations:
            rows.append(squall_row(workload, name, deltas, interval, sizes, args.executors, expected))
            print(format_table(rows), flush=True)
        if not args.no_spark:
            from bench.lineage_spark import spark_row

            rows.append(spark_row(workload, sizes, expected))
            print(format_table(rows), flush=True)
    if args.plot:
        plot(rows, args.workloads, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
