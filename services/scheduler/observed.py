"""What the scheduler has seen lately, for people: the figures its metrics endpoint exports, and
the snapshot its dashboard and `squall status` show. Pure, and bounded whatever runs: the
scheduler core feeds it (a stream's progress reported by its driver, groups dispatched, runs
submitted and over, the log lines its handlers emit) and asks it for a snapshot.

What only the driver sees (a batch's latency to its sink, window latencies, records) comes with
StreamProgress; what only the scheduler sees (when a batch's group went out) it adds: a batch's
scheduling delay is how long after its interval ended its group was dispatched, and its
processing time is the rest of its latency.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from squall.common.histogram import Histogram
from squall.common.protocol import StreamProgress
from squall.common.quantiles import quantile
from squall.services.scheduler.membership import ExecutorRecord
from squall.services.scheduler.runs import SubmittedRun
from squall.services.scheduler.speeds import STALLED_SECONDS, ExecutorSpeeds

POINTS = 300  # recent batches kept per stream (the dashboard's plots)
STREAMS = 32  # streams kept (the least recently heard of goes first)
EVENTS = 100  # recent events kept
DISPATCHES = 20_000  # (run, batch) -> when its group went out, for the batches not yet reported
RATE_POINTS = 20  # rates are over the last this-many batches
RUNS = 1_000  # runs in flight remembered (kind, jobs, start)

# The log lines of the scheduler core that are events on the dashboard, and the kind each is.
EVENT_KINDS = {
    "executor_lost": "executor_lost",
    "executor_decommissioned": "executor_left",
    "replaying": "replaying",
    "job_failed": "job_failed",
    "speculating": "speculated",
    "state_handed_over": "state_moved",
    "executor_hung": "executor_hung",
}


@dataclass
class StreamRecord:
    stream_id: str
    points: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=POINTS))
    batches: int = 0
    last_batch: int = -1
    source_lag: int = -1  # records its source holds unread, as its driver last told (-1: cannot tell)


@dataclass
class RunRecord:
    kind: str  # "stream" (a group of a stream's batches) or "jobs"
    priority: str
    jobs: int
    started: float  # wall clock
    stream_id: str = ""


class Observatory:
    def __init__(self, clock_offset: float = 0.0) -> None:
        self.clock_offset = clock_offset  # wall clock minus the scheduler's monotonic clock
        self.address = self.dashboard_url = self.metrics_url = ""  # the server says where it listens
        self.started = 0.0  # wall clock, set at the first event
        self.streams: OrderedDict[str, StreamRecord] = OrderedDict()
        self.runs: dict[str, RunRecord] = {}
        self.events: deque[dict[str, Any]] = deque(maxlen=EVENTS)
        self._dispatched: OrderedDict[tuple[str, int], tuple[float, float]] = OrderedDict()  # -> (wall, batch end)
        self._recovering: dict[str, tuple[float, int]] = {}  # run -> (loss, wall; the last batch replayed)
        # Counters and histograms (the metrics endpoint reads them); skipped records as groups report them.
        self.batches_completed = self.input_records = self.output_records = self.skipped_records = 0
        self.executor_losses = self.recoveries = self.speculative_copies = 0
        self.group_size = 0
        self.batch_latency = Histogram()
        self.window_latency = Histogram()
        self.scheduling_delay = Histogram()
        self.processing_time = Histogram()
        self.recovery_duration = Histogram()

    def wall(self, now: float) -> float:
        return now + self.clock_offset

    # --- fed by the scheduler core -----------------------------------------------------------

    def submitted(self, run_id: str, jobs: int, stream_id: str, priority: str, now: float) -> None:
        self.runs[run_id] = RunRecord("stream" if stream_id else "jobs", priority, jobs, self.wall(now), stream_id)
        while len(self.runs) > RUNS:  # a run whose end went unseen (its driver vanished) ages out
            del self.runs[next(iter(self.runs))]

    def run_over(self, run_id: str) -> None:
        self.runs.pop(run_id, None)
        self._recovering.pop(run_id, None)

    def dispatched(self, run_id: str, batches: list[tuple[int, float]], now: float) -> None:
        """A group of the run went out: its jobs' (batch, batch end as wall clock; 0: none)."""
        self.group_size = len(batches)
        wall = self.wall(now)
        for batch, end in batches:
            if end:
                self._dispatched[(run_id, batch)] = (wall, end)
        while len(self._dispatched) > DISPATCHES:
            self._dispatched.popitem(last=False)

    def event(self, kind: str, detail: str, now: float, seconds: float | None = None) -> None:
        self.events.append({"t": self.wall(now), "kind": kind, "detail": detail, "seconds": seconds})

    def logged(self, name: str, fields: dict[str, Any], now: float) -> None:
        """A log line of the core: the ones that are events become events, and count."""
        if name == "run_cancelled":
            self.run_over(str(fields.get("run", "")))
        kind = EVENT_KINDS.get(name)
        if kind is None:
            return
        if kind == "executor_lost":
            self.executor_losses += 1
        elif kind == "speculated":
            self.speculative_copies += 1
        elif kind == "replaying" and fields.get("batches"):
            run = str(fields.get("run", ""))
            lost_at = self._recovering.get(run, (self.wall(now), 0))[0]
            self._recovering[run] = (lost_at, max(fields["batches"]))
        detail = ", ".join(f"{k}={v}" for k, v in fields.items() if k not in ("stimulus", "batches", "new_owners"))
        self.event(kind, detail, now)

    def progress(self, msg: StreamProgress, now: float) -> None:
        """A stream's driver delivered a batch."""
        record = self.streams.get(msg.stream_id)
        if record is None:
            record = self.streams[msg.stream_id] = StreamRecord(msg.stream_id)
            if len(self.streams) > STREAMS:
                self.streams.popitem(last=False)
        self.streams.move_to_end(msg.stream_id)
        sent = self._dispatched.pop((msg.run_id, msg.batch), None)
        delay = max(0.0, min(msg.latency, sent[0] - sent[1])) if sent is not None else 0.0
        window = max(msg.window_latencies) if msg.window_latencies else None
        record.points.append({
            "t": self.wall(now), "batch": msg.batch, "latency": msg.latency, "window_latency": window,
            "scheduling_delay": delay, "processing_time": msg.latency - delay, "input_records": max(0, msg.input_records),
            "output_records": msg.output_records, "group_size": msg.group_size,
            "source_lag": msg.source_lag if msg.source_lag >= 0 else None,
        })
        record.batches += 1
        record.last_batch = max(record.last_batch, msg.batch)
        record.source_lag = msg.source_lag
        self.batches_completed += 1
        self.input_records += max(0, msg.input_records)
        self.output_records += msg.output_records
        self.batch_latency.observe(msg.latency)
        for latency in msg.window_latencies:
            self.window_latency.observe(latency)
        self.scheduling_delay.observe(delay)
        self.processing_time.observe(msg.latency - delay)
        recovering = self._recovering.get(msg.run_id)
        if recovering is not None and msg.batch >= recovering[1]:  # the last batch replayed is delivered
            del self._recovering[msg.run_id]
            seconds = self.wall(now) - recovering[0]
            self.recoveries += 1
            self.recovery_duration.observe(seconds)
            self.event("recovered", f"stream={msg.stream_id}, up to batch {msg.batch}", now, seconds)

    # --- read ---------------------------------------------------------------------------------

    def source_lag(self) -> int:
        """Records the streams' sources hold unread, summed over the streams whose sources can tell."""
        return sum(r.source_lag for r in list(self.streams.values()) if r.source_lag >= 0)

    def stream_rows(self) -> list[dict[str, Any]]:
        rows = []
        for record in self.streams.values():
            points = list(record.points)
            recent = points[-RATE_POINTS:]
            span = recent[-1]["t"] - recent[0]["t"] if len(recent) > 1 else 0.0
            processing = sum(p["processing_time"] for p in recent)
            records = sum(p["input_records"] or p["output_records"] for p in recent)
            latencies = [p["latency"] for p in points]
            rows.append({
                "run": record.stream_id, "batches": record.batches, "last_batch": record.last_batch,
                "group_size": points[-1]["group_size"] if points else 0,
                "input_rate": sum(p["input_records"] for p in recent[1:]) / span if span > 0 else 0.0,
                "processing_rate": records / processing if processing > 0 else 0.0,
                "latency_p50": quantile(latencies, 0.5) if latencies else 0.0,
                "latency_p99": quantile(latencies, 0.99) if latencies else 0.0,
                "source_lag": record.source_lag if record.source_lag >= 0 else None,
                "points": points,
            })
        return rows


def snapshot(observed: Observatory, executors: list[ExecutorRecord], speeds: ExecutorSpeeds, runs: dict[str, SubmittedRun],
             now: float) -> dict[str, Any]:
    """The snapshot (docs/observability.md): every key always there, unknowns 0 or empty."""
    wall = observed.wall(now)
    persisted: dict[str, list[int]] = {}  # dataset -> [executors holding some, bytes]
    for record in executors:
        for dataset_id, size in record.persisted.items():
            entry = persisted.setdefault(dataset_id, [0, 0])
            entry[0] += 1
            entry[1] += size
    return {
        "time": wall,
        "scheduler": {"address": observed.address, "uptime": wall - observed.started if observed.started else 0.0,
                      "dashboard": observed.dashboard_url, "metrics": observed.metrics_url},
        "executors": [_executor_row(record, speeds, now) for record in executors],
        "streams": observed.stream_rows(),
        "runs": [_run_row(run, observed.runs.get(run.run_id), executors) for run in runs.values()],
        "persisted": [{"dataset": d, "executors": n, "bytes": size} for d, (n, size) in sorted(persisted.items())],
        "events": list(observed.events),
    }


def _executor_row(record: ExecutorRecord, speeds: ExecutorSpeeds, now: float) -> dict[str, Any]:
    return {
        "id": record.executor_id, "address": record.data_address, "metrics": record.metrics_address, "slots": record.slots,
        "latency_tasks": record.latency_tasks, "batch_tasks": record.batch_tasks, "suspended_tasks": record.suspended_tasks,
        "memory_bytes": record.memory_bytes, "persisted_bytes": sum(record.persisted.values()),
        "stalled": record.stall >= STALLED_SECONDS, "slowness": round(speeds.slowness(record.executor_id), 3),
        "last_beat_age": max(0.0, now - record.last_seen), "leaving": record.leaving, "hung": bool(record.hung),
    }


def _run_row(run: SubmittedRun, seen: RunRecord | None, executors: list[ExecutorRecord]) -> dict[str, Any]:
    """A run in flight: its jobs done of all, and its current jobs' stages, tasks done of all (a
    BSP job's as the scheduler counts them; a group's as executors' heartbeats tell)."""
    in_flight = [job for group in run.groups if not group.speculative for job in group.jobs if not job.replay_only]
    unfinished = sum(1 for job in in_flight if not job.done) + (1 if run.bsp is not None else 0)
    total = seen.jobs if seen is not None else len(run.queue) + unfinished
    stages: list[dict[str, int]] = []
    if run.bsp is not None:
        stages = [{"stage": i, "tasks": s.spec.partitions, "done": s.spec.partitions - len(run.bsp.progress[i].remaining)}
                  for i, s in enumerate(run.bsp.plan.stages)]
    elif in_flight:
        depth = max(len(job.plan.stages) for job in in_flight)
        tasks, done = [0] * depth, [0] * depth
        for job in in_flight:
            for i, stage in enumerate(job.plan.stages):
                tasks[i] += stage.spec.partitions
                done[i] += sum(record.batch_done.get(f"{job.wire_id}:{stage.stage_id}", 0) for record in executors)
        stages = [{"stage": i, "tasks": tasks[i], "done": min(done[i], tasks[i])} for i in range(depth)]
    return {
        "run": run.run_id, "kind": seen.kind if seen is not None else "jobs", "stream": seen.stream_id if seen is not None else "",
        "priority": run.priority, "jobs": total,
        "jobs_done": max(0, total - len(run.queue) - unfinished), "started": seen.started if seen is not None else 0.0,
        "stages": stages,
    }
