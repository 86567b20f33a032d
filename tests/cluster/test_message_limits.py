"""Records and blocks over max_message_bytes: the job fails with an error naming the limit and
the setting, and the cluster is unharmed (a message over the limit would make ZeroMQ drop the
connection it travels on: executors cut off, jobs hung). A small limit stands in for 256 MB."""

from __future__ import annotations

import operator
import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import squall
from squall import LocalCluster
from tests.cluster.helpers import run_with_deadline
from tests.conftest import fast_settings

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(90)]

LIMIT = 64 * 1024
EXECUTORS = ["executor-0", "executor-1", "executor-2"]


def incompressible(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


@pytest.fixture(scope="module")
def small_cluster() -> Iterator[LocalCluster]:
    with LocalCluster(executors=3, settings=fast_settings(max_message_bytes=LIMIT)) as cluster:
        yield cluster


def fails_cleanly(cluster: LocalCluster, job: Callable[[squall.Context], Any]) -> squall.JobError:
    """Run `job` on a fresh connection: it must fail promptly with a JobError, and afterwards
    every executor is still registered and a job using them all succeeds (on a new connection:
    the failed one may hold code too large to ship)."""
    with cluster.connect() as ctx:
        finished, outcome, _ = run_with_deadline(lambda: job(ctx), timeout=15.0)
        assert finished, "the job hung"
        assert isinstance(outcome, squall.JobError), repr(outcome)
    with cluster.connect() as ctx:
        assert sorted(e.executor_id for e in ctx.status().executors) == EXECUTORS
        finished, after, _ = run_with_deadline(
            lambda: dict(ctx.range(60, partitions=6).map(lambda x: (x % 3, 1)).reduce_by_key(operator.add, 3).collect()), timeout=15.0
        )
        assert finished and after == {0: 20, 1: 20, 2: 20}, repr(after)
    return outcome


def names_the_limit(err: Exception) -> None:
    assert f"max_message_bytes={LIMIT}" in str(err) and "SQUALL_MAX_MESSAGE_BYTES" in str(err), str(err)


def test_a_result_partition_over_the_limit(small_cluster: LocalCluster) -> None:
    err = fails_cleanly(small_cluster, lambda ctx: ctx.range(3, partitions=3).map(lambda x: incompressible(LIMIT + 100, x)).collect())
    assert isinstance(err, squall.TaskError) and err.error_type == "ResultTooLarge"
    names_the_limit(err)


def over_the_limit_in_all(ctx: squall.Context, preschedule: bool) -> Any:
    """A job whose result partitions each fit in a message, but not all together."""
    data = ctx.range(3, partitions=3).map(lambda x: incompressible(LIMIT // 2, x))
    return ctx.run_jobs([data], preschedule=preschedule)


@pytest.mark.parametrize("preschedule", [True, False])
def test_a_job_result_over_the_limit_in_all(small_cluster: LocalCluster, preschedule: bool) -> None:
    """Each result partition fits, but the driver receives them in one message: results through
    the scheduler (BSP; Drizzle with direct_results off)."""
    relayed = small_cluster.settings.replace(direct_results=False)
    with squall.connect(small_cluster.address, relayed) as ctx:
        finished, err, _ = run_with_deadline(lambda: over_the_limit_in_all(ctx, preschedule), timeout=15.0)
    assert finished, "the job hung"
    assert isinstance(err, squall.TaskError) and err.error_type == "ResultTooLarge", repr(err)
    assert "the result of job" in str(err)
    names_the_limit(err)


def test_a_job_result_over_the_limit_in_all_sent_straight_to_the_driver_arrives_whole(small_cluster: LocalCluster) -> None:
    """Results sent straight to the driver come one message per partition: only each partition
    must fit."""
    with small_cluster.connect() as ctx:
        finished, results, _ = run_with_deadline(lambda: over_the_limit_in_all(ctx, preschedule=True), timeout=15.0)
    assert finished, "the job hung"
    assert results == [[incompressible(LIMIT // 2, x) for x in range(3)]]


@pytest.mark.parametrize("preschedule", [True, False])
def test_a_shuffle_block_over_the_limit(small_cluster: LocalCluster, preschedule: bool) -> None:
    def job(ctx: squall.Context) -> Any:
        # One key: at least two of the three blocks travel to another executor.
        data = ctx.range(3, partitions=3).map(lambda x: (1, incompressible(LIMIT + 100, x))).group_by_key(3).map(lambda kv: len(kv[1]))
        return ctx.run_jobs([data], preschedule=preschedule)

    names_the_limit(fails_cleanly(small_cluster, job))


def test_an_exception_quoting_a_record_over_the_limit(small_cluster: LocalCluster) -> None:
    def reject(x: int) -> int:
        raise ValueError(f"bad record {incompressible(LIMIT, x).hex()}")

    err = fails_cleanly(small_cluster, lambda ctx: ctx.range(3, partitions=3).map(reject).collect())
    assert isinstance(err, squall.TaskError) and err.error_type == "ValueError"
    assert "characters cut" in str(err) and "bad record" in str(err)
    assert "reject" in err.remote_traceback  # the traceback keeps its start and its end


def test_a_record_from_the_driver_over_the_limit(small_cluster: LocalCluster) -> None:
    err = fails_cleanly(small_cluster, lambda ctx: ctx.parallelize([incompressible(LIMIT + 100)], 1).collect())
    names_the_limit(err)


def test_code_sent_in_parts_over_the_limit_in_all(small_cluster: LocalCluster) -> None:
    """Two broadcasts, each sent with its own run, used together: an executor new to both would
    get them in one launch message."""

    def job(ctx: squall.Context) -> Any:
        first, second = ctx.broadcast(incompressible(LIMIT * 6 // 10, 1)), ctx.broadcast(incompressible(LIMIT * 6 // 10, 2))
        assert ctx.range(1, partitions=1).map(lambda x: len(first.value)).collect() == [LIMIT * 6 // 10]
        assert ctx.range(1, partitions=1).map(lambda x: len(second.value)).collect() == [LIMIT * 6 // 10]
        return ctx.range(3, partitions=3).map(lambda x: len(first.value) + len(second.value)).collect()

    err = fails_cleanly(small_cluster, job)
    assert "the submission (with the code it uses)" in str(err)
    names_the_limit(err)
