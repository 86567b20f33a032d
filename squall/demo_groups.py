"""`squall demo`: start a local cluster and run the main example: a word count over micro-batches.

Each micro-batch counts the words of its own slice of generated text (a two-stage job: map
tasks split lines into (word, 1) pairs, reducers sum them). The same batches run three ways, so
group scheduling can be seen at work: BSP (the scheduler launches every stage and hears about
every task), pre-scheduled one batch at a time, and Drizzle groups (one message per executor per
group; mappers push to reducers that are already placed). The text is generated on the
executors from line numbers, and the answer is checked against plain Python.
"""

from __future__ import annotations

import operator
import random
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from squall.common.quantiles import quantile
from squall.common.settings import Settings
from squall.local import LocalCluster

VOCABULARY = [
    "squall", "drizzle", "storm", "gust", "breeze", "micro", "batch", "stream", "task", "group",
    "shuffle", "reduce", "map", "executor", "scheduler", "latency", "replay", "checkpoint", "epoch", "key",
]


def line_words(line_number: int) -> list[str]:
    """The words of generated line `line_number`: skewed towards the start of the vocabulary."""
    rng = random.Random(line_number)
    n = len(VOCABULARY)
    return [VOCABULARY[min(int(rng.paretovariate(1.2)) - 1, n - 1)] for _ in range(8)]


def run(executors: int = 4, batches: int = 60, lines_per_batch: int = 500, group_size: int = 20,
        settings: Settings | None = None, echo: Callable[[str], None] = print) -> list[tuple[str, int]]:
    echo(f"Squall demo: word count over {batches} micro-batches of {lines_per_batch} generated lines each, "
         f"on a local cluster of {executors} executors")
    started = time.perf_counter()
    modes: list[tuple[str, dict[str, Any]]] = [
        ("BSP (scheduler launches every stage)", dict(preschedule=False)),
        ("pre-scheduled, one batch at a time", dict(preschedule=True, group_size=1)),
        (f"Drizzle, groups of {group_size}", dict(preschedule=True, group_size=group_size)),
    ]
    totals: Counter[str] = Counter()
    with LocalCluster(executors=executors, settings=settings) as cluster, cluster.connect() as ctx:
        echo(f"cluster up in {time.perf_counter() - started:.2f} s; scheduler at {cluster.address}\n")

        def batch(b: int) -> Any:
            first = b * lines_per_batch
            return (
                ctx.range(first, first + lines_per_batch, partitions=executors)
                .flat_map(line_words)
                .map(lambda word: (word, 1))
                .reduce_by_key(operator.add, partitions=executors)
            )

        datasets = [batch(b) for b in range(batches)]
        ctx.run_jobs(datasets[:2])  # warm-up: connections and code caches
        echo(f"{'mode':<38} {'ms per batch':>12} {'p90 ms':>8} {'scheduling msgs/batch':>21}  groups")
        for name, mode in modes:
            before = ctx.metrics()
            results = ctx.run_jobs(datasets, **mode)
            after = ctx.metrics()
            scheduling = sum(
                after.received.get(k, 0) - before.received.get(k, 0) for k in ("TaskFinished", "TaskFailed", "GroupDone")
            ) + sum(after.sent.get(k, 0) - before.sent.get(k, 0) for k in ("LaunchTasks", "LaunchGroup"))
            stats = ctx.last_run
            assert stats is not None
            intervals = stats.batch_intervals
            echo(f"{name:<38} {quantile(intervals, 0.5) * 1000:>12.2f} {quantile(intervals, 0.9) * 1000:>8.2f} "
                 f"{scheduling / batches:>21.2f}  {len(stats.groups) or '-'}")
            totals = Counter()
            for records in results:
                totals.update(dict(records))
    top = sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))
    echo("\nscheduling msgs/batch: task launches and task or group reports through the scheduler, per micro-batch")
    echo("top words over all batches:")
    for word, count in top[:8]:
        echo(f"  {word:<12}{count:>10,}")
    expected = Counter(w for i in range(batches * lines_per_batch) for w in line_words(i))
    ok = dict(totals) == dict(expected)
    echo(f"words counted: {sum(totals.values()):,}; matches a plain-Python Counter: {'yes' if ok else 'NO'}")
    if not ok:
        raise SystemExit("demo result differs from the reference computation")
    return top
