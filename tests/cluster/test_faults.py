"""Failures a user meets: their code raising, code that cannot ship, dead executors, no scheduler."""

from __future__ import annotations

import gc
import operator
import os
import signal
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest
from squall.common.partitioning import partition_of
from squall.common.serialization import SerializationError

import squall
from squall import LocalCluster
from tests.cluster import user_module
from tests.cluster.helpers import Background, executor_pid, free_tcp_port, run_with_deadline
from tests.conftest import fast_settings
from tests.polling import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(90)]

add = operator.add


def pids_marked(directory: Path, prefix: str) -> set[int]:
    return {int(p.name[len(prefix) :]) for p in directory.glob(prefix + "*")}


# --- user code raising ---------------------------------------------------------------------------


def test_user_exception_in_map_stage_is_a_task_error(ctx):  # type: ignore[no-untyped-def]
    def fail_on_13(x):  # type: ignore[no-untyped-def]
        if x == 13:
            raise ValueError(f"bad record {x}")
        return (x % 3, x)

    with pytest.raises(squall.TaskError) as info:
        ctx.range(40, partitions=4).map(fail_on_13).reduce_by_key(add).collect()
    err = info.value
    assert isinstance(err, squall.JobError)
    assert err.kind == "task"
    assert err.error_type == "ValueError"
    assert (err.stage_id, err.partition) == (0, 1)  # the map stage; 13 lies in partition 1 of 4
    assert 'raise ValueError(f"bad record {x}")' in err.remote_traceback
    assert "ValueError: bad record 13" in err.remote_traceback
    assert "fail_on_13" in err.remote_traceback
    assert "bad record 13" in str(err) and "executor-" in str(err)
    # the cluster is fine: the next job on the same context succeeds
    assert dict(ctx.range(40, partitions=4).map(lambda x: (x % 3, x)).reduce_by_key(add).collect()) == {
        0: sum(range(0, 40, 3)),
        1: sum(range(1, 40, 3)),
        2: sum(range(2, 40, 3)),
    }


def _nested_failing_function():  # type: ignore[no-untyped-def]
    def inner(x):  # type: ignore[no-untyped-def]
        if x == 13:
            raise ValueError(f"nested function got {x}")
        return x

    return inner


LAMBDA_THAT_FAILS = lambda x: x if x != 13 else 1 // 0  # noqa: E731


@pytest.mark.parametrize(
    ("kind", "expected_source", "expected_file"),
    [
        ("lambda", "LAMBDA_THAT_FAILS = lambda x: x if x != 13 else 1 // 0", __file__),
        ("nested", 'raise ValueError(f"nested function got {x}")', __file__),
        ("module", 'raise ValueError(f"module function got {x}")', user_module.__file__),
    ],
)
def test_task_error_shows_file_line_and_source_of_user_code(ctx, kind, expected_source, expected_file):  # type: ignore[no-untyped-def]
    fn = {"lambda": LAMBDA_THAT_FAILS, "nested": _nested_failing_function(), "module": user_module.reject_thirteen}[kind]
    with pytest.raises(squall.TaskError) as info:
        ctx.range(20, partitions=2).map(fn).collect()
    text = info.value.remote_traceback
    line = next(i for i, source in enumerate(Path(expected_file).read_text().splitlines(), 1) if expected_source in source)
    assert f'File "{expected_file}", line {line}, in ' in text
    assert expected_source in text
    assert "<dynamic-code>" not in text


def test_user_exception_after_shuffle_names_reduce_partition(ctx):  # type: ignore[no-untyped-def]
    def reject_key_two(kv):  # type: ignore[no-untyped-def]
        if kv[0] == 2:
            raise KeyError("no twos")
        return kv

    with pytest.raises(squall.TaskError) as info:
        ctx.range(30, partitions=3).map(lambda x: (x % 5, 1)).reduce_by_key(add, 3).map(reject_key_two).collect()
    assert info.value.error_type == "KeyError"
    assert (info.value.stage_id, info.value.partition) == (1, partition_of(2, 3))
    assert "reject_key_two" in info.value.remote_traceback
    assert ctx.range(5, partitions=3).collect() == [0, 1, 2, 3, 4]


def test_failure_is_reported_without_waiting_for_slow_siblings(ctx):  # type: ignore[no-untyped-def]
    def first_fails_others_slow(x):  # type: ignore[no-untyped-def]
        if x == 0:
            raise RuntimeError("fast failure")
        time.sleep(1.5)
        return x

    start = time.monotonic()
    with pytest.raises(squall.TaskError, match="fast failure"):
        ctx.range(4, partitions=4).map(first_fails_others_slow).collect()
    assert time.monotonic() - start < 1.0
    assert ctx.range(3, partitions=1).collect() == [0, 1, 2]  # runs once the slow tasks let go


def test_unpicklable_result_records_are_a_task_error(ctx):  # type: ignore[no-untyped-def]
    with pytest.raises(squall.TaskError) as info:
        ctx.range(3, partitions=1).map(lambda x: threading.Lock()).collect()
    assert info.value.error_type == "SerializationError"
    assert "lock" in str(info.value).lower()


# --- code that cannot ship -----------------------------------------------------------------------


@pytest.mark.parametrize("op", ["map", "filter", "flat_map", "map_partitions", "reduce_by_key", "reduce"])
def test_unpicklable_function_fails_when_the_dataset_is_built(ctx, op):  # type: ignore[no-untyped-def]
    lock = threading.Lock()

    def holds_a_lock(*args):  # type: ignore[no-untyped-def]
        with lock:
            return args

    ds = ctx.range(10, partitions=2)
    if op == "reduce_by_key":
        ds = ds.map(lambda x: (x, x))
    with pytest.raises(SerializationError) as info:
        getattr(ds, op)(holds_a_lock)  # raises here, before any action submits a job
    assert "holds_a_lock" in str(info.value)
    assert "lock" in str(info.value.__cause__ or info.value).lower()
    assert not isinstance(info.value, squall.JobError)


# --- executors dying -----------------------------------------------------------------------------


def kill_executor_1_mid_map(cluster: LocalCluster, ctx: squall.Context, tmp_path: Path) -> tuple[Background, float]:
    """Start a two-stage job of slow map tasks and SIGKILL executor-1 while it runs one; returns
    the job (running in the background) and when the kill happened."""

    def slow(x):  # type: ignore[no-untyped-def]
        (tmp_path / f"map-{executor_pid()}").touch()
        time.sleep(0.3)
        return (x % 3, x)

    victim = cluster.pids["executor-1"]
    job = Background(ctx.range(16, partitions=4).map(slow).reduce_by_key(add).collect)
    wait_until(lambda: victim in pids_marked(tmp_path, "map-"), timeout=10, what="executor-1 running a map task")
    killed_at = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    return job, killed_at


def test_executor_sigkilled_mid_job_is_replayed_by_the_survivors(tmp_path: Path) -> None:
    with LocalCluster(executors=4, settings=fast_settings()) as cluster, cluster.connect() as ctx:
        job, _ = kill_executor_1_mid_map(cluster, ctx, tmp_path)
        assert job.join(timeout=20), "the job hung after its executor died"
        assert dict(job.outcome) == {k: sum(x for x in range(16) if x % 3 == k) for k in range(3)}  # type: ignore[arg-type]
        assert "its connection dropped" in cluster.log_text("scheduler") and "replaying" in cluster.log_text("scheduler")
        wait_until(lambda: len(ctx.status().executors) == 3, timeout=5, what="three executors")


def test_executor_sigkilled_mid_bsp_job_fails_the_job_quickly(tmp_path: Path) -> None:
    settings = fast_settings(preschedule=False)
    with LocalCluster(executors=4, settings=settings) as cluster, cluster.connect() as ctx:
        job, killed_at = kill_executor_1_mid_map(cluster, ctx, tmp_path)

        assert job.join(timeout=settings.death_timeout + 10), "the job hung after its executor died"
        err = job.outcome
        assert isinstance(err, squall.ExecutorLostError), repr(err)
        assert isinstance(err, squall.JobError) and err.kind == "executor_lost"
        assert "executor-1" in str(err)
        assert err.stage_id == 0
        detected = job.finished_at - killed_at  # type: ignore[operator]
        assert detected < settings.death_timeout + 2.0, f"took {detected:.2f}s to notice"

        # survivors carry on: three executors, and a job with a shuffle succeeds on them
        wait_until(lambda: len(ctx.status().executors) == 3, timeout=5, what="three executors")
        status = ctx.status()
        assert sorted(e.executor_id for e in status.executors) == ["executor-0", "executor-2", "executor-3"]
        assert dict(ctx.range(100).map(lambda x: (x % 4, 1)).reduce_by_key(add).collect()) == {k: 25 for k in range(4)}


def test_executor_holding_map_output_dies_between_bsp_stages(tmp_path: Path) -> None:
    settings = fast_settings(preschedule=False)
    with LocalCluster(executors=4, settings=settings) as cluster, cluster.connect() as ctx:

        def slow_reduce(kv):  # type: ignore[no-untyped-def]
            (tmp_path / f"reduce-{executor_pid()}").touch()
            time.sleep(1.0)
            return kv

        # 4 map tasks (one per executor), then 2 slow reducers: two executors hold only map output
        ds = ctx.range(40, partitions=4).map(lambda x: (x % 2, x)).reduce_by_key(add, 2).map(slow_reduce)
        job = Background(ds.collect)
        wait_until(lambda: len(pids_marked(tmp_path, "reduce-")) == 2, timeout=10, what="both reducers")
        reducers = pids_marked(tmp_path, "reduce-")
        idle = sorted(name for name, pid in cluster.pids.items() if name.startswith("executor") and pid not in reducers)
        assert len(idle) == 2
        killed_at = time.monotonic()
        os.kill(cluster.pids[idle[0]], signal.SIGKILL)

        assert job.join(timeout=settings.death_timeout + 10), "the job hung after a map output was lost"
        err = job.outcome
        assert isinstance(err, squall.ExecutorLostError), repr(err)
        assert idle[0] in str(err)
        assert err.stage_id == 0  # what was lost is a map output, not a running task
        assert job.finished_at - killed_at < settings.death_timeout + 2.0  # type: ignore[operator]
        assert ctx.range(10).map(lambda x: (x % 2, x)).reduce_by_key(add).count() == 2


def test_scheduler_death_mid_job_raises_connection_error(tmp_path: Path) -> None:
    settings = fast_settings(scheduler_silence_timeout=1.5)
    with LocalCluster(executors=2, settings=settings) as cluster, cluster.connect() as ctx:

        def slow(x):  # type: ignore[no-untyped-def]
            (tmp_path / f"map-{executor_pid()}").touch()
            time.sleep(0.5)
            return x

        job = Background(ctx.range(6, partitions=2).map(slow).collect)
        wait_until(lambda: pids_marked(tmp_path, "map-"), timeout=10, what="a running task")
        killed_at = time.monotonic()
        os.kill(cluster.pids["scheduler"], signal.SIGKILL)
        assert job.join(timeout=settings.scheduler_silence_timeout + 10), "the driver hung on a dead scheduler"
        assert isinstance(job.outcome, squall.ConnectionError), repr(job.outcome)
        assert "has not answered" in str(job.outcome)
        waited = job.finished_at - killed_at  # type: ignore[operator]
        assert waited < settings.scheduler_silence_timeout + 1.5, f"noticed after {waited:.2f}s"


def test_user_code_calling_sys_exit_fails_the_job() -> None:
    with LocalCluster(executors=2, settings=fast_settings(scheduler_silence_timeout=1.5)) as cluster:
        ctx = cluster.connect()  # left to the garbage collector: a hung call may still use it

        def exits(x):  # type: ignore[no-untyped-def]
            if x == 1:
                sys.exit(3)
            return x

        finished, outcome, _ = run_with_deadline(ctx.range(4, partitions=2).map(exits).collect, timeout=3.0)
        assert finished, "the job hung after user code called sys.exit()"
        assert isinstance(outcome, squall.TaskError), repr(outcome)
        assert outcome.error_type == "SystemExit"


# --- no scheduler --------------------------------------------------------------------------------


def test_connect_to_nothing_raises_connection_error_after_the_timeout() -> None:
    address = f"tcp://127.0.0.1:{free_tcp_port()}"
    start = time.monotonic()
    with pytest.raises(squall.ConnectionError, match="no scheduler answered") as info:
        squall.connect(address, fast_settings(connect_timeout=0.5))
    waited = time.monotonic() - start
    assert 0.45 <= waited < 2.0, f"waited {waited:.2f}s"
    assert address in str(info.value)
    assert isinstance(info.value, squall.SquallError)


def test_failed_connect_does_not_leak_its_socket() -> None:
    address = f"tcp://127.0.0.1:{free_tcp_port()}"
    gc.collect()  # sockets other tests left to the collector are not this test's business
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            squall.connect(address, fast_settings(connect_timeout=0.2))
        except squall.ConnectionError:
            pass
        gc.collect()
    leaks = [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert not leaks, [str(w.message) for w in leaks]
