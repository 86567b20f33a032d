"""An executor's Prometheus metrics, read from its core and checkpointer when scraped.

Runs on the metrics endpoint's HTTP thread while the loop thread changes the tables: it only
reads, copying a table (list(d.values())) before going through it, and reads `state.flow` once
(a flow written off is replaced whole).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import Metric
from prometheus_client.registry import Collector
from squall.common import metric_families as families
from squall.services.executor.checkpoints import Checkpointer
from squall.services.executor.local_scheduler import BATCH
from squall.services.executor.state import ExecutorState
from squall.services.executor.task_states import TaskState

SERVICE = "executor"


def task_counts(state: ExecutorState) -> dict[tuple[str, ...], float]:
    """Tasks launched here and not over, by (priority, state): running (or waiting for a lane)
    or, of the batch ones, suspended for latency work."""
    flow = state.flow
    tasks = list(flow.tasks.values())
    batch = sum(1 for local in tasks if local.lane == BATCH)
    batch_running = flow.batch_running
    suspended = 1 if batch_running is not None and batch_running.state is TaskState.SUSPENDED else 0
    return {("latency", "running"): len(tasks) - batch, ("batch", "running"): batch - suspended, ("batch", "suspended"): suspended}


class ExecutorCollector(Collector):
    def __init__(self, state: ExecutorState, checkpoints: Checkpointer) -> None:
        self.state = state
        self.checkpoints = checkpoints

    def collect(self) -> Iterator[Metric]:
        state, work = self.state, self.state.work
        yield families.labelled_gauge("squall_tasks", "Tasks launched on this executor and not over, by priority and state.",
                                      SERVICE, ("priority", "state"), task_counts(state))
        yield families.labelled_counter("squall_tasks_completed", "Tasks this executor ran to their end (succeeded or failed).",
                                        SERVICE, ("priority",), {(p,): n for p, n in dict(work.tasks_completed).items()})
        yield families.counter("squall_shuffle_bytes_pushed", "Shuffle block bytes pushed to reducers on other executors.",
                               SERVICE, work.shuffle_bytes_pushed)
        yield families.counter("squall_shuffle_bytes_fetched", "Shuffle block bytes fetched from other executors.",
                               SERVICE, work.shuffle_bytes_fetched)
        yield families.counter("squall_skipped_records", "Records user functions raised on, skipped (bad_records=\"skip\").",
                               SERVICE, work.skipped_records)
        yield families.counter("squall_task_suspensions", "Batch tasks suspended so that latency tasks run.",
                               SERVICE, state.counters.suspensions)
        yield families.gauge("squall_persisted_bytes", "Bytes of persisted dataset partitions held (Dataset.persist).",
                             SERVICE, state.flow.persisted.bytes)
        yield families.histogram("squall_checkpoint_duration_seconds",
                                 "Keyed-state checkpoints: from the snapshot taken after its batch (pickling included) to it durable.",
                                 SERVICE, self.checkpoints.state_write_seconds)
        yield families.counter("squall_checkpoint_bytes", "Bytes of checkpoints written (state snapshots and map outputs).",
                               SERVICE, self.checkpoints.bytes_written)
