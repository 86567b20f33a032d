"""The Yahoo Streaming Benchmark (squall.ysb) on PySpark Structured Streaming, on this machine.

The query, one micro-batch per trigger (processingTime = the batch interval):

- source: Spark's "rate" source, rowsPerSecond = the offered rate, numPartitions = PARTITIONS;
  row `value` is event (partition value % PARTITIONS, index value // PARTITIONS) and its
  `timestamp` the event time;
- events: each row made into squall.ysb's JSON ad event, either by make_event itself in
  a Python UDF (generator "udf", the default) or by Spark SQL expressions that mirror it field
  by field (generator "sql": the same field values; only the number format of event_time in the
  JSON differs);
- from_json with the event schema, keep the views, join the ad to its campaign (a static
  100-campaign table, broadcast), and count per campaign per tumbling event-time window, with
  a watermark of WATERMARK_SECONDS;
- sink: foreachBatch on the driver collects each batch's counts (output mode "update", the
  default: every batch emits the windows it changed; "append": a window is emitted once, when
  the watermark has passed its end).

A window's latency is the wall-clock time its final count reached the driver minus the window's
end. In update mode the final count is the window's last update, known final once the
watermark passes the window's end. A run lasts `seconds` from the first batch with input
reaching the sink (so JVM start, planning, code generation and Python worker start-up are not
in it); the windows that start WARMUP_SECONDS or more after that and end within the run are
measured. After the run the query goes on, at the same rate, until every measured window is
final (for drain_seconds at most). Achieved input rate: Spark's per-batch inputRowsPerSecond
averaged over the batches from the warm-up's end to the stop (see _input_rate).

The rate source hands out rows a whole second at a time: the rows of a second are there when
the second is over, so an event waits up to a second (half a second on average) before any
trigger can see it, whatever the trigger interval.

Spark runs on local[4] as in bench.peers, whose start and full stop (JVM included) are reused;
the query is stopped between jobs so that no task is killed, and no Spark process is left
behind. Without pyspark, or if Spark cannot start, a run returns a "skipped" note.

    python -m bench.ysb_spark --rates 1000 5000 20000 --seconds 30 --window 2
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import threading
import time
import traceback
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from datetime import datetime
from typing import Any

from bench.ysb_workload import LatencyStats, highest_sustained_rate
from squall.ysb import (
    AD_TYPES,
    ADS,
    DEFAULT_WINDOW_SECONDS,
    EVENT_TYPES,
    HASH_MULTIPLIER,
    MASK32,
    OTHER_SALT,
    PAGE_SHIFT,
    PAGES,
    PARTITION_STRIDE,
    PROFILES,
    USERS,
    campaign_table,
    expected_counts,
    make_event,
    parse,
)

PARTITIONS = 4
DEFAULT_RATES = (1000, 5000, 20000)
DEFAULT_SECONDS = 30.0
DEFAULT_BATCH_INTERVAL = 0.1
DEFAULT_LATENCY_BOUND = 5.0
WARMUP_SECONDS = 3.0  # after the first batch with input: Spark catches up with the rows of its start-up
STARTUP_LIMIT_SECONDS = 120.0
JOBS_END_LIMIT_SECONDS = 10.0
PARK_LIMIT_SECONDS = 30.0
WATERMARK_SECONDS = 0.0  # the rate source's event times only grow, batch after batch: no event is late
MIN_DRAIN_SECONDS = 10.0
QUERY_STOP_TIMEOUT_MS = 30_000
POLL_SECONDS = 0.2
GENERATORS = ("udf", "sql")
OUTPUT_MODES = ("update", "append")

EVENT_SCHEMA_DDL = (
    "user_id STRING, page_id STRING, ad_id STRING, ad_type STRING, event_type STRING, event_time DOUBLE, ip_address STRING"
)


def run_spark_ysb(
    rate: int,
    seconds: float = DEFAULT_SECONDS,
    window: float = DEFAULT_WINDOW_SECONDS,
    batch_interval: float = DEFAULT_BATCH_INTERVAL,
    *,
    generator: str = "udf",
    output_mode: str = "update",
    drain_seconds: float | None = None,
) -> dict[str, Any]:
    """Run YSB at `rate` events/s on Spark Structured Streaming, `seconds` from its first batch with
    input, with tumbling windows of `window` seconds and a trigger every `batch_interval` seconds.

    Returns a dict with keys offered, achieved (events/s), p50 and p99 (window latency, seconds),
    windows (how many were measured), and for the record: unfinished (measured windows not final
    when the query stopped; their latency counts as the time until the stop), views (the final
    counts of the measured windows, summed), batches and median_batch_ms (batches with input
    from the warm-up's end to the stop), source_wait (seconds from a window's end until the rate
    source handed out its last rows, averaged), generator, output_mode, batch_interval. If pyspark is missing or Spark
    cannot start: only offered and skipped (why). Bounded in time: Spark's start, at most
    STARTUP_LIMIT_SECONDS to the first batch, `seconds`, at most `drain_seconds` (default
    max(10 s, 2 windows)), and the stop (each of its waits bounded).
    """
    if generator not in GENERATORS:
        raise ValueError(f"unknown generator {generator!r}; expected one of {', '.join(GENERATORS)}")
    if output_mode not in OUTPUT_MODES:
        raise ValueError(f"unknown output mode {output_mode!r}; expected one of {', '.join(OUTPUT_MODES)}")
    drain = max(MIN_DRAIN_SECONDS, 2 * window) if drain_seconds is None else drain_seconds
    with ExitStack() as stack:
        checkpoint = stack.enter_context(tempfile.TemporaryDirectory(prefix="ysb-spark-"))  # removed after Spark stops
        spark_or_skip = _enter_spark(stack)
        if isinstance(spark_or_skip, str):
            return {"offered": rate, "skipped": spark_or_skip}
        spark = spark_or_skip
        return _run_query(spark, rate, seconds, window, batch_interval, generator, output_mode, drain, checkpoint)


def _enter_spark(stack: ExitStack, conf: Mapping[str, str] | None = None) -> Any:
    """A SparkSession from bench.peers' engine (with the Spark settings `conf`), entered on `stack`; or why it could not start."""
    try:
        from bench.peers import _spark_engine

        stack.enter_context(_spark_engine(conf))
        from pyspark.sql import SparkSession
    except ImportError as exc:
        return f"not installed ({exc})"
    except Exception as exc:  # any start-up failure skips the run, as in bench.peers
        return f"cannot start ({type(exc).__name__}: {exc})"
    spark = SparkSession.builder.getOrCreate()
    for key, value in {
        "spark.sql.shuffle.partitions": str(PARTITIONS),  # the aggregation's state partitions (default 200)
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.streaming.numRecentProgressUpdates": "100000",
        "spark.sql.streaming.stopTimeout": str(QUERY_STOP_TIMEOUT_MS),
    }.items():
        spark.conf.set(key, value)
    return spark


class _WindowSink:
    """foreachBatch sink on the driver: the wall-clock time of each window's latest emission.

    It never raises into Spark: a failure is kept in `error` for the driver to raise (Spark would
    otherwise match the whole Python traceback against a regex, StreamExecution's
    isInterruptionException, and can overflow the JVM's stack on it). To stop the query between
    jobs, the driver sets `park`: the next batch, once its counts are in, waits in the sink
    (`parked`) until `resume`, while no job of the query runs.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.last_emitted: dict[int, float] = {}  # window end (epoch microseconds) -> time its latest counts reached the driver
        self.counts: dict[tuple[str, int], int] = {}  # (campaign, window end in microseconds) -> latest count
        self.first_input: float | None = None  # when the first batch with input reached the driver
        self.error: str | None = None
        self.park, self.parked, self.resume = threading.Event(), threading.Event(), threading.Event()

    def __call__(self, batch: Any, batch_id: int) -> None:
        try:
            rows = batch.collect()
        except Exception:  # a batch cancelled by a stop is not an error
            if not self.park.is_set():
                self.error = f"batch {batch_id}: {traceback.format_exc()}"
            return
        now = time.time()
        with self.lock:
            if self.first_input is None and rows:
                self.first_input = now
            for row in rows:
                end = _micros(row["window_end"])
                self.last_emitted[end] = now
                self.counts[(row["campaign_id"], end)] = row["count"]
        if self.park.is_set():
            self.parked.set()
            self.resume.wait(PARK_LIMIT_SECONDS)


def ysb_counts(spark: Any, events: Any, window: float, watermark: float | None = WATERMARK_SECONDS) -> Any:
    """The YSB query on a DataFrame with a string column `event` of JSON events (streaming or not):
    columns campaign_id, window_start, window_end (epoch seconds) and count."""
    from pyspark.sql import functions as F

    campaigns = spark.createDataFrame(sorted(campaign_table().items()), "ad_id STRING, campaign_id STRING")
    views = (
        events.select(F.from_json("event", EVENT_SCHEMA_DDL).alias("e"))
        .select("e.*")
        .where(F.col("event_type") == "view")
        .join(F.broadcast(campaigns), "ad_id")
        .withColumn("event_ts", F.expr("timestamp_micros(CAST(round(event_time * 1000000) AS BIGINT))"))
    )
    if watermark is not None:
        views = views.withWatermark("event_ts", f"{round(watermark * 1000)} milliseconds")
    return (
        views.groupBy(F.window("event_ts", f"{round(window * 1000)} milliseconds").alias("w"), "campaign_id")
        .count()
        .select(
            "campaign_id",
            (F.unix_micros("w.start") / 1e6).alias("window_start"),
            (F.unix_micros("w.end") / 1e6).alias("window_end"),
            "count",
        )
    )


def udf_events(rows: Any) -> Any:
    """Rate-source rows (value, timestamp) -> column `event`, made by make_event in a Python UDF."""
    from pyspark.sql import functions as F

    # Nondeterministic, though it is not: else the optimizer pushes the views filter below the UDF
    # and Python makes every event twice (one BatchEvalPython for the filter, one for the projection).
    make = F.udf(_make_event, "string", useArrow=False).asNondeterministic()
    return rows.select(
        make(
            F.expr(f"CAST(value % {PARTITIONS} AS INT)"), F.expr(f"value div {PARTITIONS}"), F.unix_micros("timestamp") / 1e6
        ).alias("event")
    )


def _make_event(partition, index, event_time):  # type: ignore[no-untyped-def]
    """make_event without type hints, for which PySpark's UDF would warn that it cannot infer an eval type."""
    return make_event(partition, index, event_time)


def _mix32_stages(df: Any, names: Sequence[str]) -> Any:
    """df with each column of `names` (BIGINT in [0, 2**32)) replaced by its mix32, one projection per
    step so that no expression is repeated (the steps' products stay below 2**59: no overflow)."""
    others = [c for c in df.columns if c not in names]
    step = f"((shiftright({{0}}, 16) ^ {{0}}) * {HASH_MULTIPLIER}) & {MASK32}"
    for expression in (step, step, "shiftright({0}, 16) ^ {0}"):
        df = df.selectExpr(*others, *(f"{expression.format(name)} AS {name}" for name in names))
    return df


def sql_events(rows: Any) -> Any:
    """Rate-source rows (value, timestamp) -> column `event`, with Spark SQL expressions mirroring
    squall.ysb.event_fields (the same values; to_json writes event_time in Java's format)."""
    df = rows.selectExpr(
        "unix_micros(timestamp) / 1e6 AS event_time",
        f"value div {PARTITIONS} AS i",
        f"((value div {PARTITIONS}) + (value % {PARTITIONS}) * {PARTITION_STRIDE}) % {PROFILES} AS s",  # profile_of
    )
    df = _mix32_stages(df, ["s"]).selectExpr("i", "event_time", "s", f"s ^ {OTHER_SALT} AS o")
    df = _mix32_stages(df, ["o"])
    ad_types = ", ".join(f"'{t}'" for t in AD_TYPES)
    event_types = ", ".join(f"'{t}'" for t in EVENT_TYPES)
    ip = ", ".join(f"CAST(shiftright(o, {shift}) & 255 AS STRING)" for shift in (24, 16, 8, 0))
    # The JSON goes through a nondeterministic no-op (spark_partition_id() is never negative): an
    # optimizer barrier as for the UDF. Without it the views filter is pushed below the projections
    # with every column substituted, and the hash's repeated references grow the filter to ~650 KB.
    return df.selectExpr(
        "CASE WHEN spark_partition_id() >= 0 THEN to_json(named_struct("
        f"'user_id', format_string('user-%05d', o % {USERS}), "
        f"'page_id', format_string('page-%05d', shiftright(o, {PAGE_SHIFT}) % {PAGES}), "
        f"'ad_id', format_string('ad-%04d', s % {ADS}), "
        f"'ad_type', element_at(array({ad_types}), CAST(shiftright(s, 16) % {len(AD_TYPES)} AS INT) + 1), "
        f"'event_type', element_at(array({event_types}), CAST(i % {len(EVENT_TYPES)} AS INT) + 1), "
        "'event_time', event_time, "
        f"'ip_address', concat_ws('.', {ip}))) END AS event"
    )


EVENT_MAKERS = {"udf": udf_events, "sql": sql_events}


def _run_query(
    spark: Any,
    rate: int,
    seconds: float,
    window: float,
    batch_interval: float,
    generator: str,
    output_mode: str,
    drain: float,
    checkpoint: str,
) -> dict[str, Any]:
    """Start the streaming query, let it run, drain it, stop it, and measure its windows."""
    rows = spark.readStream.format("rate").option("rowsPerSecond", rate).option("numPartitions", PARTITIONS).load()
    counts = ysb_counts(spark, EVENT_MAKERS[generator](rows), window)
    sink = _WindowSink()
    writer = (
        counts.writeStream.outputMode(output_mode)
        .foreachBatch(sink)
        .trigger(processingTime=f"{round(batch_interval * 1000)} milliseconds")
        .option("checkpointLocation", checkpoint)
    )
    query = writer.start()
    try:
        ready = _await_first_input(query, sink, time.time() + STARTUP_LIMIT_SECONDS)
        since, end = ready + WARMUP_SECONDS, ready + seconds
        first = math.ceil(since / window - 1e-9)
        measured = [(first + k + 1) * window for k in range(max(0, math.floor(end / window + 1e-9) - first))]
        _await(query, sink, end)
        final = _await_final(query, sink, measured, output_mode, time.time() + drain)
        stopped = time.time()
        progress = list(query.recentProgress)
    finally:
        _stop_quietly(spark, query, sink)

    latencies, unfinished = [], 0
    keys = {_micros(window_end) for window_end in measured}
    with sink.lock:
        for window_end in measured:
            if window_end in final and _micros(window_end) in sink.last_emitted:
                latencies.append(sink.last_emitted[_micros(window_end)] - window_end)
            else:
                latencies.append(stopped - window_end)
                unfinished += 1
        views = sum(count for (_, window_end), count in sink.counts.items() if window_end in keys)
    achieved, batches, median_batch_ms = _input_rate(progress, since, stopped)  # the drain runs at the same rate
    stats = LatencyStats(latencies)
    source_start = _source_start(progress)
    return {
        "offered": rate,
        "achieved": achieved,
        "p50": stats.p50,
        "p99": stats.p99,
        "windows": len(measured),
        "unfinished": unfinished,
        "views": views,
        "batches": batches,
        "median_batch_ms": median_batch_ms,
        # How long after a window's end its last rows became available (the rate source's whole
        # seconds count from its start): a part of every latency no trigger interval can remove.
        "source_wait": statistics.fmean((source_start - e) % 1.0 for e in measured) if measured else math.nan,
        "generator": generator,
        "output_mode": output_mode,
        "batch_interval": batch_interval,
    }


def _await_first_input(query: Any, sink: _WindowSink, until: float) -> float:
    """Wait for the first batch with input to reach the sink (Spark has planned, compiled and started
    its Python workers); its wall-clock time. TimeoutError after wall-clock `until`."""
    while sink.first_input is None:
        if time.time() >= until:
            raise TimeoutError(f"no batch with input reached the sink within {STARTUP_LIMIT_SECONDS:g} s")
        _poll(query, sink, "before its first batch")
    return sink.first_input


def _await(query: Any, sink: _WindowSink, until: float) -> None:
    """Wait until wall-clock `until`."""
    while (left := until - time.time()) > 0:
        _poll(query, sink, "before the end of the run", min(POLL_SECONDS, left))


def _await_final(query: Any, sink: _WindowSink, window_ends: list[float], output_mode: str, until: float) -> set[float]:
    """Wait (until wall-clock `until` at most) for every window of `window_ends` to be final: emitted
    in append mode; in update mode, passed by the watermark. Returns the final ones."""
    while True:
        if output_mode == "append":
            with sink.lock:
                final = {e for e in window_ends if _micros(e) in sink.last_emitted}
        else:
            watermark = _watermark(query.lastProgress)
            final = {e for e in window_ends if e <= watermark}
        if len(final) == len(window_ends) or time.time() >= until:
            return final
        _poll(query, sink, "before its windows were final")


def _poll(query: Any, sink: _WindowSink, when: str, seconds: float = POLL_SECONDS) -> None:
    """Wait up to `seconds` for the query to end; raise if it did or if the sink failed."""
    # Spark takes whole milliseconds and refuses 0; a failed query raises StreamingQueryException.
    terminated = query.awaitTermination(max(seconds, 0.01))
    if sink.error is not None:
        raise RuntimeError(f"the YSB sink failed {when}: {sink.error}")
    if terminated:
        raise RuntimeError(f"the YSB query stopped {when}")


def _stop_quietly(spark: Any, query: Any, sink: _WindowSink) -> None:
    """Stop the query while its latest batch waits in the sink, so that no job is cancelled.

    Stopping a query mid-job kills the job's tasks and their Python workers, and Spark logs each
    one (ERROR "Python worker exited unexpectedly", the Python daemon's BrokenPipeError, rejected
    status updates when the context stops). So the next batch is parked in the sink, the stop
    begins (the query is marked terminated, so no further batch starts) and only then is the
    batch let go. If no batch parks in time, the query is stopped as it is, with the log off.
    """
    sink.park.set()
    parked = query.isActive and sink.parked.wait(PARK_LIMIT_SECONDS)
    if not parked:
        spark.sparkContext.setLogLevel("OFF")
    stopper = threading.Thread(target=query.stop, name="ysb-query-stop", daemon=True)
    stopper.start()
    until = time.time() + PARK_LIMIT_SECONDS
    while parked and query.isActive and time.time() < until:
        time.sleep(0.01)
    sink.resume.set()
    stopper.join(QUERY_STOP_TIMEOUT_MS / 1000 + PARK_LIMIT_SECONDS)
    tracker, until = spark.sparkContext.statusTracker(), time.time() + JOBS_END_LIMIT_SECONDS
    while tracker.getActiveJobsIds() and time.time() < until:
        time.sleep(POLL_SECONDS)


def _source_start(progress: list[Any]) -> float:
    """When the rate source started (epoch seconds): the earliest event time the query saw, that of
    event 0 (a view, so counted in the watermark column's statistics)."""
    times = [_epoch(r["eventTime"]["min"]) for r in progress if r.get("eventTime", {}).get("min")]
    return min(times) if times else math.nan


def _micros(seconds: float) -> int:
    """Epoch seconds as whole microseconds: the key of a window end, however its float was computed."""
    return round(seconds * 1_000_000)


def _watermark(progress: Any) -> float:
    """The event-time watermark (epoch seconds) a progress report's batch ran with; -inf if none yet."""
    text = (progress or {}).get("eventTime", {}).get("watermark")
    return _epoch(text) if text else -math.inf


def _epoch(iso: str) -> float:
    """Epoch seconds of a Spark progress timestamp such as 2025-01-01T00:00:00.123Z."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _input_rate(progress: list[Any], since: float, until: float) -> tuple[float, int, float]:
    """(events/s, batches, median batch ms) of the batches with input whose trigger started in [since, until).

    Spark's inputRowsPerSecond of a batch is its rows over the time since the previous trigger;
    weighted by those times (zero-row batches included), it is the rows of the batches after the
    first over the time from the first trigger to the last. The rate source hands out whole
    seconds of rows, so the span runs from a batch with input to a batch with input: both ends
    are then as far after a second's rows became available.
    """
    reports = sorted((r for r in progress if since <= _epoch(r["timestamp"]) < until), key=lambda r: r["batchId"])
    with_input = [r for r in reports if r["numInputRows"]]
    durations = sorted(r["batchDuration"] for r in with_input)
    median_ms = float(durations[len(durations) // 2]) if durations else math.nan
    if len(with_input) < 2:
        return sum(r["numInputRows"] for r in with_input) / (until - since), len(with_input), median_ms
    first, last = with_input[0], with_input[-1]
    rows = sum(r["numInputRows"] for r in reports if first["batchId"] < r["batchId"] <= last["batchId"])
    return rows / (_epoch(last["timestamp"]) - _epoch(first["timestamp"])), len(with_input), median_ms


def check_spark_ysb(events: int = 3000, window: float = 2.0) -> str:
    """Check the Spark query and the SQL generator on a static DataFrame against the plain-Python
    reference. Returns "ok", or a "skipped" note; raises AssertionError on a difference."""
    with ExitStack() as stack:
        spark_or_skip = _enter_spark(stack)
        if isinstance(spark_or_skip, str):
            return f"skipped: {spark_or_skip}"
        spark = spark_or_skip
        from pyspark.sql import functions as F

        start_us = 1_700_000_000_000_000
        values = [(v, start_us + v * 1000) for v in range(events)]  # an event a millisecond, as the rate source stamps them
        rows = spark.createDataFrame(values, "value BIGINT, us BIGINT").select("value", F.timestamp_micros("us").alias("timestamp"))
        lines = [make_event(v % PARTITIONS, v // PARTITIONS, us / 1e6) for v, us in values]
        for name, make in EVENT_MAKERS.items():
            made = [parse(row["event"]) for row in make(rows).collect()]
            assert made == [parse(line) for line in lines], f"{name} events differ from make_event"
            got = {(r["campaign_id"], round(r["window_start"], 6)): r["count"] for r in ysb_counts(spark, make(rows), window).collect()}
            expected = {(c, round(s, 6)): n for (c, s), n in expected_counts(lines, window).items()}
            assert got == expected, f"{name}: Spark's counts differ from expected_counts"
    return "ok"


def format_table(results: list[dict[str, Any]]) -> str:
    """A text table: one line per run, or its skipped note."""
    header = (
        f"{'offered/s':>10} {'achieved/s':>10} {'p50 s':>7} {'p99 s':>7} {'windows':>7} {'unfin.':>6} {'batches':>7} "
        f"{'batch ms':>8} {'src wait s':>10}"
    )
    return "\n".join([header, *map(_table_line, results)])


def _table_line(r: dict[str, Any]) -> str:
    if r.get("skipped"):
        return f"{r['offered']:>10} skipped: {r['skipped']}"
    return (
        f"{r['offered']:>10} {r['achieved']:>10.0f} {r['p50']:>7.2f} {r['p99']:>7.2f} {r['windows']:>7} "
        f"{r['unfinished']:>6} {r['batches']:>7} {r['median_batch_ms']:>8.0f} {r['source_wait']:>10.2f}"
    )


def main(argv: list[str] | None = None) -> None:
    """Run YSB on Spark at each offered rate (one Spark per run) and print the table and the highest sustained rate."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", nargs="+", type=int, default=list(DEFAULT_RATES))
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS)
    parser.add_argument("--window", type=float, default=DEFAULT_WINDOW_SECONDS)
    parser.add_argument("--batch-interval", type=float, default=DEFAULT_BATCH_INTERVAL, help="trigger interval, seconds")
    parser.add_argument("--generator", choices=GENERATORS, default="udf")
    parser.add_argument("--output-mode", choices=OUTPUT_MODES, default="update")
    parser.add_argument("--latency-bound", type=float, default=DEFAULT_LATENCY_BOUND, help="p99 window latency bound, seconds")
    parser.add_argument("--all-rates", action="store_true", help="run every rate, not stopping at the first unsustained one")
    parser.add_argument("--check", action="store_true", help="first check the query against the plain-Python reference")
    args = parser.parse_args(argv)
    if args.check:
        print(f"check: {check_spark_ysb(window=args.window)}")

    def run(rate: int) -> dict[str, Any]:
        return run_spark_ysb(
            rate, args.seconds, args.window, args.batch_interval, generator=args.generator, output_mode=args.output_mode
        )

    best, results = highest_sustained_rate(args.rates, run, args.latency_bound, stop_at_first_failure=not args.all_rates)
    print(
        f"spark ysb: generator={args.generator} output={args.output_mode} window={args.window:g}s "
        f"trigger={args.batch_interval * 1000:g}ms seconds={args.seconds:g}"
    )
    print(format_table(results))
    print(f"highest sustained rate (p99 <= {args.latency_bound:g} s): {best if best is not None else 'none'}")


if __name__ == "__main__":
    main()
