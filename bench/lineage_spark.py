"""bench.lineage's workloads on PySpark: the same algorithms on RDDs, written as Spark users write
them (cache() what an iteration derives, count() it, unpersist() the last iteration's), on
local[2], each workload in a SparkContext of its own from bench.peers (its JVM stopped after).

Spark's RDDs keep their lineage too: a cached RDD's job still walks it (its stages are skipped,
not forgotten), which is what this row shows as iterations go on. The per-record functions and
the checks are bench.lineage_workloads', as for Squall's rows. Without pyspark, or if Spark
cannot start, the row says why instead.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from functools import partial
from typing import Any

from bench.lineage import SPECS, Row, Series, Sizes
from bench.lineage_workloads import (
    add_terms,
    als_loss,
    batch_records,
    by_item,
    contributions,
    damped,
    edge,
    fold_batch,
    initial_rank,
    rating,
    solve,
    synthetic_ratings,
    terms_for_others,
    with_initial_factor,
)

SPARK_MASTER = "local[2]"


def spark_pagerank(sc: Any, sizes: Sizes, series: Series) -> dict[int, float]:
    p = sizes.partitions
    links = sc.range(0, sizes.edges, numSlices=p).map(partial(edge, sizes.vertices)).groupByKey(p).mapValues(list).cache()
    ranks = links.mapValues(initial_rank).cache()
    ranks.count()
    for _ in range(sizes.iterations):
        with series.iteration():
            new = links.join(ranks).flatMap(contributions).reduceByKey(operator.add, p).mapValues(damped).cache()
            new.count()
            ranks.unpersist()
            ranks = new
    return dict(ranks.collect())


def spark_als(sc: Any, sizes: Sizes, series: Series) -> float:
    p = sizes.partitions
    ratings = sc.range(0, sizes.ratings, numSlices=p).map(partial(rating, sizes.users, sizes.items))
    of_user = ratings.groupByKey(p).mapValues(list).cache()
    of_item = ratings.map(by_item).groupByKey(p).mapValues(list).cache()
    items = of_item.map(with_initial_factor).cache()
    items.count()
    of_user.count()
    users = None
    for _ in range(sizes.passes):
        with series.iteration():
            new_users = of_item.join(items).flatMap(terms_for_others).reduceByKey(add_terms, p).mapValues(solve).cache()
            new_items = of_user.join(new_users).flatMap(terms_for_others).reduceByKey(add_terms, p).mapValues(solve).cache()
            new_items.count()
            for old in (users, items):
                if old is not None:
                    old.unpersist()
            users, items = new_users, new_items
    assert users is not None, "no passes"
    return als_loss(synthetic_ratings(sizes.users, sizes.items, sizes.ratings), dict(users.collect()), dict(items.collect()))


def fold_iterables(lists: tuple[Iterable[int], Iterable[tuple[int, int]]]) -> tuple[int, int]:
    """fold_batch over Spark's cogroup, whose values come as iterables."""
    values, old = lists
    return fold_batch((list(values), list(old)))


def spark_stream(sc: Any, sizes: Sizes, series: Series) -> dict[int, tuple[int, int]]:
    p = sizes.partitions
    state = sc.parallelize([], p)
    sc.parallelize(batch_records(-1, sizes.records, sizes.keys), p).cogroup(state, p).count()  # a warm-up
    for batch in range(sizes.batches):
        records = batch_records(batch, sizes.records, sizes.keys)
        with series.iteration():
            new = sc.parallelize(records, p).cogroup(state, p).mapValues(fold_iterables).cache()
            new.count()
            state.unpersist()
            state = new
    return dict(state.collect())


RUNS: dict[str, Callable[[Any, Sizes, Series], Any]] = {"pagerank": spark_pagerank, "als": spark_als, "stream": spark_stream}


def spark_row(workload: str, sizes: Sizes, expected: Any) -> Row:
    """The workload on a fresh local[2] Spark, checked against `expected`; a Spark that cannot
    start, or fails, is the row's note."""
    row = Row(workload, f"PySpark, {SPARK_MASTER}")
    series = Series()
    with ExitStack() as stack:
        try:
            from bench.peers import _spark_engine

            sc = stack.enter_context(_spark_engine({"spark.master": SPARK_MASTER}))
        except ImportError as exc:
            row.skipped = f"pyspark not installed ({exc})"
            return row
        except Exception as exc:  # noqa: BLE001 - any start-up failure skips the row, as in bench.peers
            row.skipped = f"Spark cannot start ({type(exc).__name__}: {exc})"
            return row
        try:
            row.matched = SPECS[workload].matches(RUNS[workload](sc, sizes, series), expected)
        except Exception as exc:  # noqa: BLE001 - reported in the table
            row.skipped = f"failed after {len(series.seconds)} iterations: {type(exc).__name__}: {str(exc).splitlines()[0]}"
    row.seconds = series.seconds
    return row
