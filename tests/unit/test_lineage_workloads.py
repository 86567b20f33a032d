"""bench.lineage_workloads, the plain-Python references of the long-lineage benchmark: PageRank on
a graph worked by hand, the ALS solve as the minimiser it must be, the stream's state as a plain
count and sum, and the row figures bench.lineage prints."""

from __future__ import annotations

import itertools
import math
import operator
from collections import Counter, defaultdict

import pytest

from bench.lineage import Row, format_table, tenths
from bench.lineage_workloads import (
    LAMBDA,
    RANK,
    add_terms,
    als_loss,
    als_reference,
    batch_records,
    normal_terms,
    pagerank_reference,
    ranks_match,
    solve,
    stream_reference,
    synthetic_links,
    synthetic_ratings,
)

pytestmark = pytest.mark.timeout(30)


def test_pagerank_on_a_graph_worked_by_hand() -> None:
    links = {0: [1], 1: [0, 2]}  # 2 has no out-links: its rank is not passed on
    assert pagerank_reference(links, 0) == {0: 1.0, 1: 1.0}
    # 1 gets 1.0 from 0; 0 and 2 get 0.5 each from 1
    assert ranks_match(pagerank_reference(links, 1), {0: 0.575, 1: 1.0, 2: 0.575}, 1e-12)
    # 1 gets 0.575 from 0; 0 and 2 get 0.5 each from 1
    assert ranks_match(pagerank_reference(links, 2), {0: 0.575, 1: 0.15 + 0.85 * 0.575, 2: 0.575}, 1e-12)
    cycle = {0: [1], 1: [2], 2: [0]}
    assert pagerank_reference(cycle, 50) == {0: 1.0, 1: 1.0, 2: 1.0}


def test_ranks_match_needs_the_same_vertices_within_the_tolerance() -> None:
    assert ranks_match({1: 1.0, 2: 0.5}, {1: 1.0 + 1e-10, 2: 0.5})
    assert not ranks_match({1: 1.0, 2: 0.5}, {1: 1.0 + 1e-8, 2: 0.5})
    assert not ranks_match({1: 1.0}, {1: 1.0, 2: 0.5})


def test_the_synthetic_graph_links_every_vertex_out() -> None:
    links = synthetic_links(1000, 100)
    assert sorted(links) == list(range(100)) and all(len(out) == 10 for out in links.values())
    assert len({d for out in links.values() for d in out}) > 50  # destinations spread by the hash


def objective(factor: tuple[float, ...], rated: list[tuple[tuple[float, ...], float]]) -> float:
    """What a solve minimises: squared errors plus LAMBDA * ratings * |factor|^2."""
    errors = sum((stars - sum(map(operator.mul, factor, other))) ** 2 for other, stars in rated)
    return errors + LAMBDA * len(rated) * sum(x * x for x in factor)


def test_a_solve_minimises_the_regularised_squared_error() -> None:
    rated = [(tuple(math.sin(i * RANK + f) for f in range(RANK)), float(1 + i % 5)) for i in range(12)]
    terms = normal_terms(*rated[0])
    for other, stars in rated[1:]:
        terms = add_terms(terms, normal_terms(other, stars))
    best = solve(terms)
    least = objective(best, rated)
    for f, step in itertools.product(range(RANK), (-1e-3, 1e-3)):
        moved = tuple(x + (step if g == f else 0.0) for g, x in enumerate(best))
        assert objective(moved, rated) > least


def test_als_passes_lower_the_loss_from_the_start() -> None:
    ratings = synthetic_ratings(30, 12, 300)
    losses = [als_reference(ratings, passes) for passes in (1, 3, 10)]
    assert losses[0] > losses[1] > losses[2] > 0
    users = {u: (1.0,) * RANK for u in range(30)}
    items = {i: (0.0,) * RANK for i in range(12)}
    assert als_loss(ratings, users, items) == sum(stars**2 for _, (_, stars) in ratings)


def test_the_stream_state_is_each_keys_count_and_sum() -> None:
    counts: Counter[int] = Counter()
    sums: dict[int, int] = defaultdict(int)
    for batch in range(7):
        for key, value in batch_records(batch, 40, 25):
            counts[key] += 1
            sums[key] += value
    assert stream_reference(7, 40, 25) == {key: (counts[key], sums[key]) for key in counts}


def test_rows_show_the_first_and_last_tenth_and_what_is_missing() -> None:
    assert tenths([5.0, 1.0, 3.0] + [0.0] * 24 + [9.0, 7.0, 8.0]) == (3.0, 8.0)  # thirty: three each
    assert tenths([2.0, 4.0]) == (2.0, 4.0)
    table = format_table([
        Row("pagerank", "deltas on", [0.01] * 10 + [0.03] * 10, [100] + [None] * 18 + [120], matched=True),
        Row("stream", "PySpark, local[2]", skipped="pyspark not installed"),
    ])
    lines = table.splitlines()
    assert lines[2].split()[-7:] == ["20", "10.0", "30.0", "3.00", "100", "120", "yes"]
    assert lines[3].endswith("pyspark not installed")
