"""The Yahoo Streaming Benchmark (squall.ysb) on Bytewax, on this machine.

The dataflow (Bytewax 0.21, in the `bench` extra: pip install -e '.[bench]'):

- source: a DynamicSource whose worker w generates the YSB partitions p with p % workers == w.
  Event g of the stream happens at start + g / rate and is make_event(g % PARTITIONS,
  g // PARTITIONS, that time), as squall.sources.rate deals them. Each poll emits, as one batch,
  every event of the worker's partitions that is due by the wall clock; polls are POLL_SECONDS
  (10 ms) apart, so the source adds at most 10 ms to an event's wait and is not what limits latency;
- flat_map_batch: parse each event (squall.ysb.parse), keep the views (is_view), and key it by
  its ad's campaign (the campaign_table() dict), with its event time as a UTC datetime;
- fold_window: count per campaign per tumbling window of `window` seconds aligned to the epoch,
  on an EventClock. Bytewax's watermark is kept per key: the largest event time seen minus
  `lateness`, plus the system time since. Every campaign gets events from all four partitions,
  whose workers run at different lags, so an event lagging more than `lateness` behind
  the campaign's latest is late and dropped (counted as "late"). A window of a campaign closes
  once its watermark passes the window's end: `lateness` after the end plus the lag of the
  campaign's latest event;
- sink: each worker hands its batch of closed (campaign, window, count) to the benchmark process
  over a multiprocessing queue; the benchmark process stamps each on receipt.

Four Bytewax workers, as Squall's four executors: by default one process (spawned, run by
bytewax.testing.cluster_main) of four worker threads. Across processes every item exchanged is
pickled and sent over loopback TCP; in smoke runs on this 2-core machine four processes of one
worker fell behind (p99 over 0.3 s, many late events) at 40,000 events/s where one process of four
threads kept up (0.07 s), the GIL notwithstanding. `processes` and `workers_per_process` choose
otherwise.

Bytewax has no micro-batches: window results leave as windows close, whatever the epoch, so
`batch_interval` is only recorded. Bytewax's epoch is its unit of progress and snapshots; with
no recovery configured nothing needs it, yet each epoch's close stalls the workers (up to about
1 s at 10,000 events/s on four processes with Bytewax's default 10 s epochs; lags of 0.1 s every
epoch with 100 ms epochs). So a run has one epoch (EPOCH_SECONDS), and neither the epoch nor the
10 ms poll is what limits latency; the watermark's `lateness` (100 ms by default, half the
200 ms latency bound) is, and it is what Bytewax needs to count events from four partitions exactly.

A window is final once all CAMPAIGNS campaigns have emitted their count for it; its latency is
the time the last one reached the benchmark process minus the window's end. A run lasts `seconds`
from the first batch the workers parse (so process start and imports are not in it); the windows
that start WARMUP_SECONDS or more after that and end within the run are measured. After the run
the sources go on, at the same rate, until every measured window is final (for drain_seconds at
most); then they stop, the dataflow ends and its processes exit (any left after EXIT_LIMIT_SECONDS
are killed). Achieved input rate: events parsed per second from the warm-up's end to the stop,
from each process's running count, less the events dropped as late in that time. A measured
window not final at the stop counts with the time until the stop. check_bytewax_ysb runs a
finite stream to its end and compares every count with squall.ysb.expected_counts.

Without bytewax, or if its processes cannot start, a run returns a "skipped" note.

    python -m bench.ysb_bytewax --rates 1000 5000 20000 --seconds 30 --window 2 [--check]
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import queue as queue_module
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from bench.ysb_workload import LatencyStats, highest_sustained_rate
from squall.ysb import (
    CAMPAIGNS,
    DEFAULT_WINDOW_SECONDS,
    PARTITIONS,
    campaign_table,
    expected_counts,
    is_view,
    make_event,
    parse,
    window_start,
)

DEFAULT_RATES = (1000, 5000, 20000)
DEFAULT_SECONDS = 30.0
DEFAULT_BATCH_INTERVAL = 0.1
DEFAULT_LATENCY_BOUND = 0.2
DEFAULT_PROCESSES = 1
DEFAULT_WORKERS_PER_PROCESS = 4
DEFAULT_LATENESS = 0.1  # seconds a campaign's watermark trails its latest event: the partitions' lag skew it tolerates
EPOCH_SECONDS = 3600.0  # longer than any run: one epoch (see the module's docstring)
CHECK_LATENESS = 1.0  # the correctness check tolerates a busy machine's skew: no event may be dropped there
POLL_SECONDS = 0.01  # between two polls of a source partition
PROGRESS_SECONDS = 0.1  # a worker reports its count of parsed events at most this often
WARMUP_SECONDS = 3.0  # after the first parsed batch: the workers catch up with the events of their start-up
STARTUP_LIMIT_SECONDS = 60.0
MIN_DRAIN_SECONDS = 10.0
EXIT_LIMIT_SECONDS = 15.0  # for the dataflow to end after its sources stop; then its processes are killed
RECEIVE_SECONDS = 0.05
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True)
class FlowParams:
    """What every worker process needs to build the same dataflow."""

    rate: int
    window: float
    lateness: float
    workers_per_process: int
    limit: int | None  # events in all before the sources end; None: until the benchmark process says stop


def event_time(start: float, g: int, rate: int) -> float:
    """When event g of the stream happens: start + g / rate (as squall.sources.rate stamps it)."""
    return start + g / rate


def window_timestamp(seconds: float, window: float) -> datetime:
    """An event time as Bytewax's UTC timestamp, to the microsecond but kept inside the window
    squall.ysb.window_start puts it in (rounding to microseconds could move an event lying within
    half a microsecond of a window's end into the next window)."""
    start_seconds = window_start(seconds, window)
    start = EPOCH + timedelta(seconds=start_seconds)
    offset = timedelta(seconds=seconds - start_seconds)
    return start + min(max(offset, timedelta(0)), timedelta(seconds=window) - MICROSECOND)


# ---------------------------------------------------------------------------------------------
# In the worker processes


def _build_flow(params: FlowParams, proc_id: int, results: Any, start: Any, stop: Any) -> Any:
    """The YSB dataflow of one worker process; `results` is the queue to the benchmark process,
    `start` the shared time of event 0 (0 until every worker's source is up), `stop` the event
    that ends the sources."""
    import bytewax.operators as op
    from bytewax.dataflow import Dataflow
    from bytewax.inputs import DynamicSource, StatelessSourcePartition
    from bytewax.operators.windowing import EventClock, TumblingWindower, fold_window
    from bytewax.outputs import DynamicSink, StatelessSinkPartition

    class RatePartition(StatelessSourcePartition[str]):
        """The YSB partitions of one worker, paced by the wall clock."""

        def __init__(self, worker_index: int, partitions: list[int]) -> None:
            self.worker_index = worker_index
            self.partitions = partitions
            self.next_index = {p: 0 for p in partitions}  # next event index of each partition
            self.awake = datetime.now(timezone.utc)
            self.reported = self.started = False
            self.start = 0.0

        def next_batch(self) -> list[str]:
            now = time.time()
            self.awake = datetime.fromtimestamp(now + POLL_SECONDS, timezone.utc)
            if not self.started:
                # The stream starts once every worker's source is up: a worker whose start-up took
                # longer would otherwise emit its first second of events late for the others' watermarks.
                if not self.reported:
                    results.put(("ready", proc_id, self.worker_index))
                    self.reported = True
                if start.value == 0.0:
                    return []
                self.start, self.started = start.value, True
            due = math.floor((now - self.start) * params.rate) + 1  # events 0 .. due-1 have happened
            if params.limit is not None:
                due = min(due, params.limit)
                if all(PARTITIONS * i + p >= params.limit for p, i in self.next_index.items()):
                    raise StopIteration()
            if stop.is_set():
                raise StopIteration()
            batch = []
            for p in self.partitions:
                i = self.next_index[p]
                while (g := PARTITIONS * i + p) < due:
                    batch.append(make_event(p, i, event_time(self.start, g, params.rate)))
                    i += 1
                self.next_index[p] = i
            return batch

        def next_awake(self) -> datetime:
            return self.awake

    class RateSource(DynamicSource[str]):
        def build(self, step_id: str, worker_index: int, worker_count: int) -> RatePartition:
            return RatePartition(worker_index, [p for p in range(PARTITIONS) if p % worker_count == worker_index])

    class QueuePartition(StatelessSinkPartition[Any]):
        def __init__(self, kind: str) -> None:
            self.kind = kind

        def write_batch(self, items: list[Any]) -> None:
            results.put((self.kind, proc_id, items))

    class QueueSink(DynamicSink[Any]):
        def __init__(self, kind: str) -> None:
            self.kind = kind

        def build(self, step_id: str, worker_index: int, worker_count: int) -> QueuePartition:
            return QueuePartition(self.kind)

    table = campaign_table()
    parsed = [0]  # events parsed by this process's workers (threads)
    next_report = [0.0]
    counting = threading.Lock()

    def views_by_campaign(lines: list[str]) -> Iterable[tuple[str, datetime]]:
        out = []
        for line in lines:
            event = parse(line)
            if is_view(event):
                out.append((table[event.ad_id], window_timestamp(event.event_time, params.window)))
        with counting:
            parsed[0] += len(lines)
            now = time.time()
            if now >= next_report[0]:
                results.put(("progress", proc_id, (now, parsed[0])))
                next_report[0] = now + PROGRESS_SECONDS
        return out

    lateness = timedelta(seconds=params.lateness)
    clock: EventClock[datetime] = EventClock(
        ts_getter=lambda ts: ts,
        wait_for_system_duration=lateness,
        # Wake a campaign's window when its watermark can first have passed the window's end.
        to_system_utc=lambda close: close + lateness,
    )
    windower = TumblingWindower(length=timedelta(seconds=params.window), align_to=EPOCH)

    flow = Dataflow("ysb")
    lines = op.input("events", flow, RateSource())
    views = op.flat_map_batch("views", lines, views_by_campaign)
    counts = fold_window("count", views, clock, windower, lambda: 0, lambda n, _: n + 1, lambda a, b: a + b, ordered=False)
    op.output("windows", op.map("flatten", counts.down, lambda kv: (kv[0], kv[1][0], kv[1][1])), QueueSink("windows"))
    op.output("late", op.map("late_window", counts.late, lambda kv: kv[1][0]), QueueSink("late"))
    return flow


def _worker(params: FlowParams, proc_id: int, addresses: list[str], results: Any, start: Any, stop: Any) -> None:
    """One Bytewax process of the cluster (a multiprocessing target)."""
    from bytewax.testing import cluster_main

    flow = _build_flow(params, proc_id, results, start, stop)
    cluster_main(
        flow, addresses, proc_id, epoch_interval=timedelta(seconds=EPOCH_SECONDS), worker_count_per_proc=params.workers_per_process
    )


# ---------------------------------------------------------------------------------------------
# In the benchmark process


@dataclass
class _Collector:
    """What the workers reported, stamped with the benchmark process's wall clock on receipt."""

    received: dict[tuple[str, int], tuple[int, float]] = field(default_factory=dict)  # (campaign, window id) -> (count, when)
    window_keys: dict[int, int] = field(default_factory=dict)  # window id -> campaigns emitted
    progress: dict[int, list[tuple[float, int]]] = field(default_factory=dict)  # process -> (time, events parsed so far)
    late: list[tuple[float, int]] = field(default_factory=list)  # (when, events dropped as late)
    ready: set[int] = field(default_factory=set)  # workers whose source is up

    @property
    def first_input(self) -> float | None:
        times = [reports[0][0] for reports in self.progress.values() if reports]
        return min(times) if times else None

    def take(self, message: tuple[str, int, Any]) -> None:
        kind, proc_id, body = message
        now = time.time()
        if kind == "windows":
            for campaign, window_id, count in body:
                self.received[(campaign, window_id)] = (count, now)
                self.window_keys[window_id] = self.window_keys.get(window_id, 0) + 1
        elif kind == "late":
            self.late.append((now, len(body)))
        elif kind == "ready":
            self.ready.add(body)
        else:
            self.progress.setdefault(proc_id, []).append(body)

    def late_between(self, since: float, until: float) -> int:
        return sum(n for when, n in self.late if since <= when < until)

    def parsed_at(self, when: float) -> int:
        """Events the workers had parsed by wall-clock `when` (each worker's latest report by then)."""
        total = 0
        for reports in self.progress.values():
            counts = [n for t, n in reports if t <= when]
            total += counts[-1] if counts else 0
        return total


class _Cluster:
    """The Bytewax worker processes and the queue they report on; every process is gone after close()."""

    def __init__(self, params: FlowParams, processes: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.results: Any = context.Queue()
        self.workers = processes * params.workers_per_process
        self.stop = context.Event()
        self.start = context.Value("d", 0.0)
        addresses = [f"127.0.0.1:{port}" for port in _free_ports(processes)]
        self.processes = [
            context.Process(target=_worker, args=(params, i, addresses, self.results, self.start, self.stop), name=f"ysb-bytewax-{i}", daemon=True)
            for i in range(processes)
        ]
        for process in self.processes:
            process.start()
        self.collector = _Collector()

    def receive(self, seconds: float) -> None:
        """Take the reports that arrive within `seconds`; raise if a worker process failed."""
        until = time.time() + seconds
        while True:
            try:
                self.collector.take(self.results.get(timeout=max(0.0, min(RECEIVE_SECONDS, until - time.time()))))
            except queue_module.Empty:
                pass
            failed = [p for p in self.processes if p.exitcode not in (None, 0)]
            if failed:
                raise RuntimeError(f"Bytewax process {failed[0].name} exited with code {failed[0].exitcode}")
            if time.time() >= until:
                return

    def start_stream(self, limit: float) -> bool:
        """Once every process's source is up (within `limit` seconds), start the stream: event 0 happens now."""
        until = time.time() + limit
        while len(self.collector.ready) < self.workers:
            if time.time() >= until:
                return False
            self.receive(RECEIVE_SECONDS)
        self.start.value = time.time()
        return True

    def finished(self) -> bool:
        return all(p.exitcode is not None for p in self.processes)

    def wait_finished(self, limit: float) -> bool:
        """Keep taking reports until every process has exited (within `limit` seconds)."""
        until = time.time() + limit
        while not self.finished() and time.time() < until:
            self.receive(RECEIVE_SECONDS)
        self._take_left()
        return self.finished()

    def _take_left(self) -> None:
        while True:
            try:
                self.collector.take(self.results.get_nowait())
            except queue_module.Empty:
                return

    def close(self) -> None:
        """End the sources, let the dataflow end, and kill any process that does not."""
        self.stop.set()
        try:
            self.wait_finished(EXIT_LIMIT_SECONDS)
        finally:
            for process in self.processes:
                if process.exitcode is None:
                    process.kill()
                process.join(EXIT_LIMIT_SECONDS)
            self.results.close()
            self.results.join_thread()


def _free_ports(count: int) -> list[int]:
    """`count` loopback ports free a moment ago, for Bytewax's processes to listen on."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _bytewax_missing() -> str | None:
    try:
        import bytewax  # noqa: F401
    except ImportError as exc:
        return f"not installed ({exc}); pip install -e '.[bench]'"
    return None


def run_bytewax_ysb(
    rate: int,
    seconds: float = DEFAULT_SECONDS,
    window: float = DEFAULT_WINDOW_SECONDS,
    batch_interval: float = DEFAULT_BATCH_INTERVAL,
    *,
    processes: int = DEFAULT_PROCESSES,
    workers_per_process: int = DEFAULT_WORKERS_PER_PROCESS,
    lateness: float = DEFAULT_LATENESS,
    drain_seconds: float | None = None,
) -> dict[str, Any]:
    """Run YSB at `rate` events/s on Bytewax, `seconds` from its first parsed batch, with tumbling
    windows of `window` seconds. Bytewax has no micro-batches: `batch_interval` is only recorded.

    Returns a dict with keys offered, achieved (events/s parsed and not dropped as late), p50 and
    p99 (window latency, seconds), windows (how many were measured), and for the record:
    unfinished (measured windows not final at the stop; their latency counts as the time until the
    stop), views (the measured windows' counts, summed), late (events dropped as late, whole run),
    processes, workers_per_process, lateness, poll_ms, epoch_s, batch_interval. Without bytewax, or if its processes cannot start: only offered and
    skipped (why). Bounded in time: at most STARTUP_LIMIT_SECONDS to the first parsed batch,
    `seconds`, at most `drain_seconds` (default max(10 s, 2 windows)), and EXIT_LIMIT_SECONDS
    for the processes to end.
    """
    _check_arguments(rate, seconds, window, processes, workers_per_process, lateness)
    missing = _bytewax_missing()
    if missing:
        return {"offered": rate, "skipped": missing}
    drain = max(MIN_DRAIN_SECONDS, 2 * window) if drain_seconds is None else drain_seconds
    params = FlowParams(rate, window, lateness, workers_per_process, limit=None)
    cluster = _Cluster(params, processes)
    collector = cluster.collector
    try:
        try:
            started = cluster.start_stream(STARTUP_LIMIT_SECONDS)
        except RuntimeError as exc:  # a Bytewax process failed before its source was up
            return {"offered": rate, "skipped": f"cannot start ({exc})"}
        if not started:
            return {"offered": rate, "skipped": f"cannot start (the sources were not all up within {STARTUP_LIMIT_SECONDS:g} s)"}
        until = time.time() + STARTUP_LIMIT_SECONDS
        while (ready := collector.first_input) is None:
            if time.time() >= until:
                return {"offered": rate, "skipped": f"cannot start (no batch parsed within {STARTUP_LIMIT_SECONDS:g} s)"}
            cluster.receive(RECEIVE_SECONDS)
        since, end = ready + WARMUP_SECONDS, ready + seconds
        first = math.ceil(since / window - 1e-9)
        measured = list(range(first, math.floor(end / window + 1e-9)))  # window ids: starting at `since` or later, ending by `end`
        cluster.receive(max(0.0, end - time.time()))
        until = time.time() + drain
        while any(collector.window_keys.get(w, 0) < CAMPAIGNS for w in measured) and time.time() < until:
            cluster.receive(RECEIVE_SECONDS)
        stopped = time.time()
    finally:
        cluster.close()

    latencies, unfinished, views = [], 0, 0
    for w in measured:
        window_end = (w + 1) * window
        emitted = [collector.received[(c, w)] for c in _campaign_ids() if (c, w) in collector.received]
        views += sum(count for count, _ in emitted)
        final_at = max((when for _, when in emitted), default=math.inf)
        if len(emitted) == CAMPAIGNS and final_at <= stopped:
            latencies.append(final_at - window_end)
        else:
            latencies.append(stopped - window_end)
            unfinished += 1
    stats = LatencyStats(latencies)
    return {
        "offered": rate,
        "achieved": (collector.parsed_at(stopped) - collector.parsed_at(since) - collector.late_between(since, stopped)) / (stopped - since),
        "p50": stats.p50,
        "p99": stats.p99,
        "windows": len(measured),
        "unfinished": unfinished,
        "views": views,
        "late": sum(n for _, n in collector.late),
        "processes": processes,
        "workers_per_process": workers_per_process,
        "lateness": lateness,
        "poll_ms": POLL_SECONDS * 1000,
        "epoch_s": EPOCH_SECONDS,
        "batch_interval": batch_interval,
    }


def _check_arguments(rate: int, seconds: float, window: float, processes: int, workers_per_process: int, lateness: float) -> None:
    """ValueError naming the first argument out of range."""
    if not isinstance(rate, int) or rate <= 0:
        raise ValueError(f"rate must be a positive whole number of events per second, not {rate!r}")
    for name, value in (("seconds", seconds), ("window", window)):
        if not value > 0:
            raise ValueError(f"{name} must be positive, not {value!r}")
    for name, count in (("processes", processes), ("workers_per_process", workers_per_process)):
        if not isinstance(count, int) or count <= 0:
            raise ValueError(f"{name} must be a positive whole number, not {count!r}")
    if not lateness >= 0:
        raise ValueError(f"lateness must be zero or more seconds, not {lateness!r}")


def _campaign_ids() -> list[str]:
    return sorted(set(campaign_table().values()))


def check_bytewax_ysb(
    rate: int = 2000,
    seconds: float = 8.0,
    window: float = 2.0,
    *,
    processes: int = DEFAULT_PROCESSES,
    workers_per_process: int = DEFAULT_WORKERS_PER_PROCESS,
    lateness: float = CHECK_LATENESS,
) -> dict[str, Any]:
    """Run the dataflow over the first rate * seconds events of the stream (paced as in a run) to
    their end, and compare its counts with squall.ysb.expected_counts over the same events.

    Returns {"ok": counts equal, "got": {(campaign, window start): count}, "expected": the same
    from expected_counts, "late": events dropped as late}, or {"skipped": why} without bytewax.
    """
    _check_arguments(rate, seconds, window, processes, workers_per_process, lateness)
    missing = _bytewax_missing()
    if missing:
        return {"skipped": missing}
    limit = round(rate * seconds)
    params = FlowParams(rate, window, lateness, workers_per_process, limit=limit)
    cluster = _Cluster(params, processes)
    try:
        if not cluster.start_stream(STARTUP_LIMIT_SECONDS):
            raise TimeoutError(f"the Bytewax check's sources were not all up within {STARTUP_LIMIT_SECONDS:g} s")
        if not cluster.wait_finished(STARTUP_LIMIT_SECONDS + seconds + EXIT_LIMIT_SECONDS):
            raise TimeoutError("the Bytewax check's dataflow did not end in time")
    finally:
        cluster.close()
    got = {(campaign, round(w * window, 6)): count for (campaign, w), (count, _) in cluster.collector.received.items()}
    lines = (make_event(g % PARTITIONS, g // PARTITIONS, event_time(cluster.start.value, g, rate)) for g in range(limit))
    expected = {(campaign, round(start, 6)): n for (campaign, start), n in expected_counts(lines, window).items()}
    return {"ok": got == expected, "got": got, "expected": expected, "late": sum(n for _, n in cluster.collector.late)}


def format_table(results: list[dict[str, Any]]) -> str:
    """A text table: one line per run, or its skipped note."""
    header = f"{'offered/s':>10} {'achieved/s':>10} {'p50 s':>7} {'p99 s':>7} {'windows':>7} {'unfin.':>6} {'late':>6}"
    return "\n".join([header, *map(_table_line, results)])


def _table_line(r: dict[str, Any]) -> str:
    if r.get("skipped"):
        return f"{r['offered']:>10} skipped: {r['skipped']}"
    return (
        f"{r['offered']:>10} {r['achieved']:>10.0f} {r['p50']:>7.3f} {r['p99']:>7.3f} {r['windows']:>7} "
        f"{r['unfinished']:>6} {r['late']:>6}"
    )


def main(argv: list[str] | None = None) -> None:
    """Run YSB on Bytewax at each offered rate (a new cluster per run) and print the table and the highest sustained rate."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", nargs="+", type=int, default=list(DEFAULT_RATES))
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS)
    parser.add_argument("--window", type=float, default=DEFAULT_WINDOW_SECONDS)
    parser.add_argument("--processes", type=int, default=DEFAULT_PROCESSES, help="Bytewax processes")
    parser.add_argument("--workers-per-process", type=int, default=DEFAULT_WORKERS_PER_PROCESS, help="Bytewax worker threads per process")
    parser.add_argument("--lateness", type=float, default=DEFAULT_LATENESS, help="watermark delay behind the latest event, seconds")
    parser.add_argument("--latency-bound", type=float, default=DEFAULT_LATENCY_BOUND, help="p99 window latency bound, seconds")
    parser.add_argument("--all-rates", action="store_true", help="run every rate, not stopping at the first unsustained one")
    parser.add_argument("--check", action="store_true", help="first check the counts against the plain-Python reference")
    args = parser.parse_args(argv)
    if args.check:
        check = check_bytewax_ysb(window=args.window, processes=args.processes, workers_per_process=args.workers_per_process)
        print(f"check: {check.get('skipped') or ('ok' if check['ok'] else 'COUNTS DIFFER')} (late events: {check.get('late', '-')})")

    def run(rate: int) -> dict[str, Any]:
        return run_bytewax_ysb(
            rate,
            args.seconds,
            args.window,
            processes=args.processes,
            workers_per_process=args.workers_per_process,
            lateness=args.lateness,
        )

    best, results = highest_sustained_rate(args.rates, run, args.latency_bound, stop_at_first_failure=not args.all_rates)
    print(
        f"bytewax ysb: processes={args.processes}x{args.workers_per_process} workers window={args.window:g}s "
        f"epoch={EPOCH_SECONDS:g}s poll={POLL_SECONDS * 1000:g}ms lateness={args.lateness * 1000:g}ms seconds={args.seconds:g}"
    )
    print(format_table(results))
    print(f"highest sustained rate (p99 <= {args.latency_bound:g} s): {best if best is not None else 'none'}")


if __name__ == "__main__":
    main()
