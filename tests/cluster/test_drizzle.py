"""Drizzle mode on a real cluster: groups, pre-scheduled reducers, plan caching, per-batch results."""

from __future__ import annotations

import operator
import os
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

import squall
from squall import LocalCluster
from tests.conftest import fast_settings

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(90)]

MODES = {
    "bsp": dict(preschedule=False),
    "preschedule": dict(preschedule=True, group_size=1),
    "group-3": dict(preschedule=True, group_size=3),
    "group-10-barrier": dict(preschedule=True, group_size=10, barrier=True),
}


def two_stage(ctx, batch: int, salt: int = 0):  # type: ignore[no-untyped-def]
    """Batch b: numbers b*1000 .. b*1000+999 folded into sums per x % 5."""
    base = batch * 1000
    return ctx.range(base, base + 1000, partitions=4).map(lambda x: (x % 5, x + salt)).reduce_by_key(operator.add, 3)


def expected_two_stage(batch: int, salt: int = 0) -> dict[int, int]:
    sums: Counter[int] = Counter()
    for x in range(batch * 1000, batch * 1000 + 1000):
        sums[x % 5] += x + salt
    return dict(sums)


@pytest.mark.parametrize("mode", list(MODES))
def test_every_mode_gives_the_same_results(ctx, mode: str) -> None:  # type: ignore[no-untyped-def]
    batches = [two_stage(ctx, b) for b in range(7)]
    results = ctx.run_jobs(batches, **MODES[mode])
    assert [dict(r) for r in results] == [expected_two_stage(b) for b in range(7)]
    grouped = ctx.range(60, partitions=3).map(lambda x: (x % 4, x)).group_by_key(2).map(lambda kv: (kv[0], sorted(kv[1])))
    single = ctx.range(100, partitions=4).map(lambda x: x * x)
    g, s = ctx.run_jobs([grouped, single], **MODES[mode])
    assert sorted(g) == [(k, [x for x in range(60) if x % 4 == k]) for k in range(4)]
    assert s == [x * x for x in range(100)]


def test_a_second_group_of_the_same_plan_sends_no_code(ctx) -> None:  # type: ignore[no-untyped-def]
    salt = uuid.uuid4().int % 1000  # fresh code: no earlier test can have shipped it
    ctx.run_jobs([two_stage(ctx, b, salt) for b in range(8)], group_size=4)
    first, second = ctx.last_run.groups
    assert first.code_bytes > 0
    assert second.code_bytes == 0
    assert second.launch_bytes < first.launch_bytes
    assert first.jobs == second.jobs == 4


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "relayed"])
def test_a_prescheduled_group_needs_no_per_task_scheduling_messages(cluster: LocalCluster, direct: bool) -> None:
    """Results go straight from the executors to the driver: the scheduler neither receives a
    ResultPartition nor sends a JobDone. With direct_results off, it relays them."""
    with squall.connect(cluster.address, cluster.settings.replace(direct_results=direct)) as ctx:
        before = ctx.metrics()
        results = ctx.run_jobs([two_stage(ctx, b) for b in range(20)], group_size=10)
        after = ctx.metrics()
        received = {k: after.received.get(k, 0) - before.received.get(k, 0) for k in after.received}
        sent = {k: after.sent.get(k, 0) - before.sent.get(k, 0) for k in after.sent}
        assert [dict(r) for r in results] == [expected_two_stage(b) for b in range(20)]
        executors = len(ctx.status().executors)
        stats = ctx.last_run
    assert received.get("TaskFinished", 0) == 0
    assert received.get("TaskFailed", 0) == 0
    assert sent.get("LaunchTasks", 0) == 0
    assert sent["LaunchGroup"] == 2 * executors  # one message per executor per group
    assert received["GroupDone"] == 2 * executors  # one report per executor per group
    if direct:
        assert received.get("ResultPartition", 0) == 0 and sent.get("JobDone", 0) == 0
    else:
        assert received["ResultPartition"] == 20 * 3  # result data, relayed, not scheduling
        assert sent["JobDone"] == 20
    assert stats is not None and len(stats.batch_intervals) == 20 and all(t > 0 for t in stats.batch_finished_at)
    assert stats.first_elapsed > 0


def test_the_iterator_yields_batch_0_before_the_groups_last_batch_finishes(ctx, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    flag = tmp_path / "batch-0-seen"

    def wait_for_flag(kv):  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + 10
        while not flag.exists():  # the last batch cannot finish before the driver has batch 0
            if time.monotonic() > deadline:
                raise TimeoutError("the driver never received batch 0 while the group ran")
            time.sleep(0.005)
        return kv

    batches = [two_stage(ctx, b) for b in range(4)]
    batches.append(two_stage(ctx, 4).map(wait_for_flag))
    results = ctx.iter_jobs(batches, group_size=5)
    assert dict(next(results)) == expected_two_stage(0)
    flag.touch()
    assert [dict(r) for r in results] == [expected_two_stage(b) for b in range(1, 5)]


def _failing_batches(ctx, bad: int, count: int):  # type: ignore[no-untyped-def]
    def explode(x):  # type: ignore[no-untyped-def]
        raise ValueError(f"bad record {x}")

    return [two_stage(ctx, b) if b != bad else ctx.range(0, 40, partitions=4).map(explode).reduce_by_key(operator.add, 3) for b in range(count)]


def test_a_user_exception_in_batch_k_names_batch_k_and_later_groups_still_run(ctx) -> None:  # type: ignore[no-untyped-def]
    outcomes = ctx.run_jobs(_failing_batches(ctx, 5, 12), group_size=4, errors="return")
    err = outcomes[5]
    assert isinstance(err, squall.TaskError)
    assert err.batch == 5 and "batch 5" in str(err)
    assert "ValueError: bad record" in err.remote_traceback
    assert [dict(r) for i, r in enumerate(outcomes) if i != 5] == [expected_two_stage(b) for b in range(12) if b != 5]
    with pytest.raises(squall.TaskError, match="batch 5"):
        ctx.run_jobs(_failing_batches(ctx, 5, 12), group_size=4)
    seen = []
    with pytest.raises(squall.TaskError, match="batch 2"):
        for result in ctx.iter_jobs(_failing_batches(ctx, 2, 8), group_size=4):
            seen.append(dict(result))
    assert seen == [expected_two_stage(0), expected_two_stage(1)]
    assert dict(two_stage(ctx, 3).collect()) == expected_two_stage(3)


def test_large_blocks_are_announced_and_fetched_instead_of_pushed() -> None:
    settings = fast_settings(push_inline_max_bytes=0)  # every remote block goes the fetch way
    with LocalCluster(executors=3, settings=settings) as cluster, cluster.connect() as ctx:
        results = ctx.run_jobs([two_stage(ctx, b) for b in range(6)], group_size=3)
        assert [dict(r) for r in results] == [expected_two_stage(b) for b in range(6)]


def test_run_jobs_with_no_datasets_returns_nothing(ctx) -> None:  # type: ignore[no-untyped-def]
    assert ctx.run_jobs([]) == []


def test_an_iterator_abandoned_early_cancels_later_groups(ctx) -> None:  # type: ignore[no-untyped-def]
    marker = f"abandon-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    before = ctx.metrics().sent.get("LaunchGroup", 0)
    results = ctx.iter_jobs([two_stage(ctx, b, salt=len(marker)) for b in range(40)], group_size=2)
    assert dict(next(results)) == expected_two_stage(0, salt=len(marker))
    results.close()  # leaves the loop: the groups not yet dispatched are cancelled
    assert dict(two_stage(ctx, 1).collect()) == expected_two_stage(1)
    launched_groups = (ctx.metrics().sent.get("LaunchGroup", 0) - before) / len(ctx.status().executors)
    assert launched_groups < 20  # far fewer than the 20 groups of the whole run


def test_a_fast_stage_meeting_a_slow_record_does_not_look_like_a_dead_executor() -> None:
    settings = fast_settings()  # an executor silent for 0.3 s would be declared dead
    with LocalCluster(executors=2, settings=settings) as cluster, cluster.connect() as ctx:

        def maybe_slow(x):  # type: ignore[no-untyped-def]
            if x == 5_000_000:
                time.sleep(1.5)  # five death timeouts, on a stage that has always been quick
            return (x % 3, x)

        def batch(b: int):  # type: ignore[no-untyped-def]
            first = 5_000_000 - 40 + 10 * b  # the slow record is in the last batch only
            return ctx.range(first, first + 10, partitions=2).map(maybe_slow).reduce_by_key(operator.add, 2)

        results = ctx.run_jobs([batch(b) for b in range(5)], group_size=5)
        assert [sum(v for _, v in r) for r in results] == [sum(range(5_000_000 - 40 + 10 * b, 5_000_000 - 30 + 10 * b)) for b in range(5)]
        assert len(ctx.status().executors) == 2
