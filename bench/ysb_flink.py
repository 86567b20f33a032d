"""The Yahoo Streaming Benchmark (squall.ysb) on PyFlink, in a local Flink mini-cluster on this machine.

The job, parallelism 4 (as Squall's 4 executors and Spark's local[4]; the machine's 2 cores are
shared by all four subtasks, the JVM and the Python workers):

- source: Flink's NumberSequenceSource at parallelism 1, numbers g = 0, 1, 2, ... as fast as the
  job takes them, rebalanced round-robin over the 4 generator subtasks (a parallel sequence
  source would hand each subtask a contiguous range of its own, not every fourth number);
- generator (Python, DataStream map): event g waits until its time start + g / rate and becomes
  make_event(g % PARTITIONS, g // PARTITIONS, start + g / rate). `start` is the wall-clock time
  the first generator subtask got its first number (it writes it to a file of the run's
  temporary directory, the others read it), so JVM start, planning and Python worker start-up
  are not in the run. If the job falls behind, events are made late and the generator catches
  up as fast as the job lets it; the time each event was made is kept with it ("taken");
- views (Python, DataStream flat_map): parse, is_view, the ad's campaign from campaign_table();
  the event timestamp is the parsed event_time in whole milliseconds, watermarks monotonous
  per subtask (the generator's times only grow), emitted every `batch_interval`;
- counts (Flink SQL, in the JVM): the views become a table with that row time and source
  watermark; TUMBLE windows of `window` seconds count the views and the latest "taken" per
  campaign per window, emitted once, when the watermark passes the window's end; a second TUMBLE
  over those rows gathers each window's counts into one row (LISTAGG), so that the driver fetches
  one row a window over the gateway, not 100;
- sink: TableResult.collect() in the driver; a reader thread records when each window's row
  arrives (Flink's client polls the collect sink, up to every 100 ms when it is idle).

A window's latency is the wall-clock time its row reached the driver minus its end; its row
holds its final counts. The run lasts `seconds` from `start`; the windows that start
WARMUP_SECONDS or more after it and end within the run are measured; then the job goes on (at
the same rate) until they are final, for `drain_seconds` at most; a window not final by then
counts with its latency until the stop. Achieved input rate: the event time spanned by the
measured windows that were final, over the wall-clock time the generator took to make their
events (from the last view made of the window before them to the last of theirs): the offered
rate while the job keeps up, less once it falls behind.

Flink options for low latency: execution.buffer-timeout.interval BUFFER_TIMEOUT_MS (network buffers are
sent at most that late, default 100 ms), python.fn-execution.bundle.time = `batch_interval`
(a Python bundle's results return to the JVM at least that often, default 1 s),
python.fn-execution.bundle.size = a generator subtask's events of one `batch_interval` (see
bundle_size) and the watermark interval = `batch_interval` (default 200 ms). No checkpoints.
Python functions run in process mode (a Python worker process per subtask, able to use both
cores; thread mode would share one interpreter's GIL).

PyFlink is not in the `bench` extra: apache-flink 2.3 pins apache-beam <= 2.61, which pins
cloudpickle 2.2, and Squall needs cloudpickle >= 3.0, so no pip resolution holds both. Install
it into the benchmark's environment after Squall, then restore cloudpickle (PyFlink runs with
it; pip reports Beam's pin as a conflict):

    pip install -e '.[dev]' && pip install 'apache-flink==2.3.0' && pip install 'cloudpickle>=3.1'
    python -m bench.ysb_flink --rates 1000 5000 20000 --seconds 30 --window 2 [--check]

Every process of the run ends with it: the job is cancelled, then the JVM that PyFlink launched
(its gateway) is shut down and waited for, and so are the Python workers it started. Without
pyflink, or if Flink cannot start, a run returns a "skipped" note.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from datetime import timezone
from pathlib import Path
from typing import Any

from bench.ysb_workload import LatencyStats, highest_sustained_rate
from squall.ysb import DEFAULT_WINDOW_SECONDS, PARTITIONS, campaign_table, expected_counts, is_view, make_event, parse

PARALLELISM = 4
DEFAULT_RATES = (1000, 5000, 20000)
DEFAULT_SECONDS = 30.0
DEFAULT_BATCH_INTERVAL = 0.1
DEFAULT_LATENCY_BOUND = 5.0
WARMUP_SECONDS = 3.0  # after the generator's start: every Python worker has made its first events
STARTUP_LIMIT_SECONDS = 120.0
MIN_DRAIN_SECONDS = 10.0
BUFFER_TIMEOUT_MS = 5
PACE_SLACK_SECONDS = 0.001  # an event this close to its time is made without sleeping
START_FILE = "start"
JVM_EXIT_SECONDS = 30.0
WORKERS_EXIT_SECONDS = 30.0
CANCEL_SECONDS = 30.0
POLL_SECONDS = 0.05
REPO_ROOT = Path(__file__).resolve().parent.parent  # Python workers import bench.ysb_flink from here


def run_flink_ysb(
    rate: int,
    seconds: float = DEFAULT_SECONDS,
    window: float = DEFAULT_WINDOW_SECONDS,
    batch_interval: float = DEFAULT_BATCH_INTERVAL,
    *,
    drain_seconds: float | None = None,
    check: bool = False,
) -> dict[str, Any]:
    """Run YSB at `rate` events/s on PyFlink for `seconds` from the generator's start, with tumbling
    windows of `window` seconds; `batch_interval` sets Python bundles' time and the watermark interval.

    Returns a dict with keys offered, achieved (events/s), p50 and p99 (window latency, seconds),
    windows (how many were measured), and for the record: unfinished (measured windows not final
    when the job stopped), views (their final counts, summed), startup_seconds (submission to the
    generator's start), batch_interval; with `check`, correct (every final window's counts equal
    squall.ysb.expected_counts over the same events) and checked_windows. If pyflink is missing or
    Flink cannot start: only offered and skipped (why). Bounded in time: at most
    STARTUP_LIMIT_SECONDS to the generator's start, `seconds`, at most `drain_seconds` (default
    max(10 s, 2 windows)), and the stop (each of its waits bounded).
    """
    if rate <= 0 or seconds <= 0 or window <= 0 or batch_interval <= 0:
        raise ValueError("rate, seconds, window and batch_interval must be positive")
    if round(window * 1000) != window * 1000:
        raise ValueError(f"window {window!r} s is not a whole number of milliseconds (Flink's time unit)")
    drain = max(MIN_DRAIN_SECONDS, 2 * window) if drain_seconds is None else drain_seconds
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ysb-flink-")))
        try:
            gateway_process = stack.enter_context(_flink_gateway())
        except ImportError as exc:
            return {"offered": rate, "skipped": f"not installed ({exc})"}
        except Exception as exc:  # any start-up failure skips the run, as for Spark
            return {"offered": rate, "skipped": f"cannot start ({type(exc).__name__}: {exc})"}
        del gateway_process
        return _run_job(rate, seconds, window, batch_interval, drain, check, workdir)


@contextmanager
def _flink_gateway() -> Iterator[Any]:
    """The JVM that PyFlink talks to (its gateway server, which runs the local mini-cluster),
    launched now and, on exit, shut down with every process under it.

    PyFlink launches the JVM on first use and keeps only the connection; the launch is wrapped
    to keep the process too. The Python workers are the JVM's descendants: they are listed
    before the JVM ends and waited for (killed if they outlive it by WORKERS_EXIT_SECONDS).
    """
    import pyflink.java_gateway as java_gateway

    if java_gateway._gateway is not None:
        raise RuntimeError("a PyFlink gateway is already running in this process")
    launched: list[Any] = []
    launch = java_gateway.launch_gateway_server_process

    def launch_and_keep(env: Any, args: Any) -> Any:
        process = launch(env, args)
        launched.append(process)
        return process

    # The workers run this interpreter and import bench.ysb_flink (pickled by reference).
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    java_gateway.launch_gateway_server_process = launch_and_keep
    try:
        gateway = java_gateway.get_gateway()
    finally:
        java_gateway.launch_gateway_server_process = launch
    try:
        yield launched[0]
    finally:
        _stop_gateway(java_gateway, gateway, launched)


def _stop_gateway(java_gateway: Any, gateway: Any, launched: list[Any]) -> None:
    """End the gateway JVM (it exits when its standard input closes) and the processes under it."""
    descendants = _descendants(launched[0].pid) if launched else []
    try:
        gateway.shutdown()
    finally:
        java_gateway._gateway = None
        for process in launched:
            process.stdin.close()
            try:
                process.wait(timeout=JVM_EXIT_SECONDS)
            except Exception:
                process.kill()
                process.wait(timeout=JVM_EXIT_SECONDS)
            if process.stderr is not None:
                process.stderr.close()
        _reap(descendants, time.time() + WORKERS_EXIT_SECONDS)


def _descendants(pid: int) -> list[int]:
    """The ids of every process under `pid` (from /proc; none where there is no /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _reap(pids: list[int], until: float) -> None:
    """Wait until the processes `pids` are gone; kill those still there at wall-clock `until`."""
    left = [pid for pid in pids if _alive(pid)]
    while left and time.time() < until:
        time.sleep(POLL_SECONDS)
        left = [pid for pid in left if _alive(pid)]
    for pid in left:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass


def _alive(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


class Generator:
    """The Python map that makes event g at its time: start + g / rate (a MapFunction by duck typing,
    so that this module imports without pyflink)."""

    def __init__(self, rate: int, start_file: str) -> None:
        self.rate, self.start_file = rate, start_file
        self.start: float | None = None

    def open(self, runtime_context: Any) -> None:
        pass

    def close(self) -> None:
        pass

    def map(self, g: int) -> tuple[str, float]:
        if self.start is None:
            self.start = _claim_start(self.start_file)
        due = self.start + g / self.rate
        ahead = due - time.time()  # read once: a second reading can be past due
        if ahead > PACE_SLACK_SECONDS:
            time.sleep(ahead)
        return make_event(g % PARTITIONS, g // PARTITIONS, due), time.time()


def _claim_start(path: str) -> float:
    """The generator's start: now, if this is the first subtask to get a number (its file is
    linked into place first), else the time the first one wrote."""
    now = time.time()
    mine = f"{path}.{uuid.uuid4().hex}"
    Path(mine).write_text(repr(now))
    try:
        os.link(mine, path)  # atomic: the first link wins, and the file is whole when it appears
        return now
    except FileExistsError:
        return float(Path(path).read_text())
    finally:
        os.unlink(mine)


def views(made: tuple[str, float]) -> Iterator[tuple[str, float, float]]:
    """(event JSON, time made) -> (campaign, event time, time made), for the views."""
    line, taken = made
    event = parse(line)
    if is_view(event):
        yield _CAMPAIGNS[event.ad_id], event.event_time, taken


_CAMPAIGNS = campaign_table()


def event_millis(view: tuple[str, float, float], previous: int) -> int:
    """A view's Flink timestamp: its event time in whole milliseconds (rounded down, as Squall's
    window_start puts a time within float rounding of a boundary in the later window)."""
    return math.floor(view[1] * 1000 + 1e-6)


def _build_job(env: Any, t_env: Any, rate: int, window: float, workdir: Path) -> Any:
    """The job's table of window counts: campaign, window_end (epoch ms), views, taken."""
    from pyflink.common import Row, Types, WatermarkStrategy
    from pyflink.common.watermark_strategy import TimestampAssigner
    from pyflink.datastream.connectors.number_seq import NumberSequenceSource
    from pyflink.datastream.functions import FlatMapFunction, MapFunction
    from pyflink.table import DataTypes, Schema

    class Make(Generator, MapFunction):  # type: ignore[misc]
        pass

    class Views(FlatMapFunction):  # type: ignore[misc]
        def flat_map(self, value: Any) -> Iterator[Any]:
            return (Row(*view) for view in views(value))

    class Millis(TimestampAssigner):  # type: ignore[misc]
        def extract_timestamp(self, value: Any, record_timestamp: int) -> int:
            return event_millis(value, record_timestamp)

    numbers = env.from_source(NumberSequenceSource(0, 2**62), WatermarkStrategy.no_watermarks(), "numbers").set_parallelism(1)
    made = numbers.rebalance().map(Make(rate, str(workdir / START_FILE)), Types.TUPLE([Types.STRING(), Types.DOUBLE()]))
    view_rows = made.flat_map(
        Views(), Types.ROW_NAMED(["campaign_id", "event_time", "taken"], [Types.STRING(), Types.DOUBLE(), Types.DOUBLE()])
    ).assign_timestamps_and_watermarks(
        WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(Millis())
    )
    table = t_env.from_data_stream(
        view_rows,
        Schema.new_builder()
        .column("campaign_id", DataTypes.STRING())
        .column("event_time", DataTypes.DOUBLE())
        .column("taken", DataTypes.DOUBLE())
        .column_by_metadata("rowtime", DataTypes.TIMESTAMP_LTZ(3))
        .watermark("rowtime", "SOURCE_WATERMARK()")
        .build(),
    )
    t_env.create_temporary_view("ysb_views", table)
    tumble = f"INTERVAL '{window:.3f}' SECOND"
    t_env.create_temporary_view(
        "ysb_campaign_counts",
        t_env.sql_query(
            "SELECT campaign_id, window_time AS rowtime, COUNT(*) AS view_count, MAX(taken) AS last_taken "
            f"FROM TABLE(TUMBLE(TABLE ysb_views, DESCRIPTOR(rowtime), {tumble})) "
            "GROUP BY campaign_id, window_start, window_end, window_time"
        ),
    )
    # One row per window: the driver fetches collected rows one by one over the gateway (a few
    # milliseconds each), so 100 rows a window would reach it up to a second after Flink emitted them.
    return t_env.sql_query(
        f"SELECT window_end, LISTAGG(campaign_id || '{_COUNT_SEPARATOR}' || CAST(view_count AS STRING), '{_ITEM_SEPARATOR}') "
        "AS counts, MAX(last_taken) AS last_taken "
        f"FROM TABLE(TUMBLE(TABLE ysb_campaign_counts, DESCRIPTOR(rowtime), {tumble})) "
        "GROUP BY window_start, window_end"
    )


_COUNT_SEPARATOR, _ITEM_SEPARATOR = "=", ","  # in no campaign id


def window_counts(text: str) -> dict[str, int]:
    """A window row's counts, "campaign-01=12,campaign-02=9,...", as a dict."""
    return {campaign: int(n) for campaign, n in (item.split(_COUNT_SEPARATOR) for item in text.split(_ITEM_SEPARATOR) if item)}


def bundle_size(rate: int, batch_interval: float) -> int:
    """Elements per Python bundle: a generator subtask's events of one batch interval.

    The sequence source runs ahead of the generator, and the JVM hands a Python worker a whole
    bundle at once, whose results come back when its last event has been made at its time: a
    bundle of the default 100,000 (or even 1,000) numbers would hold events back for seconds.
    """
    return max(1, math.ceil(rate * batch_interval / PARALLELISM))


def _environments(rate: int, batch_interval: float) -> tuple[Any, Any]:
    """A streaming execution environment and its table environment, set for low latency."""
    from pyflink.common import Configuration
    from pyflink.datastream import StreamExecutionEnvironment
    from pyflink.table import EnvironmentSettings, StreamTableEnvironment

    interval_ms = max(1, round(batch_interval * 1000))
    config = Configuration()
    for key, value in {
        "parallelism.default": str(PARALLELISM),
        "execution.buffer-timeout.interval": f"{BUFFER_TIMEOUT_MS} ms",
        "pipeline.auto-watermark-interval": f"{interval_ms} ms",
        "python.fn-execution.bundle.time": str(interval_ms),
        "python.fn-execution.bundle.size": str(bundle_size(rate, batch_interval)),
        "python.executable": sys.executable,
        "python.client.executable": sys.executable,
        "table.local-time-zone": "UTC",
    }.items():
        config.set_string(key, value)
    # In a local mini-cluster PyFlink runs the Python workers as threads of this process
    # ("loopback"), all under its one GIL; in process mode each subtask has a worker process.
    os.environ["_python_worker_execution_mode"] = "process"
    env = StreamExecutionEnvironment.get_execution_environment(config)
    env.set_parallelism(PARALLELISM)
    env.set_buffer_timeout(BUFFER_TIMEOUT_MS)
    env.get_config().set_auto_watermark_interval(interval_ms)
    t_env = StreamTableEnvironment.create(env, EnvironmentSettings.new_instance().in_streaming_mode().with_configuration(config).build())
    return env, t_env


class _WindowSink:
    """Reads the job's collected rows, one a window, in a thread: each window's counts and when they arrived."""

    def __init__(self, result: Any) -> None:
        self.result = result
        self.lock = threading.Lock()
        self.counts: dict[int, dict[str, int]] = {}  # window end (epoch ms) -> campaign -> views
        self.arrival: dict[int, float] = {}  # window end (ms) -> when its counts reached the driver
        self.taken: dict[int, float] = {}  # window end (ms) -> latest time one of its views was made
        self.error: BaseException | None = None
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._read, name="ysb-flink-sink", daemon=True)

    def _read(self) -> None:
        try:
            with self.result.collect() as rows:
                for row in rows:
                    now, end = time.time(), _epoch_millis(row[0])
                    with self.lock:
                        self.counts[end] = window_counts(row[1])
                        self.arrival[end] = now
                        self.taken[end] = float(row[2])
        except BaseException as exc:  # the job's cancellation ends the iteration with an error
            if not self.stopping.is_set():
                self.error = exc

    def final(self, end_ms: int) -> bool:
        with self.lock:
            return end_ms in self.arrival


def _run_job(rate: int, seconds: float, window: float, batch_interval: float, drain: float, check: bool, workdir: Path) -> dict[str, Any]:
    """Submit the job, let it run, drain it, cancel it, and measure its windows."""
    env, t_env = _environments(rate, batch_interval)
    counts = _build_job(env, t_env, rate, window, workdir)
    submitted = time.time()
    result = counts.execute()
    sink = _WindowSink(result)
    sink.thread.start()
    try:
        start = _await_start(workdir / START_FILE, sink, submitted + STARTUP_LIMIT_SECONDS)
        window_ms = round(window * 1000)
        since, end = start + WARMUP_SECONDS, start + seconds
        first = math.ceil(since / window - 1e-9)
        measured = [(first + k + 1) * window_ms for k in range(max(0, math.floor(end / window + 1e-9) - first))]
        _await(sink, end, "before the end of the run")
        drain_until = time.time() + drain
        while not all(sink.final(e) for e in measured) and time.time() < drain_until:
            _await(sink, time.time() + POLL_SECONDS, "before its windows were final")
        stopped = time.time()
    finally:
        _cancel(result, sink)

    latencies, final = [], []
    with sink.lock:
        for end_ms in measured:
            if end_ms in sink.arrival:
                latencies.append(sink.arrival[end_ms] - end_ms / 1000)
                final.append(end_ms)
            else:
                latencies.append(stopped - end_ms / 1000)
        views_total = sum(sum(sink.counts[e].values()) for e in final)
        achieved = _achieved(rate, sink.taken, [measured[0] - window_ms, *final] if final else [])
    stats = LatencyStats(latencies)
    outcome: dict[str, Any] = {
        "offered": rate,
        "achieved": achieved,
        "p50": stats.p50,
        "p99": stats.p99,
        "windows": len(measured),
        "unfinished": len(measured) - len(final),
        "views": views_total,
        "startup_seconds": start - submitted,
        "batch_interval": batch_interval,
    }
    if check:
        outcome["correct"], outcome["checked_windows"] = _check(sink, rate, start, window)
    return outcome


def _epoch_millis(value: Any) -> int:
    """A collected TIMESTAMP_LTZ (a datetime; naive ones are UTC, the job's local time zone) as epoch milliseconds."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return round(float(value.timestamp()) * 1000)


def _achieved(rate: int, taken: dict[int, float], ends: list[int]) -> float:
    """Events per second the generator made over the final measured windows: their event-time
    span (rate events a second) over the wall-clock time from the last event made of the window
    before them to the last of the last one. 0 if none was final."""
    if len(ends) < 2 or ends[0] not in taken:
        return 0.0
    first, last = ends[0], ends[-1]
    return rate * (last - first) / 1000 / max(1e-9, taken[last] - taken[first])


def _await_start(path: Path, sink: _WindowSink, until: float) -> float:
    """Wait for the generator's first event; its start (epoch seconds)."""
    while True:
        try:
            return float(path.read_text())
        except (OSError, ValueError):
            pass
        if time.time() >= until:
            raise TimeoutError(f"the Flink job made no event within {STARTUP_LIMIT_SECONDS:g} s")
        _await(sink, time.time() + POLL_SECONDS, "before its first event")


def _await(sink: _WindowSink, until: float, when: str) -> None:
    """Wait until wall-clock `until`; raise if the job's results ended or failed."""
    while (left := until - time.time()) > 0:
        sink.thread.join(min(POLL_SECONDS, left))
        if sink.error is not None:
            raise RuntimeError(f"the Flink YSB job failed {when}: {type(sink.error).__name__}: {sink.error}")
        if not sink.thread.is_alive():
            raise RuntimeError(f"the Flink YSB job ended {when}")


def _cancel(result: Any, sink: _WindowSink) -> None:
    """Cancel the job and wait (bounded) for it to end and the reader to stop."""
    sink.stopping.set()
    client = result.get_job_client()
    if client is not None:
        try:
            client.cancel().result(CANCEL_SECONDS)
        except Exception:  # an already ended job cannot be cancelled
            pass
    sink.thread.join(CANCEL_SECONDS)


def _check(sink: _WindowSink, rate: int, start: float, window: float) -> tuple[bool, int]:
    """Whether every final window's counts equal expected_counts over the generator's events
    (event g at start + g / rate); and how many windows were compared."""
    with sink.lock:
        got = {(c, e): n for e, counts in sink.counts.items() for c, n in counts.items()}
        finals = sorted(sink.counts)
    if not finals:
        return False, 0
    last_g = math.ceil((finals[-1] / 1000 - start) * rate) + 1
    events = [make_event(g % PARTITIONS, g // PARTITIONS, start + g / rate) for g in range(last_g)]
    window_ms = round(window * 1000)
    expected = {(c, round(s * 1000) + window_ms): n for (c, s), n in expected_counts(events, window).items()}
    return got == {k: n for k, n in expected.items() if k[1] in set(finals)}, len(finals)


def format_table(results: Sequence[Mapping[str, Any]]) -> str:
    """A text table: one line per run, or its skipped note."""
    header = f"{'offered/s':>10} {'achieved/s':>10} {'p50 s':>7} {'p99 s':>7} {'windows':>7} {'unfin.':>6} {'start-up s':>10}"
    return "\n".join([header, *map(_table_line, results)])


def _table_line(r: Mapping[str, Any]) -> str:
    if r.get("skipped"):
        return f"{r['offered']:>10} skipped: {r['skipped']}"
    return (
        f"{r['offered']:>10} {r['achieved']:>10.0f} {r['p50']:>7.2f} {r['p99']:>7.2f} {r['windows']:>7} "
        f"{r['unfinished']:>6} {r['startup_seconds']:>10.1f}"
    )


def main(argv: list[str] | None = None) -> None:
    """Run YSB on Flink at each offered rate (one JVM per run) and print the table and the highest sustained rate."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", nargs="+", type=int, default=list(DEFAULT_RATES))
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS)
    parser.add_argument("--window", type=float, default=DEFAULT_WINDOW_SECONDS)
    parser.add_argument("--batch-interval", type=float, default=DEFAULT_BATCH_INTERVAL, help="Python bundle time and watermark interval, seconds")
    parser.add_argument("--latency-bound", type=float, default=DEFAULT_LATENCY_BOUND, help="p99 window latency bound, seconds")
    parser.add_argument("--all-rates", action="store_true", help="run every rate, not stopping at the first unsustained one")
    parser.add_argument("--check", action="store_true", help="compare every final window's counts with the plain-Python reference")
    args = parser.parse_args(argv)

    def run(rate: int) -> dict[str, Any]:
        return run_flink_ysb(rate, args.seconds, args.window, args.batch_interval, check=args.check)

    best, results = highest_sustained_rate(args.rates, run, args.latency_bound, stop_at_first_failure=not args.all_rates)
    print(f"flink ysb: parallelism={PARALLELISM} window={args.window:g}s bundle={args.batch_interval * 1000:g}ms seconds={args.seconds:g}")
    print(format_table(results))
    if args.check:
        print("check: " + ", ".join(f"{r['offered']}: {r.get('correct', '-')} ({r.get('checked_windows', 0)} windows)" for r in results))
    print(f"highest sustained rate (p99 <= {args.latency_bound:g} s): {best if best is not None else 'none'}")


if __name__ == "__main__":
    main()
