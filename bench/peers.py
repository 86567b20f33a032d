"""Drizzle's micro-benchmark on peer engines: Dask distributed, Ray and PySpark, each on this machine.

Every peer gets WORKERS single-threaded workers and runs the workloads of bench.workloads
micro-batch after micro-batch: submit one batch, wait for its result at the driver, then the
next. What is measured, per peer and workload:

- start-up seconds: from starting the engine until it is ready to take tasks (before any task ran);
- per-batch seconds: from submitting a micro-batch until its result is back at the driver, for
  each counted batch, after WARMUP_BATCHES uncounted ones that absorb worker start-up.

Every batch's result is checked against the plain-Python reference (ResultMismatch if not).
A peer that is not installed or cannot start is returned as skipped, with the reason. Each
engine is torn down after its run, so no process of it is left behind.

    python -m bench.peers --workload two-stage --batches 100
"""

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from operator import add
from typing import Any

from bench.workloads import (
    DEFAULT_BATCHES,
    DEFAULT_NUMBERS,
    DEFAULT_REDUCERS,
    DEFAULT_TASKS,
    SINGLE_STAGE,
    TWO_STAGE,
    WORKLOADS,
    expected_result,
    fold_task,
    median_and_p90,
    reduce_key,
    sum_task,
    time_batches,
)

WORKERS = 4
SPARK_JVM_EXIT_SECONDS = 30
SPARK_LOG_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "spark-log4j2.properties")


@dataclass
class PeerResult:
    """One peer's run of one workload: per-batch and start-up seconds, or why it was skipped."""

    name: str
    workload: str
    batch_seconds: list[float] = field(default_factory=list)
    startup_seconds: float = 0.0
    skipped: str | None = None


@dataclass(frozen=True)
class Batch:
    """The shape of one micro-batch."""

    workload: str
    tasks: int
    reducers: int
    numbers: int


BatchRunner = Callable[[], object]


@dataclass(frozen=True)
class Peer:
    """How to time one peer engine: `engine` starts it (the start-up being timed) and yields a
    handle; `make_runner(handle, batch)` gives a function running one micro-batch on it."""

    engine: Callable[[], AbstractContextManager[Any]]
    make_runner: Callable[[Any, Batch], BatchRunner]


def run_peer(
    name: str,
    workload: str = TWO_STAGE,
    batches: int = DEFAULT_BATCHES,
    tasks: int = DEFAULT_TASKS,
    reducers: int = DEFAULT_REDUCERS,
    numbers: int = DEFAULT_NUMBERS,
) -> PeerResult:
    """Start PEERS[name], time `batches` micro-batches of T map tasks (and R reducers) on it,
    and tear it down; each engine's and batch runner's docstring says what it does.

    An engine that cannot be imported or started gives a skipped result; a failure after
    start-up (a wrong result included) is raised.
    """
    peer = PEERS[name]
    expected = expected_result(workload, tasks, reducers, numbers)
    with ExitStack() as stack:
        start = time.perf_counter()
        try:
            handle = stack.enter_context(peer.engine())
        except ImportError as exc:
            return PeerResult(name, workload, skipped=f"not installed ({exc})")
        except Exception as exc:  # any start-up failure skips the peer
            return PeerResult(name, workload, skipped=f"cannot start ({type(exc).__name__}: {exc})")
        startup = time.perf_counter() - start
        seconds = time_batches(peer.make_runner(handle, Batch(workload, tasks, reducers, numbers)), expected, batches)
    return PeerResult(name, workload, seconds, startup)


@contextmanager
def _dask_engine() -> Iterator[Any]:
    """Dask distributed: a Client on a LocalCluster of WORKERS single-threaded worker processes,
    closed on exit. Start-up: creating the cluster and client until the workers have joined.

    Dask's own log shows only CRITICAL records: at shutdown a worker's heartbeat can race the
    closing scheduler and log an ERROR traceback (dask/distributed#7105). A failing task still
    raises at the driver, from client.gather.
    """
    from dask.distributed import Client, LocalCluster

    cluster_options = dict(processes=True, dashboard_address=None, silence_logs=logging.CRITICAL)
    with LocalCluster(n_workers=WORKERS, threads_per_worker=1, **cluster_options) as cluster, Client(cluster) as client:
        client.wait_for_workers(WORKERS)
        yield client


def _dask_batch_runner(client: Any, batch: Batch) -> BatchRunner:
    """A function that runs one micro-batch as Dask futures and returns its result: T map
    futures and R reduce futures that depend on them (client.submit, pure=False so every batch
    recomputes), timed until client.gather returns."""
    if batch.workload == SINGLE_STAGE:

        def run() -> object:
            futures = [client.submit(sum_task, i, batch.numbers, pure=False) for i in range(batch.tasks)]
            return sum(client.gather(futures))

        return run

    def run_two_stage() -> object:
        maps = [client.submit(fold_task, i, batch.numbers, batch.reducers, pure=False) for i in range(batch.tasks)]
        reduces = [client.submit(reduce_key, key, *maps, pure=False) for key in range(batch.reducers)]
        return client.gather(reduces)

    return run_two_stage


@contextmanager
def _ray_engine() -> Iterator[Any]:
    """The ray module, initialised locally with WORKERS CPUs, no dashboard, no usage reporting and
    no worker logs; shut down on exit. Start-up: ray.init until it returns."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    ray.init(num_cpus=WORKERS, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    try:
        yield ray
    finally:
        ray.shutdown()


def _ray_batch_runner(ray: Any, batch: Batch) -> BatchRunner:
    """A function that runs one micro-batch as Ray remote tasks and returns its result: T remote
    map tasks and R remote reduce tasks that take the map tasks' object refs, timed until
    ray.get returns."""
    if batch.workload == SINGLE_STAGE:
        sum_remote = ray.remote(sum_task)

        def run() -> object:
            return sum(ray.get([sum_remote.remote(i, batch.numbers) for i in range(batch.tasks)]))

        return run

    fold_remote, reduce_remote = ray.remote(fold_task), ray.remote(reduce_key)

    def run_two_stage() -> object:
        maps = [fold_remote.remote(i, batch.numbers, batch.reducers) for i in range(batch.tasks)]
        return ray.get([reduce_remote.remote(key, *maps) for key in range(batch.reducers)])

    return run_two_stage


@contextmanager
def _spark_engine(conf: Mapping[str, str] | None = None) -> Iterator[Any]:
    """A SparkContext of a local[WORKERS] SparkSession, without UI and logging only errors; the session and its JVM end on exit.

    Start-up: launching the JVM and creating the session. Spark's Python workers run this
    interpreter, not whichever `python3` is first on PATH (PySpark's SparkContext takes the
    interpreter of the functions it ships from PYSPARK_PYTHON, not from spark.pyspark.python, so
    both are set). `conf`: further Spark settings, for those that only take effect when the
    context starts (the scheduler mode, for one).
    """
    from pyspark.sql import SparkSession

    os.environ["PYSPARK_PYTHON"] = sys.executable
    builder = (
        SparkSession.builder.master(f"local[{WORKERS}]")
        .appName("drizzle-microbench")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.pyspark.python", sys.executable)
        .config("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile={SPARK_LOG_CONFIG}")
    )
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    try:
        spark = builder.getOrCreate()
        try:
            yield spark.sparkContext
        finally:
            spark.stop()
    finally:
        _stop_spark_jvm()


def _stop_spark_jvm() -> None:
    """End the JVM that PySpark launched, which spark.stop() leaves running until the Python process exits.

    The JVM exits when its standard input closes; PySpark keeps the gateway on SparkContext,
    and clearing it there lets a later session launch a fresh JVM. A gateway that PySpark
    did not launch (PYSPARK_GATEWAY_PORT) has no process here and is only disconnected.
    """
    from pyspark import SparkContext

    gateway = SparkContext._gateway
    if gateway is None:
        return
    gateway.shutdown()
    if gateway.proc is not None:
        gateway.proc.stdin.close()
        gateway.proc.wait(timeout=SPARK_JVM_EXIT_SECONDS)
    SparkContext._gateway = None
    SparkContext._jvm = None


def _spark_batch_runner(sc: Any, batch: Batch) -> BatchRunner:
    """A function that runs one micro-batch as a Spark RDD job and returns its result: one job
    over T partitions, timed until its action (sum, or reduceByKey into R partitions and
    collect) returns at the driver."""
    numbers, reducers = batch.numbers, batch.reducers
    if batch.workload == SINGLE_STAGE:

        def run() -> object:
            return sc.parallelize(range(batch.tasks), batch.tasks).map(lambda i: sum_task(i, numbers)).sum()

        return run

    def run_two_stage() -> object:
        folds = sc.parallelize(range(batch.tasks), batch.tasks).flatMap(lambda i: enumerate(fold_task(i, numbers, reducers)))
        return [total for _, total in sorted(folds.reduceByKey(add, reducers).collect())]

    return run_two_stage


PEERS = {
    "dask": Peer(_dask_engine, _dask_batch_runner),
    "ray": Peer(_ray_engine, _ray_batch_runner),
    "spark": Peer(_spark_engine, _spark_batch_runner),
}


def format_table(results: list[PeerResult]) -> str:
    """A text table of the results: one line per measured run, one note per skipped peer."""
    header = f"{'peer':<6} {'workload':<13} {'start-up s':>10} {'median ms':>10} {'p90 ms':>8} {'batches':>8}"
    return "\n".join([header, *map(_table_line, results)])


def _table_line(result: PeerResult) -> str:
    run = f"{result.name:<6} {result.workload:<13}"
    if result.skipped:
        return f"{run} skipped: {result.skipped}"
    median, p90 = median_and_p90(result.batch_seconds)
    return (
        f"{run} {result.startup_seconds:>10.2f} "
        f"{median * 1e3:>10.1f} {p90 * 1e3:>8.1f} {len(result.batch_seconds):>8}"
    )


def main(argv: list[str] | None = None) -> None:
    """Run the chosen peers on the chosen workloads, one engine at a time, and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=[*WORKLOADS, "both"], default="both")
    parser.add_argument("--peers", nargs="+", choices=list(PEERS), default=list(PEERS))
    parser.add_argument("--batches", type=int, default=DEFAULT_BATCHES)
    parser.add_argument("--tasks", type=int, default=DEFAULT_TASKS)
    parser.add_argument("--reducers", type=int, default=DEFAULT_REDUCERS)
    parser.add_argument("--numbers", type=int, default=DEFAULT_NUMBERS)
    args = parser.parse_args(argv)
    workloads = WORKLOADS if args.workload == "both" else (args.workload,)
    results = [
        run_peer(peer, workload, args.batches, args.tasks, args.reducers, args.numbers)
        for workload in workloads
        for peer in args.peers
    ]
    print(format_table(results))


if __name__ == "__main__":
    main()
