"""bench.neptune's mix on PySpark: the YSB stream beside a batch word count, in FAIR scheduler pools.

Spark's answer to latency-critical and batch work in one application is the FAIR scheduler: the
context runs with spark.scheduler.mode=FAIR and an allocation file of pools, and a job goes to the
pool named by its thread's local property spark.scheduler.pool. Here the pools are "latency"
(weight LATENCY_WEIGHT, minShare = all of the context's cores) and "batch" (weight 1, minShare 0).
The streaming query is started from a thread whose pool is "latency" (the query's thread, and so
its jobs, inherit the property), the word count runs in a thread whose pool is "batch". FAIR
chooses which pool's task takes a free task slot (local[4]: four); it never preempts a running
task, so a stream's task waits for a word count task to end. It shares slots, not the CPU: the
word count's running Python workers and the stream's tasks share the cores as the OS schedules them.

Rows (each on a fresh local[4] Spark from bench.peers, its JVM stopped after the row; all three
in FAIR mode with the same pools, so only the concurrency differs):

- "Spark LC alone": the stream of bench.ysb_spark (rate source at `rate` rows/s, events made by
  Spark SQL expressions, generator "sql": far cheaper than the Python UDF, so Spark sustains a
  higher rate), a trigger every `batch_interval`, `window`-second tumbling windows, update mode;
  measured for `lc_seconds` after SPARK_WARMUP_SECONDS from its first batch with input;
- "Spark batch alone": bench.neptune's word count, the same lines made by the same `line()`;
- "Spark both, FAIR pools": the stream, and after the same warm-up the word count beside it; the LC
  figures are those of the stream's batches whose sink finished while the word count ran.

LC latency is per micro-batch, the analogue of Squall's "batch end to sink": for each batch with
input, the wall-clock time its foreachBatch sink finished minus its trigger time (the "timestamp"
of the batch's progress report; the batch takes in the rows available then). Caveats: Spark's rate
source hands out whole seconds of rows, so about one trigger a second has input; and a batch that
runs late delays the next trigger, whose batch then takes in more rows, so a backlog shows as
larger batches (and a lower input rate), not in this latency. The window latency (a window's last
update at the driver minus its end, for the windows ending in the measured span that the watermark
made final before the stop) includes that wait; it is given in the notes.

Checks: the stream's views, summed over all windows after the last reported batch, against the views among
the rows the source handed out (rows 0..n-1, event type by row index: every view counted once);
the word count against bench.neptune's expected_word_count. The pools: Spark's status store
(the data of its UI, kept without the UI) records each stage's pool; every stage of the query's
jobs (job group = the query's runId) must have run in "latency", every word count stage in
"batch", and none in "default".

    python -m bench.neptune --peers [--spark-rate N]      the rows after Squall's
    python -m bench.neptune_spark --rates 5000 10000 20000  LC alone at each rate: the sustained rate
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from functools import partial
from operator import add
from typing import Any, TypeVar

from bench.neptune import WORDS_PER_LINE, Row, expected_word_count, line
from bench.peers import WORKERS
from bench.ysb_spark import (
    PARTITIONS,
    STARTUP_LIMIT_SECONDS,
    _await,
    _await_first_input,
    _enter_spark,
    _epoch,
    _input_rate,
    _poll,
    _stop_quietly,
    _watermark,
    _WindowSink,
    sql_events,
    ysb_counts,
)
from bench.ysb_workload import LatencyStats, highest_sustained_rate
from squall.ysb import EVENT_TYPES

LATENCY_POOL, BATCH_POOL, DEFAULT_POOL = "latency", "batch", "default"
LATENCY_WEIGHT = 1000
POOL_PROPERTY = "spark.scheduler.pool"
WORD_COUNT_GROUP = "neptune-word-count"
# Half the highest rate Spark sustained alone with p99 batch latency <= SUSTAINED_P99_SECONDS in
# `python -m bench.neptune_spark --rates 2000 5000 ...` then `--rates 3000 4000` on a 2-core
# machine shared with other work: 3000/s (p99 0.75 s; 4000/s: 1.14 s, 5000/s: 1.29 s). The LC
# stream runs at about half of what the machine sustains.
DEFAULT_SPARK_RATE = 1_500
SUSTAINED_P99_SECONDS = 1.0
# Longer than bench.neptune's WARMUP_SECONDS for Squall: Spark's first batches with input plan,
# generate code and warm the JVM (on this machine they took 14, 6, 2.5, 2 s ... and settled at
# about a second each only some 30 s after the first), and a row measures the settled stream.
SPARK_WARMUP_SECONDS = 30.0
RETAINED = "1000000"  # jobs and stages the status store keeps (default 1000): all of a row's, for the pool check

ROW_LC, ROW_BATCH, ROW_BOTH = "Spark LC alone", "Spark batch alone", "Spark both, FAIR pools"
TABLE_NAMES = {ROW_LC: "Spark LC alone", ROW_BATCH: "Spark batch alone", ROW_BOTH: "Spark both, FAIR"}

T = TypeVar("T")


def allocation_xml(cores: int) -> str:
    """The FAIR scheduler's allocation file: pool "latency" gets its minShare (all `cores`) before
    any other pool and a weight of LATENCY_WEIGHT beyond it; pool "batch" the cores left over."""
    return (
        '<?xml version="1.0"?>\n<allocations>\n'
        f'  <pool name="{LATENCY_POOL}">\n    <schedulingMode>FIFO</schedulingMode>\n'
        f"    <weight>{LATENCY_WEIGHT}</weight>\n    <minShare>{cores}</minShare>\n  </pool>\n"
        f'  <pool name="{BATCH_POOL}">\n    <schedulingMode>FIFO</schedulingMode>\n'
        "    <weight>1</weight>\n    <minShare>0</minShare>\n  </pool>\n</allocations>\n"
    )


def fair_conf(allocation_file: str) -> dict[str, str]:
    """Spark settings for FAIR pools from `allocation_file`; they take effect only when the context starts."""
    return {
        "spark.scheduler.mode": "FAIR",
        "spark.scheduler.allocation.file": allocation_file,
        "spark.ui.retainedJobs": RETAINED,
        "spark.ui.retainedStages": RETAINED,
    }


def batch_latencies(progress: Iterable[Mapping[str, Any]], sink_done: Mapping[int, float], since: float, until: float) -> list[float]:
    """Per micro-batch with input whose sink finished in [since, until] (wall clock, epoch seconds), in
    batch order: the time its sink finished minus its trigger time (its progress report's timestamp)."""
    latencies = []
    for report in sorted(progress, key=lambda r: r["batchId"]):
        done = sink_done.get(report["batchId"])
        if report["numInputRows"] and done is not None and since <= done <= until:
            latencies.append(done - _epoch(report["timestamp"]))
    return latencies


def window_latencies(last_emitted: Mapping[int, float], watermark: float, since: float, until: float) -> list[float]:
    """Per window (keyed by its end in epoch microseconds) that ended in [since, until] and that the
    `watermark` (epoch seconds) made final: its last update at the driver minus its end."""
    ends = sorted(end for end in last_emitted if since <= end / 1e6 <= until and end / 1e6 <= watermark)
    return [last_emitted[end] - end / 1e6 for end in ends]


def expected_views(rows: int) -> int:
    """The views among the rate source's rows 0..rows-1: row v is event v // PARTITIONS of its
    partition, and event i's type is EVENT_TYPES[i % len(EVENT_TYPES)] (squall.ysb, as sql_events mirrors it)."""
    view, kinds = EVENT_TYPES.index("view"), len(EVENT_TYPES)
    whole, rest = divmod(rows, PARTITIONS)  # events 0..whole-1 have all PARTITIONS rows; event `whole` has `rest`
    view_events = max(0, (whole - view + kinds - 1) // kinds)
    return PARTITIONS * view_events + (rest if whole % kinds == view else 0)


def views_exact(progress: Iterable[Mapping[str, Any]], views_after: Mapping[int, int]) -> bool | None:
    """Whether the views counted after the last reported batch the sink saw equal expected_views of
    the rows of the batches up to it; None if no batch was both reported and seen by the sink."""
    reports = sorted(progress, key=lambda r: r["batchId"])
    seen = [r["batchId"] for r in reports if r["batchId"] in views_after]
    if not seen:
        return None
    rows = sum(r["numInputRows"] for r in reports if r["batchId"] <= seen[-1])
    return views_after[seen[-1]] == expected_views(rows)


def pool_check(stage_pools: Mapping[int, str], work_stages: Mapping[str, tuple[str, Iterable[int]]]) -> tuple[bool, str]:
    """Whether each work's stages ran in its pool, and none in the default pool.

    `stage_pools`: stage id -> the pool it ran in (stages that never ran, e.g. skipped ones, are
    absent); `work_stages`: name -> (its pool, the stage ids of its jobs). Returns (all as
    expected, a one-line account)."""
    ok, parts = True, []
    for name, (pool, stages) in work_stages.items():
        ran = [stage_pools[s] for s in set(stages) if s in stage_pools]
        elsewhere = len([p for p in ran if p != pool])
        ok = ok and bool(ran) and not elsewhere
        parts.append(f"{name} {len(ran) - elsewhere}/{len(ran)} stages in {pool}")
    in_default = len([p for p in stage_pools.values() if p == DEFAULT_POOL])
    parts.append(f"{in_default} in {DEFAULT_POOL}")
    return ok and not in_default, ", ".join(parts)


class _BatchSink(_WindowSink):
    """bench.ysb_spark's window sink that also keeps, per batch id, when the sink finished and the
    views counted so far (the latest count of every campaign and window, summed)."""

    def __init__(self) -> None:
        super().__init__()
        self.done: dict[int, float] = {}
        self.views_after: dict[int, int] = {}

    def __call__(self, batch: Any, batch_id: int) -> None:
        super().__call__(batch, batch_id)
        now = time.time()
        with self.lock:
            self.done[batch_id] = now
            self.views_after[batch_id] = sum(self.counts.values())


def _in_pool(sc: Any, pool: str, work: Callable[[], T]) -> T:
    """Run `work` with this thread's jobs in FAIR pool `pool` (a thread-local property; PySpark pins
    each Python thread to a JVM thread, and threads started from it inherit it)."""
    sc.setLocalProperty(POOL_PROPERTY, pool)
    return work()


def _word_count(sc: Any, lines: int, partitions: int) -> tuple[dict[str, int], float, float]:
    """bench.neptune's word count as one Spark job in group WORD_COUNT_GROUP: (counts, start, end wall clock)."""
    sc.setJobGroup(WORD_COUNT_GROUP, "word count")
    started = time.time()
    pairs = (
        sc.range(lines, numSlices=partitions).map(line).flatMap(str.split).map(lambda w: (w, 1)).reduceByKey(add, partitions // 2)
    )
    counts = dict(pairs.collect())
    return counts, started, time.time()


def _stage_pools(sc: Any) -> dict[int, str]:
    """Stage id -> the pool it ran in, for every stage that was submitted, from Spark's status store
    (the data of its UI and REST API, kept without the UI). A pool's own record lists only its
    active stages, so each stage's record is read."""
    store, to_java = sc._jsc.sc().statusStore(), sc._jvm.scala.jdk.javaapi.CollectionConverters
    no_quantiles = sc._gateway.new_array(sc._jvm.double, 0)
    stages = to_java.asJava(store.stageList(None, False, False, no_quantiles, None))
    return {int(stage.stageId()): str(stage.schedulingPool()) for stage in stages if str(stage.status()) != "SKIPPED"}


def _group_stages(sc: Any, group: str) -> list[int]:
    tracker = sc.statusTracker()
    infos = [tracker.getJobInfo(job) for job in tracker.getJobIdsForGroup(group)]
    return [stage for info in infos if info is not None for stage in info.stageIds]


def run_row(
    name: str,
    rate: int,
    words: int,
    partitions: int,
    batch_interval: float,
    window: float,
    lc_seconds: float,
    expected: Mapping[str, int] | None,
    *,
    stream: bool,
    batch: bool,
    warmup: float = SPARK_WARMUP_SECONDS,
) -> dict[str, Any]:
    """One row on a fresh FAIR-mode Spark, the stream measured from `warmup` seconds after its
    first batch with input; see the module docstring. A dict with name, rate (None
    without the stream), lc_latencies and window_latencies (seconds), batch_seconds, lc_correct,
    batch_correct, pools_ok (None where not checked), achieved (events/s) and notes; or, if Spark
    cannot start, only name, rate and notes "skipped: why"."""
    row: dict[str, Any] = {"name": name, "rate": rate if stream else None, "lc_latencies": [], "window_latencies": [],
                           "batch_seconds": None, "lc_correct": None, "batch_correct": None, "pools_ok": None, "achieved": None}
    with ExitStack() as stack:
        workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="neptune-spark-"))  # removed after Spark stops
        allocation = os.path.join(workdir, "pools.xml")
        with open(allocation, "w") as out:
            out.write(allocation_xml(WORKERS))
        spark = _enter_spark(stack, fair_conf(allocation))
        if isinstance(spark, str):
            return {**row, "notes": f"skipped: {spark}"}
        sc = spark.sparkContext
        threads = stack.enter_context(ThreadPoolExecutor(max_workers=2, thread_name_prefix="neptune-spark"))
        query, sink = None, _BatchSink()
        if stream:
            rows = spark.readStream.format("rate").option("rowsPerSecond", rate).option("numPartitions", PARTITIONS).load()
            writer = (
                ysb_counts(spark, sql_events(rows), window).writeStream.outputMode("update").foreachBatch(sink)
                .trigger(processingTime=f"{round(batch_interval * 1000)} milliseconds")
                .option("checkpointLocation", os.path.join(workdir, "checkpoint"))
            )
            query = threads.submit(_in_pool, sc, LATENCY_POOL, writer.start).result(STARTUP_LIMIT_SECONDS)
        try:
            if query is not None:
                since = _await_first_input(query, sink, time.time() + STARTUP_LIMIT_SECONDS) + warmup
                _await(query, sink, since)
            else:
                since = time.time()
            if batch:
                lines = words // WORDS_PER_LINE
                counts, since, until = _wait(threads.submit(_in_pool, sc, BATCH_POOL, lambda: _word_count(sc, lines, partitions)),
                                             query, sink)
                row["batch_seconds"] = until - since
                row["batch_correct"] = counts == (expected if expected is not None else expected_word_count(lines))
            else:
                until = since + lc_seconds
                _await(query, sink, until)
        finally:
            if query is not None:
                _stop_quietly(spark, query, sink)
        work: dict[str, tuple[str, list[int]]] = {}
        if query is not None:
            progress = [dict(p) for p in query.recentProgress]
            with sink.lock:
                row["lc_latencies"] = batch_latencies(progress, sink.done, since, until)
                row["window_latencies"] = window_latencies(sink.last_emitted, _watermark(progress[-1] if progress else None),
                                                           since, until)
                row["lc_correct"] = views_exact(progress, sink.views_after)
            row["achieved"] = _input_rate(progress, since, until)[0]
            work["stream"] = (LATENCY_POOL, _group_stages(sc, str(query.runId)))
        if batch:
            work["word count"] = (BATCH_POOL, _group_stages(sc, WORD_COUNT_GROUP))
        row["pools_ok"], pools = pool_check(_stage_pools(sc), work)
    return {**row, "notes": _notes(row, pools)}


def _wait(future: Future[T], query: Any, sink: _BatchSink) -> T:
    """The word count's result; meanwhile, a failure of the stream (if any) is raised."""
    while query is not None and not future.done():
        _poll(query, sink, "while the word count ran")
    return future.result()


def _notes(row: Mapping[str, Any], pools: str) -> str:
    parts = []
    if row["rate"] is not None:
        lc, windows = LatencyStats(row["lc_latencies"]), LatencyStats(row["window_latencies"])
        parts.append(f"offered {row['rate']:,}/s, taken in {row['achieved']:,.0f}/s; {len(row['lc_latencies'])} batches with input "
                     f"measured, p50/p99 {lc.p50:.2f}/{lc.p99:.2f} s; window latency p50/p99 {windows.p50:.2f}/{windows.p99:.2f} s "
                     f"({len(row['window_latencies'])} windows)")
    parts.append(f"pools {'as set' if row['pools_ok'] else 'NOT as set'}: {pools}")
    return "; ".join(parts)


def run_spark_mix(
    rate: int, words: int, partitions: int, batch_interval: float, window: float, lc_seconds: float,
    *, expected: Mapping[str, int] | None = None,
) -> list[dict[str, Any]]:
    """The three rows (ROW_LC, ROW_BATCH, ROW_BOTH), one fresh Spark each; `expected`: the word
    count's expected counts, if already known. If Spark cannot start, all three are skipped."""
    row = partial(run_row, rate=rate, words=words, partitions=partitions, batch_interval=batch_interval, window=window,
                  lc_seconds=lc_seconds, expected=expected)
    first = row(ROW_LC, stream=True, batch=False)
    if first["notes"].startswith("skipped"):
        return [first, *({**first, "name": name, "rate": None} for name in (ROW_BATCH, ROW_BOTH))]
    return [first, row(ROW_BATCH, stream=False, batch=True), row(ROW_BOTH, stream=True, batch=True)]


def table_name(result: Mapping[str, Any]) -> str:
    """The row's name in bench.neptune's table, with its offered rate: "Spark both, FAIR (20k/s)"."""
    name = TABLE_NAMES[result["name"]]
    return name if result["rate"] is None else f"{name} ({result['rate'] / 1000:g}k/s)"


def neptune_rows(args: argparse.Namespace, expected: Mapping[str, int]) -> list[Row]:
    """bench.neptune --peers: the Spark rows for its table (their notes printed as they come), at
    args.spark_rate (DEFAULT_SPARK_RATE if None)."""
    rate = args.spark_rate or DEFAULT_SPARK_RATE
    results = run_spark_mix(rate, args.words, args.partitions, args.batch_interval, args.window, args.lc_seconds, expected=expected)
    for r in results:
        print(f"{table_name(r)}: {r['notes']}", flush=True)
    return [Row(table_name(r), lc_latencies=r["lc_latencies"], lc_correct=r["lc_correct"], batch_seconds=r["batch_seconds"],
                batch_correct=r["batch_correct"]) for r in results]


def self_check() -> str:
    """On a machine with pyspark: Spark's Python workers run this interpreter (shipped functions
    import squall), and a small mix lands in its pools with exact outputs. "ok", or why not."""
    from bench.ysb_spark import _enter_spark

    with ExitStack() as stack:
        spark = _enter_spark(stack)
        if isinstance(spark, str):
            return f"skipped: {spark}"
        workers = spark.sparkContext.parallelize([0], 1).map(lambda _: sys.executable).collect()
        if workers != [sys.executable]:
            return f"Spark's Python workers run {workers}, not {sys.executable}"
    row = run_row(ROW_BOTH, 1000, 100_000, 4, 0.1, 2.0, 1.0, None, stream=True, batch=True, warmup=2.0)
    if not (row["pools_ok"] and row["batch_correct"] and row["lc_correct"]):
        return f"the small mix: {row['notes']}"
    return "ok"


def main(argv: list[str] | None = None) -> None:
    """The sustained-rate probe: "Spark LC alone" at each rate, lowest first, until one is not
    sustained (input rate >= 95% of offered and p99 batch latency <= SUSTAINED_P99_SECONDS)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--rates", nargs="+", type=int, default=[5000, 10000, 20000, 40000])
    parser.add_argument("--lc-seconds", type=float, default=20.0)
    parser.add_argument("--batch-interval", type=float, default=0.1)
    parser.add_argument("--window", type=float, default=2.0)
    parser.add_argument("--warmup", type=float, default=SPARK_WARMUP_SECONDS, help="seconds from the first batch with input")
    parser.add_argument("--check", action="store_true", help="first check the Spark peer itself (self_check)")
    args = parser.parse_args(argv)
    if args.check:
        print(f"check: {self_check()}", flush=True)

    def run(rate: int) -> dict[str, Any]:
        r = run_row(ROW_LC, rate, 0, 0, args.batch_interval, args.window, args.lc_seconds, None, stream=True, batch=False,
                    warmup=args.warmup)
        print(f"{rate:>8,}/s: {r['notes']}", flush=True)
        if r["notes"].startswith("skipped"):
            return {"offered": rate, "skipped": r["notes"]}
        return {"offered": rate, "achieved": r["achieved"], "p99": LatencyStats(r["lc_latencies"]).p99}

    best, _ = highest_sustained_rate(args.rates, run, SUSTAINED_P99_SECONDS)
    print(f"highest sustained: {best if best is not None else 'none'}; half of it: {best // 2 if best else math.nan}")


if __name__ == "__main__":
    main()
