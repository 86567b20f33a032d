"""Drizzle's (SOSP 2017) micro-benchmark workloads, shared by every engine's benchmark.

Pure functions only: no engine is imported here, so Squall's script and the peers'
script run the same per-task code and check against the same plain-Python reference.

A micro-batch of the single-stage workload has T tasks; task i sums the numbers
range(i * N, (i + 1) * N) and the batch result is the total of the T sums.
A micro-batch of the two-stage workload has T map tasks and R reduce tasks; map
task i folds the same numbers into R partial sums keyed by x % R, reducer r sums
the partials for key r, and the batch result is the list of the R sums in key order.
Every micro-batch of a run has the same input, so every batch has the same result.
"""

import time
from collections.abc import Callable

from squall.common.quantiles import quantile

SINGLE_STAGE = "single-stage"
TWO_STAGE = "two-stage"
WORKLOADS = (SINGLE_STAGE, TWO_STAGE)

DEFAULT_BATCHES = 100
DEFAULT_TASKS = 4
DEFAULT_REDUCERS = 4
DEFAULT_NUMBERS = 10_000
WARMUP_BATCHES = 5


def task_numbers(i: int, numbers: int) -> range:
    """The input of task i: `numbers` consecutive integers starting at i * numbers."""
    return range(i * numbers, (i + 1) * numbers)


def sum_task(i: int, numbers: int) -> int:
    """Single-stage task i: the sum of its input."""
    return sum(task_numbers(i, numbers))


def fold_task(i: int, numbers: int, reducers: int) -> list[int]:
    """Two-stage map task i: its input folded into partial sums, where partials[k] sums the x with x % reducers == k.

    The task materializes its numbers (as a task reading its input would) and sums each residue
    class with one strided slice: every number is read and added once, in C loops, so the task
    costs what the work costs (about 0.2 ms for 10k numbers here) rather than interpreter overhead.
    """
    start = i * numbers
    values = list(task_numbers(i, numbers))
    partials = [0] * reducers
    for offset in range(min(reducers, len(values))):
        partials[(start + offset) % reducers] = sum(values[offset::reducers])
    return partials


def reduce_key(key: int, *folds: list[int]) -> int:
    """Two-stage reduce task for `key`: the sum of that key's partial in each map task's fold."""
    return sum(fold[key] for fold in folds)


def expected_single(tasks: int, numbers: int) -> int:
    """Reference result of a single-stage micro-batch, computed in plain Python."""
    return sum(range(tasks * numbers))


def expected_two_stage(tasks: int, reducers: int, numbers: int) -> list[int]:
    """Reference result of a two-stage micro-batch (the R per-key sums in key order), computed in plain Python."""
    sums = [0] * reducers
    for x in range(tasks * numbers):
        sums[x % reducers] += x
    return sums


def expected_result(workload: str, tasks: int, reducers: int, numbers: int) -> int | list[int]:
    """Reference result of one micro-batch of `workload`."""
    if workload == SINGLE_STAGE:
        return expected_single(tasks, numbers)
    if workload == TWO_STAGE:
        return expected_two_stage(tasks, reducers, numbers)
    raise ValueError(f"unknown workload {workload!r}; expected one of {', '.join(WORKLOADS)}")


class ResultMismatch(AssertionError):
    """A micro-batch's result differs from the plain-Python reference."""


def time_batches(run_batch: Callable[[], object], expected: object, batches: int, warmup: int = WARMUP_BATCHES) -> list[float]:
    """Run `warmup` uncounted micro-batches, then `batches` counted ones, one after another.

    Each counted time is wall-clock seconds from calling `run_batch` (which submits one
    micro-batch and waits for its result at the driver) until it returns. Every batch's
    result, warm-up ones included, is compared with `expected` outside the timed span;
    the first difference raises ResultMismatch.
    """
    seconds = []
    for index in range(warmup + batches):
        start = time.perf_counter()
        result = run_batch()
        elapsed = time.perf_counter() - start
        if result != expected:
            raise ResultMismatch(f"micro-batch {index}: got {result!r}, expected {expected!r}")
        if index >= warmup:
            seconds.append(elapsed)
    return seconds


def median_and_p90(seconds: list[float]) -> tuple[float, float]:
    """Median and 90th percentile (squall.common.quantiles) of per-batch times, in the unit given."""
    return quantile(seconds, 0.5), quantile(seconds, 0.9)
