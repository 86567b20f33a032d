"""The scheduler's Prometheus metrics, read from its core when scraped.

Runs on the metrics endpoint's HTTP thread while the loop thread changes the core: it only
reads, copying a table (dict(d), list(d.values())) before going through it. The counters and
histograms of what the cluster did (batches, latencies, losses, recoveries) are the core's
Observatory's (observed.py), kept as plain numbers on the hot path.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import Metric
from prometheus_client.registry import Collector
from squall.common import metric_families as families
from squall.services.scheduler.membership import ExecutorRecord
from squall.services.scheduler.state import SchedulerState

SERVICE = "scheduler"

# The Observatory's counters: (its attribute, the metric name without _total, help).
OBSERVED_COUNTERS = (
    ("batches_completed", "squall_batches_completed", "Stream micro-batches delivered to their sink."),
    ("input_records", "squall_input_records", "Records read by streams' sources (batches whose sources know it)."),
    ("output_records", "squall_output_records", "Records streams delivered to their sinks."),
    ("skipped_records", "squall_skipped_records", "Records user functions raised on, skipped (bad_records=\"skip\"), as executors' groups report them."),
    ("executor_losses", "squall_executor_losses", "Executors the scheduler declared lost (their process died or was cut off)."),
    ("recoveries", "squall_recoveries", "Streams recovered from a lost executor (the last batch replayed delivered)."),
    ("speculative_copies", "squall_speculative_copies", "Speculative copies launched of late micro-batches."),
)
# The Observatory's histograms: (its attribute, the metric name, help).
OBSERVED_HISTOGRAMS = (
    ("batch_latency", "squall_batch_latency_seconds", "Stream micro-batches: from the batch's end to its output at the sink."),
    ("window_latency", "squall_window_latency_seconds", "Windows: from the window's end to its result at the sink."),
    ("scheduling_delay", "squall_scheduling_delay_seconds", "Stream micro-batches: from the batch's end to its group dispatched to the executors."),
    ("processing_time", "squall_processing_time_seconds", "Stream micro-batches: from their group dispatched to the output at the sink."),
    ("recovery_duration", "squall_recovery_duration_seconds", "From an executor lost to the last batch replayed delivered."),
)


def task_counts(records: list[ExecutorRecord]) -> dict[tuple[str, ...], float]:
    """Tasks on the executors as their last heartbeats told, by (priority, state)."""
    latency = sum(r.latency_tasks for r in records)
    batch = sum(r.batch_tasks for r in records)
    suspended = sum(r.suspended_tasks for r in records)
    return {("latency", "running"): latency, ("batch", "running"): batch - suspended, ("batch", "suspended"): suspended}


class SchedulerCollector(Collector):
    def __init__(self, state: SchedulerState) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        state = self.state
        records = list(state.members.executors.values())
        yield families.gauge("squall_executors_alive", "Executors registered and not lost.", SERVICE, len(records))
        yield families.labelled_gauge("squall_tasks", "Tasks on all executors by priority and state, as their heartbeats tell.",
                                      SERVICE, ("priority", "state"), task_counts(records))
        observed = state.observed
        yield families.gauge("squall_group_size", "Micro-batches in the group the scheduler dispatched last (Drizzle).",
                             SERVICE, observed.group_size)
        yield families.gauge("squall_source_lag_records",
                             "Records streams' sources hold that no batch has read yet, as their drivers last told "
                             "(sources that can tell: redis_stream).", SERVICE, observed.source_lag())
        yield families.labelled_counter("squall_messages_received", "Messages the scheduler handled, by type.",
                                        SERVICE, ("type",), {(name,): n for name, n in dict(state.received).items()})
        yield families.labelled_counter("squall_messages_sent", "Messages the scheduler sent, by type.",
                                        SERVICE, ("type",), {(name,): n for name, n in dict(state.sent).items()})
        for attribute, name, doc in OBSERVED_COUNTERS:
            yield families.counter(name, doc, SERVICE, getattr(observed, attribute))
        for attribute, name, doc in OBSERVED_HISTOGRAMS:
            yield families.histogram(name, doc, SERVICE, getattr(observed, attribute))
