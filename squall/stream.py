"""Streams: a source cut into micro-batches of `batch_interval` seconds, run in Drizzle groups.

Batch b holds what the source produced in [start + b*interval, start + (b+1)*interval); its source
tasks are pre-scheduled with the rest of their group and start on the executors the moment that
interval is over (not before: its data is not all there). Every batch's result goes to the sink,
in order, as soon as it is complete. Transformations are recorded once and each batch's plan is
the same template with the batch index set, so the code is shipped once for the whole stream.
"""

from __future__ import annotations

import functools
import math
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from squall.common import c_heap
from squall.common.plan import GeneratorSource, SourceNode, StateNode
from squall.common.protocol import Priority, StreamProgress
from squall.common.serialization import dumps_function
from squall.dataset import Dataset
from squall.driver_log import driver_log
from squall.errors import JobError, SchedulerRestartedError, SquallError
from squall.lineage import PlanVertex
from squall.runs import check_priority
from squall.sources import StreamSource
from squall.stream_metrics import StreamMetrics
from squall.tuning import GroupSizeTuner, TunerBounds
from squall.windows import COUNT, Aggregation, WindowOperator, WindowResult, WindowSpec, reducing, window_fold

log = driver_log("stream")

LAG_INTERVAL = 1.0  # seconds between two questions to the source about its lag

if TYPE_CHECKING:
    from squall.connection import Connection

@dataclass(frozen=True)
class StreamClock:
    """When the stream started (wall clock) and how long its batches are."""

    start: float
    interval: float
    run: str = ""  # which run of its source this is (StreamSource.run_of): batches of one run are the same batches


Transform = Callable[[Dataset, StreamClock], Dataset]
Sink = Callable[[int, list[Any]], None]


class StreamError(SquallError):
    """A stream stopped because a batch failed; `cause` is the batch's error."""

    def __init__(self, message: str, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.cause = cause


class Stream:
    """A stream of micro-batches from a replayable source (make it with Context.stream).

    Transformations (map, filter, key_by, reduce_by_key, update_state_by_key, window, ...) apply
    to every batch and return a new Stream; foreach_batch sets the sink; start() runs it in the
    background until stop(). Batch b holds what the source made in [start + b * batch_interval,
    start + (b + 1) * batch_interval), and its result reaches the sink in order, exactly once.
    Every batch, and every batch replayed to rebuild its state, runs with `priority` ("latency"
    unless told: see Context.stream).
    Raises ValueError for a batch_interval that is not positive, a group_size that is neither
    a positive integer nor "auto", or a priority that is neither "latency" nor "batch".
    """

    def __init__(self, ctx: Connection, source: StreamSource, batch_interval: float, group_size: int | str,
                 transforms: tuple[Transform, ...] = (), sink: Sink | None = None, priority: Priority = "latency") -> None:
        self.priority = check_priority(priority)
        if not batch_interval > 0:
            raise ValueError(f"batch_interval must be positive, got {batch_interval!r}")
        if group_size != "auto" and (not isinstance(group_size, int) or group_size < 1):
            raise ValueError(f'group_size must be a positive integer or "auto", got {group_size!r}')
        self.ctx = ctx
        self.source = source
        self.batch_interval = batch_interval
        self.group_size = group_size
        self._transforms = transforms
        self._sink = sink
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._error: BaseException | None = None
        self.metrics_state = StreamMetrics(window=ctx.settings.metrics_window)
        self.stream_id = uuid.uuid4().hex[:16]  # the scheduler's dashboard knows the stream by it
        self._last_progress: dict[str, Any] | None = None
        self._group = ("", 0)  # the group being delivered: its run id and size
        self._lag_due = 0.0  # monotonic time when the source's lag may be asked again

    # --- per-batch transformations (each returns a new Stream) ----------------------------------

    def map(self, fn: Callable[[Any], Any]) -> Stream:
        """fn(record) for every record of every batch."""
        return self._then(lambda ds, clock: ds.map(fn))

    def filter(self, fn: Callable[[Any], bool]) -> Stream:
        """The records for which fn(record) is true."""
        return self._then(lambda ds, clock: ds.filter(fn))

    def flat_map(self, fn: Callable[[Any], Any]) -> Stream:
        """Every element of fn(record), for every record."""
        return self._then(lambda ds, clock: ds.flat_map(fn))

    def map_partitions(self, fn: Callable[[Any], Any]) -> Stream:
        """fn(iterator over a batch partition's records) -> its new records."""
        return self._then(lambda ds, clock: ds.map_partitions(fn))

    def key_by(self, fn: Callable[[Any], Any]) -> Stream:
        """(fn(record), record) pairs, ready for a keyed operation."""
        return self._then(lambda ds, clock: ds.map(_KeyBy(fn)))

    def reduce_by_key(self, fn: Callable[[Any, Any], Any], partitions: int | None = None) -> Stream:
        """Per batch, (key, value) records -> one (key, combined value) per key, values combined
        with fn(a, b) into `partitions` partitions (default: the source's). Nothing carries over
        from batch to batch: see update_state_by_key and window for that."""
        return self._then(lambda ds, clock: ds.reduce_by_key(fn, partitions))

    def update_state_by_key(self, fn: Callable[[list[Any], Any], Any], partitions: int | None = None) -> Stream:
        """Running state per key: each batch, for every key with values, the new state is
        fn(values, old_state or None) (None forgets the key) and (key, new_state) is emitted.
        A key's state stays on the executor of its partition, applied batch after batch in order."""
        if not callable(fn):
            raise TypeError("update_state_by_key() needs fn(values, old_state)")
        state_id = uuid.uuid4().hex[:16]
        return self._then(lambda ds, clock: ds.group_by_key(partitions)._update_state(fn, state_id))

    def window(self, size: float, slide: float | None = None, event_time: Callable[[Any], float] | None = None) -> WindowedStream:
        """Event-time windows over (key, value) records (key_by first): tumbling, or sliding with
        `slide`; then .count(), .reduce(fn) or .aggregate(zero, add, merge). `event_time(value)`
        defaults to the value's event_time attribute or key, or its last element. Raises
        ValueError for a size or slide that is not positive, or a slide longer than the size."""
        return WindowedStream(self, WindowSpec.of(size, slide, event_time))

    def foreach_batch(self, fn: Sink) -> Stream:
        """Call fn(batch_index, records) on the driver for every batch, in order. If fn has an
        on_start(clock) method, start() calls it first with the StreamClock of the run (batch
        indexes count from 0 in each run; clock.run says which batches they are:
        sinks.RedisSink keys its commit marker with it)."""
        if not callable(fn):
            raise TypeError("foreach_batch() needs fn(batch_index, records)")
        return Stream(self.ctx, self.source, self.batch_interval, self.group_size, self._transforms, fn, self.priority)

    def _then(self, transform: Transform) -> Stream:
        return Stream(self.ctx, self.source, self.batch_interval, self.group_size, (*self._transforms, transform), self._sink,
                      self.priority)

    # --- running --------------------------------------------------------------------------------

    def start(self) -> Stream:
        """Start running in a background thread and return this stream. The first batch starts at
        the next multiple of batch_interval on the wall clock. Raises SquallError if it was
        already started, SerializationError if the stream's code cannot be pickled."""
        if self._thread is not None:
            raise SquallError("this stream was already started")
        # Batches start on multiples of the interval, like windows on multiples of their slide,
        # so a window's end is a batch's end and it is emitted as soon as it closes.
        start = math.ceil(time.time() / self.batch_interval) * self.batch_interval
        template = self._template(start)  # fails here, before any thread, if code cannot ship
        self.metrics_state.started = start
        on_start = getattr(self._sink, "on_start", None)
        if callable(on_start):
            on_start(StreamClock(start, self.batch_interval, self.source.run_of(start)))  # RedisSink marks batches by run
        if self.source.batch_records(0, self.batch_interval) is not None:
            self.metrics_state.input_records = 0
        self._thread = threading.Thread(target=self._run, args=(start, template), name="squall-stream", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Stop after the group in flight: every batch it started is finished and delivered.
        Waits up to `timeout` seconds (default: until done); raises StreamError as
        await_termination does."""
        self._stopping.set()
        self.await_termination(timeout)

    def await_termination(self, timeout: float | None = None) -> bool:
        """Wait until the stream ends; raise StreamError if a batch failed. False on timeout."""
        if self._thread is None:
            raise SquallError("the stream was never started")
        self._thread.join(timeout)
        if self._thread.is_alive():
            return False
        if isinstance(self._error, StreamError):
            raise self._error
        if self._error is not None:
            raise StreamError(f"the stream failed: {self._error}", self._error) from self._error
        return True

    def metrics(self) -> dict[str, float]:
        """The stream's figures so far, over the batches delivered to the sink:

        - batches: batches delivered; skipped_records: bad records skipped (bad_records="skip");
        - output_records, output_records_per_second: records the stream delivered to its sink
          (after every transformation: e.g. one per key and window for a windowed count);
        - input_records, input_records_per_second: records its source produced in those
          batches; only for sources the driver can count (rate), absent for generator and
          directory sources;
        - latency_p50, latency_p99: seconds from a batch's interval end to its delivery;
          window_latency_p50/p99 (windowed streams): from a window's end to its delivery;
        - group_size: the size of the latest Drizzle group;
        - source_lag: records the source holds that no batch has read yet, as it last told
          (asked at most once a second); only for sources that can tell (redis_stream).

        Rates are per second of wall clock since the stream started."""
        return self.metrics_state.summary()

    def progress(self) -> dict[str, Any] | None:
        """The last delivered batch's facts, like Spark's lastProgress (None before the first):
        batch, timestamp (when it reached the sink, epoch seconds), latency (seconds from the end
        of its interval to the sink), window_latency (the largest of its windows', or None),
        input_records (None when the source cannot count them without running), output_records,
        group_size, input_rate (input records per second of the batch interval), processing_rate
        (records per second of its latency), skipped (bad records skipped so far) and source_lag
        (records the source holds unread, asked at most once a second; None when it cannot tell)."""
        progress = self._last_progress
        return dict(progress) if progress is not None else None

    def _template(self, start: float) -> Dataset:
        fn = self.source.batch_function(start, self.batch_interval)
        key = self.ctx.register_code(dumps_function(fn))
        source = GeneratorSource(fn=key, partitions=self.source.partitions, batch=0)
        ds = Dataset(self.ctx, PlanVertex(SourceNode(source=source)), self.source.partitions)
        clock = StreamClock(start, self.batch_interval)
        for transform in self._transforms:
            ds = transform(ds, clock)
        return ds

    def _batch(self, template: Dataset, batch: int) -> Dataset:
        head = template.nodes[0]
        assert isinstance(head, SourceNode) and isinstance(head.source, GeneratorSource)
        source = GeneratorSource(fn=head.source.fn, partitions=head.source.partitions, batch=batch)
        return Dataset.from_nodes(self.ctx, (SourceNode(source=source), *template.nodes[1:]), template.partitions)

    def _tuner(self) -> GroupSizeTuner | None:
        if self.group_size != "auto":
            return None
        settings = self.ctx.settings
        bounds = TunerBounds(
            lower=settings.group_overhead_lower,
            upper=settings.group_overhead_upper,
            max_group_seconds=settings.group_max_seconds,
        )
        return GroupSizeTuner(batch_interval=self.batch_interval, initial_size=1, bounds=bounds)

    def _round_trip(self) -> float:
        """One driver-scheduler round trip: the part of a group boundary spent on the wire."""
        began = time.perf_counter()
        self.ctx.client.ping()
        return time.perf_counter() - began

    def _run(self, start: float, template: Dataset) -> None:
        batch = 0
        tuner = self._tuner()
        round_trip = self._round_trip() if tuner is not None else 0.0
        state_ids = [n.state_id for n in template.nodes if isinstance(n, StateNode)]
        checkpoints: dict[str, int] = {}  # keyed state -> the batch its checkpoints reach (from RunDone)
        resume: dict[str, int] | None = None  # set after a scheduler restart: rebuild state first
        next_trim = time.monotonic() + self.ctx.settings.memory_trim_interval
        try:
            while not self._stopping.is_set():
                size = tuner.size if tuner is not None else int(self.group_size)
                self.metrics_state.group_sizes.append(size)
                submitted = time.time()
                batches = range(batch, batch + size)
                ends = [start + (b + 1) * self.batch_interval for b in batches]
                datasets = [self._batch(template, b) for b in batches]
                replay_from = min(resume.values(), default=batch - 1) + 1 if resume is not None else batch
                replays = [self._batch(template, b) for b in range(replay_from, batch)]
                self.metrics_state.submit_seconds.append(time.time() - submitted)
                outcomes = self.ctx.iter_jobs(
                    datasets, group_size=size, preschedule=True, errors="return", not_before=ends, first_batch=batch,
                    replays=replays, replay_from=replay_from, resume_states=resume, priority=self.priority,
                    deltas=False,  # each batch's plan is new from its source up: a delta would save nothing
                    stream_id=self.stream_id,
                )
                run_stats = self.ctx.last_run  # this group's run, before any other run replaces it
                self._group = (run_stats.run_id if run_stats is not None else "", size)
                delivered = batch
                try:
                    for b, end, outcome in zip(batches, ends, outcomes, strict=True):
                        self._deliver(b, end, outcome)
                        delivered = b + 1
                except SchedulerRestartedError as exc:
                    log.warning("scheduler_restarted", resume_at=delivered, error=str(exc))
                    self._await_executors()
                    resume = {sid: checkpoints.get(sid, -1) for sid in state_ids}
                    batch = delivered
                    continue
                finally:
                    outcomes.close()  # on a failure, cancel what the group has not started
                resume = None
                if run_stats is not None:
                    self.metrics_state.skipped += run_stats.skipped
                    checkpoints.update(run_stats.checkpoints)
                if tuner is not None:
                    coordination = self.metrics_state.submit_seconds[-1] + round_trip
                    overhead = boundary_overhead(coordination, group_span=size * self.batch_interval)
                    self.metrics_state.overheads.append(overhead)
                    previous = tuner.size
                    if tuner.observe_overhead(overhead) != previous:
                        log.info("group_size_changed", old=previous, new=tuner.size, overhead=round(overhead, 4))
                batch += size
                next_trim = self._trim_if_due(next_trim)
        except BaseException as exc:  # the driver-side thread must report, never die silently
            self._error = exc
        finally:
            try:
                self.ctx.client.forget_states(state_ids)  # its keyed state and checkpoints can go
            except Exception as exc:  # noqa: BLE001 - the stream's outcome matters more
                log.warning("forget_states_failed", error=repr(exc))

    def _trim_if_due(self, due: float) -> float:
        """The driver runs as long as its streams, and each group's results pass through its C heap:
        like every service, it hands that heap's free pages back to the operating system every
        memory_trim_interval seconds (common/c_heap.py), between groups. Returns the next due time."""
        interval = self.ctx.settings.memory_trim_interval
        if interval <= 0 or time.monotonic() < due:
            return due
        c_heap.trim()
        return time.monotonic() + interval

    def _deliver(self, b: int, end: float, outcome: Any) -> None:
        if isinstance(outcome, JobError):
            raise StreamError(f"batch {b} of the stream failed: {outcome}", outcome)
        if self._sink is not None:
            try:
                self._sink(b, outcome)
            except Exception as exc:
                raise StreamError(f"the sink failed on batch {b}: {exc}", exc) from exc
        now = time.time()
        latency = now - end
        windows = [now - r.end for r in outcome if isinstance(r, WindowResult)]
        self.metrics_state.latencies.append(latency)
        self.metrics_state.window_latencies.extend(windows)
        self.metrics_state.batches += 1
        self.metrics_state.output_records += len(outcome)
        inputs = None
        if self.metrics_state.input_records is not None:
            inputs = self.source.batch_records(b, self.batch_interval) or 0
            self.metrics_state.input_records += inputs
        self._report(b, now, latency, windows, inputs, len(outcome), self._source_lag())

    def _source_lag(self) -> int | None:
        """The source's lag (records not read yet), asked at most once a second: asking may cost
        the source a round trip (redis_stream asks Redis), and delivery must not wait on it."""
        if time.monotonic() >= self._lag_due:
            self._lag_due = time.monotonic() + LAG_INTERVAL
            try:
                self.metrics_state.source_lag = self.source.lag()
            except Exception as exc:  # noqa: BLE001 - a figure for people: never stop the stream for it
                log.warning("source_lag_failed", error=repr(exc))
                self.metrics_state.source_lag = None
        return self.metrics_state.source_lag

    def _report(self, b: int, now: float, latency: float, windows: list[float], inputs: int | None, outputs: int,
                lag: int | None) -> None:
        """The batch's facts: kept for progress(), and told to the scheduler (its dashboard and
        metrics), without waiting for an answer."""
        run_id, size = self._group
        records = inputs if inputs is not None else outputs
        self._last_progress = {
            "batch": b, "timestamp": now, "latency": latency, "window_latency": max(windows) if windows else None,
            "input_records": inputs, "output_records": outputs, "group_size": size,
            "input_rate": inputs / self.batch_interval if inputs is not None else None,
            "processing_rate": records / latency if latency > 0 else 0.0, "skipped": self.metrics_state.skipped,
            "source_lag": lag,
        }
        self.ctx.client.report_progress(StreamProgress(
            stream_id=self.stream_id, run_id=run_id or "-", batch=b, latency=max(0.0, latency), window_latencies=windows,
            input_records=-1 if inputs is None else inputs, output_records=outputs, group_size=size,
            source_lag=-1 if lag is None else lag))

    def _await_executors(self) -> None:
        """After a scheduler restart: until executors have registered with the new one (their
        number holds for a few heartbeats), so the resumed state is spread over all of them."""
        settings = self.ctx.settings
        deadline = time.monotonic() + settings.connect_timeout
        counts: list[int] = []
        while time.monotonic() < deadline:
            counts.append(len(self.ctx.status().executors))
            if len(counts) >= 4 and counts[-1] > 0 and len(set(counts[-4:])) == 1:
                return
            time.sleep(settings.heartbeat_interval)  # executors register again at their next beat
        if not counts or counts[-1] == 0:
            raise StreamError("the scheduler restarted and no executor registered with it", None)


class WindowedStream:
    """Event-time windows over a stream of (key, value) records (made by Stream.window); finish
    it with count(), reduce(fn) or aggregate(zero, add, merge) to get a Stream of WindowResult.

    Events go to windows by event_time(value); a window is emitted in the batch whose end
    reaches the window's end. The window logic itself is squall.windows: here it becomes a stage
    of the stream (a map-side fold, a shuffle by key, and a window step on the key's executor).
    """

    def __init__(self, stream: Stream, spec: WindowSpec) -> None:
        self.stream = stream
        self.spec = spec

    def count(self, partitions: int | None = None) -> Stream:
        """WindowResult(key, start, end, number of events) for every (key, window) as it closes;
        the window state is kept in `partitions` partitions (default: the stream's)."""
        return self._closed_by(COUNT, partitions)

    def reduce(self, fn: Callable[[Any, Any], Any], partitions: int | None = None) -> Stream:
        """WindowResult(key, start, end, values combined with fn(a, b)) for every (key, window)."""
        return self._closed_by(reducing(fn), partitions)

    def aggregate(self, zero: Callable[[], Any], add: Callable[[Any, Any], Any], merge: Callable[[Any, Any], Any],
                  partitions: int | None = None) -> Stream:
        """WindowResult(key, start, end, value) for every (key, window), when the window closes."""
        return self._closed_by(Aggregation(zero, add, merge), partitions)

    def _closed_by(self, agg: Aggregation, partitions: int | None) -> Stream:
        spec, state_id = self.spec, uuid.uuid4().hex[:16]

        def transform(ds: Dataset, clock: StreamClock) -> Dataset:
            op = WindowOperator(spec, agg, clock.start, clock.interval)
            folded = ds.map_partitions(functools.partial(window_fold, spec, agg))
            return folded.group_by_key(partitions)._update_state(op, state_id, kind="window")

        return self.stream._then(transform)


def boundary_overhead(coordination_seconds: float, group_span: float) -> float:
    """The share of a group's span spent coordinating at its boundary: the driver building and
    submitting the group plus one round trip to the scheduler, over G batch intervals."""
    if group_span <= 0:
        return 0.0
    return min(1.0, max(0.0, coordination_seconds) / group_span)


class _KeyBy:
    """A picklable (fn(record), record) maker, so key_by ships like any other function."""

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn

    def __call__(self, record: Any) -> tuple[Any, Any]:
        return (self.fn(record), record)
