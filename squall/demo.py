"""`squall demo`: start a local cluster and run the main example job, a word count.

The text is generated on the executors from line numbers (deterministically), so nothing large
travels from the driver; the same generator run locally checks the answer.
"""

from __future__ import annotations

import operator
import random
import time
from collections import Counter
from collections.abc import Callable

from common.settings import Settings
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


def run(executors: int = 4, lines: int = 100_000, partitions: int = 8, reducers: int = 4, repeat: int = 3,
        settings: Settings | None = None, echo: Callable[[str], None] = print) -> list[tuple[str, int]]:
    echo(f"Squall demo: word count over {lines:,} generated lines on a local cluster of {executors} executors")
    started = time.perf_counter()
    with LocalCluster(executors=executors, settings=settings) as cluster, cluster.connect() as ctx:
        echo(f"cluster up in {time.perf_counter() - started:.2f} s; scheduler at {cluster.address}")
        counts = (
            ctx.range(lines, partitions=partitions)
            .flat_map(line_words)
            .map(lambda word: (word, 1))
            .reduce_by_key(operator.add, partitions=reducers)
        )
        echo(f"job: range({lines:,}, {partitions} partitions) -> flat_map(line_words) -> map((word, 1))"
             f" -> reduce_by_key(add, {reducers} partitions) -> collect   [two stages, BSP]")
        result: list[tuple[str, int]] = []
        for attempt in range(1, repeat + 1):
            t0 = time.perf_counter()
            result = counts.collect()
            echo(f"run {attempt}: {(time.perf_counter() - t0) * 1000:8.1f} ms")
    top = sorted(result, key=lambda kv: (-kv[1], kv[0]))
    echo("top words:")
    for word, count in top[:10]:
        echo(f"  {word:<12}{count:>10,}")
    expected = Counter(w for i in range(lines) for w in line_words(i))
    ok = dict(result) == dict(expected)
    echo(f"words counted: {sum(c for _, c in result):,}; matches a plain-Python Counter: {'yes' if ok else 'NO'}")
    if not ok:
        raise SystemExit("demo result differs from the reference computation")
    return top
