"""The cluster's snapshot on real processes: a running stream's batches (reported by its driver,
timed by the scheduler), the executors as their heartbeats tell, a long batch job's stages as its
tasks finish, and Stream.progress()."""

from __future__ import annotations

import threading
import time

import pytest

from squall import LocalCluster
from tests.cluster.helpers import keyed_rate_count
from tests.conftest import fast_settings
from tests.polling import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(90)]


def test_a_running_stream_and_a_long_batch_job_show_in_the_snapshot() -> None:
    with LocalCluster(executors=3, settings=fast_settings()) as cluster, cluster.connect() as ctx:
        stream = keyed_rate_count(ctx, lambda b, records: None, rate=2_000, partitions=2, interval=0.1, group_size=2, keys=5).start()
        try:
            assert stream.progress() is None or stream.progress()["batch"] >= 0
            shown = wait_until(lambda: (s := ctx.snapshot())["streams"] and len(s["streams"][0]["points"]) >= 5 and s,
                               timeout=30, what="five batches of the stream in the snapshot")
            (row,) = shown["streams"]
            assert row["run"] == stream.stream_id and row["batches"] >= 5 and row["input_rate"] > 0
            point = row["points"][-1]
            assert point["latency"] > 0 and point["input_records"] > 0 and point["group_size"] == 2
            assert abs(point["scheduling_delay"] + point["processing_time"] - point["latency"]) < 1e-6
            assert sorted(e["id"] for e in shown["executors"]) == sorted(cluster.executor_names())
            assert all(e["memory_bytes"] > 10_000_000 for e in shown["executors"])  # a Python process's resident memory
            progress = stream.progress()
            assert progress is not None and progress["input_records"] > 0 and progress["latency"] > 0 and progress["group_size"] == 2

            # A batch job of 6 half-second tasks on 3 executors: its stage is seen part done.
            answer: list[int] = []
            job = threading.Thread(target=lambda: answer.append(ctx.range(6, partitions=6).map(lambda x: time.sleep(0.5) or x).count()))
            job.start()
            seen = wait_until(lambda: [stage for run in ctx.snapshot()["runs"] if run["kind"] == "jobs" and run["priority"] == "batch"
                                       for stage in run["stages"] if 0 < stage["done"] < stage["tasks"]],
                              timeout=30, interval=0.05, what="the batch job's first stage part done")
            assert seen[0]["tasks"] == 6
            job.join(timeout=30)
            assert answer == [6]
        finally:
            stream.stop(timeout=30)
