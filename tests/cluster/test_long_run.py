"""A stream that runs for thousands of micro-batches holds a constant amount: every per-job,
per-batch, per-group and per-run table of the scheduler, shuffle_meta and the executors stays
under a bound that does not depend on the number of batches (GetTracked), so do the driver's
metric series, and the checkpoint directory's file count stays flat."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from squall.common.recent_ids import FENCE_MEMORY
from squall.services.executor.checkpoints import KEEP_STATE_SNAPSHOTS

from squall import LocalCluster, sources
from squall.health import tracked
from tests.conftest import fast_settings
from tests.polling import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(240)]

INTERVAL = 0.005  # short batches: thousands of them in seconds
FIRST_LOOK, LAST_LOOK = 600, 2_400  # batches
STAGE_CACHE = 32
METRICS_WINDOW = 500
PARTITIONS = 4
BOUND = 200  # entries any per-job/per-batch table may hold, at any number of batches
# What waits for keyed state's next checkpoint (the scheduler's retained plans of batches not yet
# in a snapshot of every partition, the executors' map-output checkpoints of those batches) is
# bounded by how far checkpoints lag behind the stream: a few groups on a quiet machine, hundreds
# of these 5 ms batches on a busy one. Kept forever, it would be every batch: LAST_LOOK of them.
LAG_BOUND = LAST_LOOK // 2
MAX_CHECKPOINT_FILES = PARTITIONS * KEEP_STATE_SNAPSHOTS + PARTITIONS * LAG_BOUND
# Fence windows: ids of jobs already over, kept (a bounded number of them) so that late messages
# are dropped; their bound is their window.
FENCES = {"executor": {"released": FENCE_MEMORY, "inbox.released": FENCE_MEMORY}, "shuffle_meta": {"forgotten": FENCE_MEMORY},
          "scheduler": {"states_retained": LAG_BOUND}}


def checkpoint_files(root: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(root))


def snapshot(cluster: LocalCluster, ctx) -> dict[str, dict[str, int]]:  # type: ignore[no-untyped-def]
    seen = {"scheduler": tracked(cluster.address, cluster.settings).sizes,
            "shuffle_meta": tracked(cluster.shuffle_meta_address, cluster.settings).sizes}
    for info in ctx.status().executors:
        seen[info.executor_id] = tracked(info.data_address, cluster.settings).sizes
    return seen


def over_bound(seen: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    bad = {}
    for service, sizes in seen.items():
        fences = FENCES.get("executor" if service.startswith("executor") else service, {})
        over = {k: v for k, v in sizes.items() if v > fences.get(k, BOUND)}
        if over:
            bad[service] = over
    return bad


def test_thousands_of_batches_leave_every_table_bounded_and_checkpoints_flat() -> None:
    settings = fast_settings(executor_stage_cache=STAGE_CACHE, metrics_window=METRICS_WINDOW, checkpoint_every_groups=2)
    with LocalCluster(executors=3, settings=settings) as cluster, cluster.connect() as ctx:
        events = sources.rate(4_000, partitions=PARTITIONS, record=lambda p, i, t: i % 500)
        stream = (ctx.stream(events, batch_interval=INTERVAL)
                  .map(lambda key: (key, 1))
                  .update_state_by_key(lambda values, old: (old or 0) + sum(values), partitions=PARTITIONS)
                  .foreach_batch(lambda batch, records: None)
                  .start())
        try:
            looks = []
            for batches in (FIRST_LOOK, LAST_LOOK):
                wait_until(lambda b=batches: stream.metrics_state.batches >= b, timeout=100, what=f"{batches} batches")
                looks.append((snapshot(cluster, ctx), checkpoint_files(Path(cluster.settings.checkpoint_root))))
            metrics = stream.metrics_state
            assert len(metrics.latencies) <= METRICS_WINDOW and len(metrics.group_sizes) <= METRICS_WINDOW
            assert len(ctx.client._route) <= BOUND and len(ctx.client._boxes) <= BOUND
        finally:
            stream.stop(timeout=30)
    (first, first_files), (last, last_files) = looks
    assert not over_bound(first) and not over_bound(last), f"tables past their bound: {over_bound(first)} then {over_bound(last)}"
    assert last["executor-0"]["stages"] <= STAGE_CACHE + BOUND // 4
    # Flat, not equal: what is on disk is each partition's newest snapshots plus the map outputs of
    # the batches since the oldest of them, which varies with how far checkpoint writing lags.
    # Nothing collected would be four map outputs a batch: thousands here.
    assert 0 < first_files <= MAX_CHECKPOINT_FILES and 0 < last_files <= MAX_CHECKPOINT_FILES, (
        f"checkpoint files grew: {first_files} at batch {FIRST_LOOK}, {last_files} at {LAST_LOOK}")


def test_connections_to_peers_are_closed_when_idle_and_made_again_when_needed() -> None:
    """An executor that died (or left) must not keep a socket open on every survivor for weeks."""
    settings = fast_settings(shuffle_fetch_timeout=0.5)
    with LocalCluster(executors=3, settings=settings) as cluster, cluster.connect() as ctx:
        def shuffle() -> list[tuple[int, int]]:
            return sorted(ctx.range(300, partitions=6).map(lambda x: (x % 6, 1)).reduce_by_key(lambda a, b: a + b, 6).collect())

        assert shuffle() == [(k, 50) for k in range(6)]
        victim = ctx.status().executors[0]
        survivors = [e for e in ctx.status().executors if e.executor_id != victim.executor_id]
        assert any(tracked(e.data_address, cluster.settings).sizes["peers"] for e in survivors)
        cluster.processes[victim.executor_id].kill()
        wait_until(lambda: len(ctx.status().executors) == 2, timeout=10, what="the kill noticed")
        wait_until(lambda: all(tracked(e.data_address, cluster.settings).sizes["peers"] == 0 for e in survivors),
                   timeout=10, what="idle peer sockets closed")
        assert shuffle() == [(k, 50) for k in range(6)]  # peers needed again are connected again
