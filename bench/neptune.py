"""Latency-critical and batch work on one cluster: a stream beside a CPU-heavy batch job.

The latency-critical (LC) work is the YSB stream (squall.ysb) at a fixed offered rate with 100 ms
batches, run with priority "latency" (a stream's default). The batch work is a word count over
`--words` words (lines made deterministically from their index, flat-mapped to words, counted
with reduce_by_key), run with collect(), priority "batch" (its default). Rows:

- LC alone: the stream for `--lc-seconds`;
- batch alone: the word count, on an idle cluster;
- both, under each preemption mode (Settings.preemption: suspend, kill, none): the stream runs,
  and after a warm-up the word count starts beside it; the LC figures are those of the stream's
  batches that ended while the word count ran.

With `--batch-lanes process thread`, each mode runs once per batch lane (Settings.batch_lane:
batch tasks in the executor's batch process, or on a thread of the executor). With `--peers`,
the same mix then runs on PySpark with FAIR scheduler pools (bench.neptune_spark: the stream in
a "latency" pool, the word count in a "batch" pool) at the stream rate Spark sustains
(`--spark-rate`), which the row names.

Each row starts a fresh local cluster (4 executors by default). Columns: the stream's p50/p99
batch latency (batch end to sink), the word count's completion time, and from the executors'
counters the suspension latency p50/p99 (a batch task told to suspend until it is stopped; all
executors' latencies pooled, shown as the upper bound of the histogram bucket the quantile falls
in, e.g. <=0.05 ms), suspensions per second
of the word count's run, and the seconds of batch work thrown away by kill. Outputs are checked:
every window count against plain Python over the same events, the word counts against a plain
Python count.

    python -m bench.neptune [--rate 100000] [--words 20000000] [--modes suspend kill none]
                            [--batch-lanes process thread] [--peers [--spark-rate 1500]] [--plot neptune.png]
"""

from __future__ import annotations

import argparse
import operator
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from squall.common.quantiles import quantile
from squall.services.executor.preemption import SUSPENSION_BUCKETS_MS

from bench import machine
from bench.plotting import pyplot
from squall import LocalCluster, Settings
from squall.health import tracked
from squall.windows import WindowResult
from squall.ysb import verify, ysb_stream

VOCABULARY = [f"word{k:05d}" for k in range(20_000)]
WORDS_PER_LINE = 10
WARMUP_SECONDS = 5.0  # the stream runs alone this long before the word count starts


def line(index: int) -> str:
    """Line `index` of the word count's input: WORDS_PER_LINE words drawn from VOCABULARY by a hash."""
    words = []
    x = index * 2654435761 & 0xFFFFFFFF
    for _ in range(WORDS_PER_LINE):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        words.append(VOCABULARY[x % len(VOCABULARY)])
    return " ".join(words)


def expected_word_count(lines: int) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for index in range(lines):
        counts.update(line(index).split())
    return dict(counts)


def word_count(ctx: Any, lines: int, partitions: int) -> dict[str, int]:
    """The batch job: collect() runs with priority "batch" unless told otherwise."""
    pairs = (
        ctx.range(lines, partitions=partitions)
        .map(line)
        .flat_map(str.split)
        .map(lambda word: (word, 1))
        .reduce_by_key(operator.add, partitions=partitions // 2)
    )
    return dict(pairs.collect())


@dataclass
class Row:
    name: str
    lc_latencies: list[float] = field(default_factory=list)  # seconds, one per batch measured
    lc_correct: bool | None = None
    batch_seconds: float | None = None
    batch_correct: bool | None = None
    counters: list[dict[str, float]] = field(default_factory=list)  # one per executor
    series: list[tuple[float, float]] = field(default_factory=list)  # (seconds since start, latency) for the plot

    def suspension(self, q: float) -> float | None:
        """The q-quantile of every executor's suspension latencies pooled, in ms: the upper bound of
        the executors' histogram bucket (SUSPENSION_BUCKETS_MS) it falls in."""
        total = self.total("suspension_count")
        if not total:
            return None
        for bound in SUSPENSION_BUCKETS_MS:
            if self.total(f"suspension_le_{bound:g}ms") >= q * total:
                return bound
        return max(c.get("suspension_max_ms", 0.0) for c in self.counters)

    def suspensions_within(self, bound_ms: float) -> float | None:
        """The share of all suspensions that took at most `bound_ms` (a bucket bound)."""
        total = self.total("suspension_count")
        return self.total(f"suspension_le_{bound_ms:g}ms") / total if total else None

    def total(self, name: str) -> float:
        return sum(c.get(name, 0.0) for c in self.counters)


def executor_counters(cluster: LocalCluster, ctx: Any) -> list[dict[str, float]]:
    return [tracked(info.data_address, cluster.settings).counters for info in ctx.status().executors]


def run_row(name: str, settings: Settings, args: argparse.Namespace, expected: dict[str, int] | None,
            stream: bool, batch: bool) -> Row:
    row = Row(name)
    with LocalCluster(executors=args.executors, settings=settings) as cluster, cluster.connect() as ctx:
        results: list[WindowResult] = []
        running = ysb_stream(ctx, args.rate, args.window, args.batch_interval, results) if stream else None
        if running is not None:
            time.sleep(WARMUP_SECONDS)
            first_batch = running.metrics_state.batches
        started = time.monotonic()
        if batch:
            counts = word_count(ctx, args.words // WORDS_PER_LINE, args.partitions)
            row.batch_seconds = time.monotonic() - started
            row.batch_correct = counts == expected
        else:
            time.sleep(args.lc_seconds)
        if running is not None:
            state = running.metrics_state
            last_batch = state.batches
            running.stop()
            latencies = list(state.latencies)
            offset = state.first_latency_batch
            row.lc_latencies = latencies[max(0, first_batch - offset): max(0, last_batch - offset)]
            row.series = [((offset + i) * args.batch_interval, lat) for i, lat in enumerate(latencies)]
            row.lc_correct = verify(results, state.started, args.rate, args.batch_interval, state.batches, args.window)
        row.counters = executor_counters(cluster, ctx)
    return row


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f}" if value < 10 else f"{value * 1000:.0f}"


def format_table(rows: list[Row]) -> str:
    head = (f"{'row':<26} {'LC p50 ms':>9} {'LC p99 ms':>9} {'batch s':>8} {'susp p50 ms':>11} {'susp p99 ms':>11} "
            f"{'susp/s':>7} {'thrown s':>8} {'outputs exact':>13}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lc = r.lc_latencies
        p50 = ms(quantile(lc, 0.5)) if lc else "-"
        p99 = ms(quantile(lc, 0.99)) if lc else "-"
        batch = f"{r.batch_seconds:.1f}" if r.batch_seconds is not None else "-"
        s50, s99 = r.suspension(0.5), r.suspension(0.99)
        per_second = f"{r.total('suspensions') / r.batch_seconds:.1f}" if r.batch_seconds and r.counters else "-"
        thrown = f"{r.total('thrown_away_seconds'):.1f}" if r.batch_seconds else "-"
        checks = [c for c in (r.lc_correct, r.batch_correct) if c is not None]
        exact = "yes" if checks and all(checks) else "NO" if checks else "-"
        lines.append(f"{r.name:<26} {p50:>9} {p99:>9} {batch:>8} {'-' if s50 is None else f'<={s50:g}':>11} "
                     f"{'-' if s99 is None else f'<={s99:g}':>11} {per_second:>7} {thrown:>8} {exact:>13}")
    return "\n".join(lines)


def plot(rows: list[Row], path: str) -> None:
    plt = pyplot(path)
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(9, 5))
    for r in rows:
        if r.series:
            ax.plot([t for t, _ in r.series], [lat * 1000 for _, lat in r.series], label=r.name, linewidth=0.8)
    ax.set_xlabel("seconds since the stream started (the word count starts after the warm-up)")
    ax.set_ylabel("LC batch latency, ms")
    ax.set_yscale("log")
    ax.set_title("Squall: a stream's batch latency beside a batch job, by preemption mode")
    ax.legend(fontsize="small")
    fig.savefig(path, dpi=100)
    print(f"plot written to {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.neptune", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=100_000, help="the stream's offered events per second")
    parser.add_argument("--batch-interval", type=float, default=0.1)
    parser.add_argument("--window", type=float, default=2.0, help="the stream's window, seconds")
    parser.add_argument("--lc-seconds", type=float, default=30.0, help="how long the LC-alone row runs")
    parser.add_argument("--words", type=int, default=20_000_000, help="words the batch job counts")
    parser.add_argument("--partitions", type=int, default=16, help="the word count's map partitions (reduce: half)")
    parser.add_argument("--executors", type=int, default=4)
    parser.add_argument("--modes", nargs="+", default=["suspend", "kill", "none"], choices=["suspend", "kill", "none"])
    parser.add_argument("--batch-lanes", nargs="+", default=["process"], choices=["process", "thread"],
                        help="where executors run batch tasks (Settings.batch_lane): one row per mode and lane")
    parser.add_argument("--plot", metavar="PNG", help="draw the LC batch latency over time per row (needs matplotlib)")
    parser.add_argument("--peers", action="store_true", help="then the same mix on PySpark in FAIR pools (bench.neptune_spark)")
    parser.add_argument("--spark-rate", type=int, help="the Spark stream's offered events per second (default: bench.neptune_spark's)")
    args = parser.parse_args(argv)
    print(machine.header("bench.neptune", argv))
    print(f"LC: YSB at {args.rate:,} events/s, {args.batch_interval * 1000:.0f} ms batches, {args.window:g} s windows; "
          f"batch: word count of {args.words:,} words in {args.partitions} partitions; {args.executors} executors")
    expected = expected_word_count(args.words // WORDS_PER_LINE)
    base = Settings.from_env(log_level="warning", metrics_window=100_000)
    rows = [run_row("LC alone", base, args, expected, stream=True, batch=False)]
    print(format_table(rows), flush=True)
    rows.append(run_row("batch alone", base, args, expected, stream=False, batch=True))
    for mode in args.modes:
        for lane in args.batch_lanes:
            name = f"both, {mode}" + (f" ({lane})" if len(args.batch_lanes) > 1 else "")
            rows.append(run_row(name, base.replace(preemption=mode, batch_lane=lane), args, expected, stream=True, batch=True))
            print(f"\n{format_table(rows)}", flush=True)
    alone = rows[0].lc_latencies
    for r in rows[2:]:
        if alone and r.lc_latencies:
            print(f"{r.name}: LC p99 {quantile(r.lc_latencies, 0.99) / quantile(alone, 0.99):.2f}x alone", end="")
            none = next((x for x in rows if x.name.startswith("both, none")), None)
            if none is not None and none.batch_seconds and r.batch_seconds:
                print(f"; batch job {r.batch_seconds / none.batch_seconds:.2f}x its time under none", end="")
            within = r.suspensions_within(1.0)
            if within is not None:
                print(f"; {r.total('suspension_count'):.0f} suspensions, {within:.2%} within 1 ms, "
                      f"slowest {max(c.get('suspension_max_ms', 0.0) for c in r.counters):.2f} ms", end="")
            print()
    if args.peers:  # Spark's rows after Squall's, at their own rate (in the row name)
        from bench.neptune_spark import neptune_rows

        rows += neptune_rows(args, expected)
        print(f"\n{format_table(rows)}", flush=True)
    if args.plot:
        plot(rows, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
