"""The long-lineage benchmark's workloads (bench.lineage), as plain Python: the synthetic inputs,
the per-record functions every engine runs, and the reference results the engines' are checked
against.

- PageRank (Spark's example): a graph of `edges` edges over `vertices` vertices, edge e from
  vertex e % vertices (so every vertex links out) to one drawn by a hash; links grouped by
  source, every rank 1.0 at first; an iteration sends each vertex's rank, shared equally, along
  its links, and a vertex's new rank is 0.15 + 0.85 * what it received (a vertex that received
  nothing drops out, as in Spark's example).
- ALS: a rating matrix of `ratings` ratings (rating j by user j % users of an item drawn by a
  hash, 1 to 5 stars), factors of RANK numbers; a pass solves every user's factor from the item
  factors (least squares with weighted-lambda regularisation: LAMBDA times the user's ratings),
  then every item's from the new user factors. The loss is the sum of squared errors.
- Stream: batch b holds `records` (key, value) records drawn by a hash from `keys` keys; the
  state holds (count, sum of values) per key seen, each batch folded into the last state.

Sums of floats come out in an order of the engine's choosing, so engines agree with these
references to float tolerance (PageRank ranks within 1e-9; the ALS loss to a relative 1e-9),
and the stream's integer state exactly.
"""

from __future__ import annotations

import math
import operator
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

DAMPING = 0.85
RANK = 4  # ALS factor length
LAMBDA = 0.1  # ALS regularisation, per rating of the user or item solved for

Factor = tuple[float, ...]
Terms = tuple[float, ...]  # a least-squares problem's normal equations: A (RANK x RANK, by rows), b, rating count


def _mix(x: int) -> int:
    """A 31-bit hash of x (two rounds of an LCG over a Knuth multiplicative hash)."""
    x = (x * 2654435761 + 12345) & 0xFFFFFFFF
    x = (x * 1103515245 + 12345) & 0x7FFFFFFF
    return (x * 1103515245 + 12345) & 0x7FFFFFFF


# --- PageRank ------------------------------------------------------------------------------------


def edge(vertices: int, index: int) -> tuple[int, int]:
    """Edge `index`: (source, destination)."""
    return index % vertices, _mix(index) % vertices


def initial_rank(_links: Any) -> float:
    return 1.0


def contributions(record: tuple[int, tuple[Sequence[int], float]]) -> list[tuple[int, float]]:
    """(vertex, (out-links, rank)) -> (destination, rank shared equally) for every out-link."""
    _, (links, rank) = record
    share = rank / len(links)
    return [(destination, share) for destination in links]


def damped(received: float) -> float:
    return (1 - DAMPING) + DAMPING * received


def synthetic_links(edges: int, vertices: int) -> dict[int, list[int]]:
    """The synthetic graph's out-links of each vertex, in edge order."""
    links: dict[int, list[int]] = defaultdict(list)
    for index in range(edges):
        source, destination = edge(vertices, index)
        links[source].append(destination)
    return dict(links)


def pagerank_reference(links: dict[int, list[int]], iterations: int) -> dict[int, float]:
    ranks = {vertex: initial_rank(out) for vertex, out in links.items()}
    for _ in range(iterations):
        received: dict[int, float] = defaultdict(float)
        for vertex, out in links.items():
            if vertex in ranks:
                for destination, share in contributions((vertex, (out, ranks[vertex]))):
                    received[destination] += share
        ranks = {vertex: damped(total) for vertex, total in received.items()}
    return ranks


def ranks_match(got: dict[Any, float], expected: dict[Any, float], tolerance: float = 1e-9) -> bool:
    return got.keys() == expected.keys() and all(abs(got[v] - expected[v]) <= tolerance for v in expected)


# --- ALS -----------------------------------------------------------------------------------------


def rating(users: int, items: int, index: int) -> tuple[int, tuple[int, float]]:
    """Rating `index`: (user, (item, stars))."""
    user = index % users
    item = _mix(index) % items
    return user, (item, float(1 + _mix(user * 7919 + item) % 5))


def by_item(record: tuple[int, tuple[int, float]]) -> tuple[int, tuple[int, float]]:
    """(user, (item, stars)) -> (item, (user, stars))."""
    user, (item, stars) = record
    return item, (user, stars)


def initial_factor(item: int) -> Factor:
    return tuple(0.1 + (_mix(item * RANK + f) % 1000) / 1000 for f in range(RANK))


def with_initial_factor(record: tuple[int, Any]) -> tuple[int, Factor]:
    return record[0], initial_factor(record[0])


def normal_terms(factor: Factor, stars: float) -> Terms:
    """One rating's share of the normal equations of the other side's least squares."""
    return (*(a * b for a in factor for b in factor), *(stars * a for a in factor), 1.0)


def add_terms(a: Terms, b: Terms) -> Terms:
    return tuple(map(operator.add, a, b))


def terms_for_others(record: tuple[int, tuple[Sequence[tuple[int, float]], Factor]]) -> list[tuple[int, Terms]]:
    """(item, ((user, stars) for its ratings), item factor) -> (user, that rating's terms), and
    the same from a user's side."""
    _, (rated, factor) = record
    return [(other, normal_terms(factor, stars)) for other, stars in rated]


def solve(terms: Terms) -> Factor:
    """The factor x of (A + LAMBDA * n * I) x = b: Cholesky, then two triangular solves."""
    n = RANK
    count = terms[-1]
    a = [[terms[r * n + c] + (LAMBDA * count if r == c else 0.0) for c in range(n)] for r in range(n)]
    b = terms[n * n : n * n + n]
    lower = [[0.0] * n for _ in range(n)]
    for r in range(n):
        for c in range(r + 1):
            s = a[r][c] - sum(lower[r][k] * lower[c][k] for k in range(c))
            lower[r][c] = math.sqrt(s) if r == c else s / lower[c][c]
    y = [0.0] * n
    for r in range(n):
        y[r] = (b[r] - sum(lower[r][k] * y[k] for k in range(r))) / lower[r][r]
    x = [0.0] * n
    for r in reversed(range(n)):
        x[r] = (y[r] - sum(lower[k][r] * x[k] for k in range(r + 1, n))) / lower[r][r]
    return tuple(x)


def als_loss(ratings: Iterable[tuple[int, tuple[int, float]]], users: dict[int, Factor], items: dict[int, Factor]) -> float:
    """The sum of squared errors of the factors' predictions over the ratings."""
    return math.fsum((stars - sum(map(operator.mul, users[user], items[item]))) ** 2 for user, (item, stars) in ratings)


def synthetic_ratings(users: int, items: int, ratings: int) -> list[tuple[int, tuple[int, float]]]:
    return [rating(users, items, index) for index in range(ratings)]


def als_reference(all_ratings: list[tuple[int, tuple[int, float]]], passes: int) -> float:
    """The loss after `passes` passes over these ratings, from the same start as the engines."""
    of_user: dict[int, list[tuple[int, float]]] = defaultdict(list)
    of_item: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for user, (item, stars) in all_ratings:
        of_user[user].append((item, stars))
        of_item[item].append((user, stars))
    item_factors = {item: initial_factor(item) for item in of_item}
    user_factors: dict[int, Factor] = {}
    for _ in range(passes):
        user_factors = _solved(of_item, item_factors)
        item_factors = _solved(of_user, user_factors)
    return als_loss(all_ratings, user_factors, item_factors)


def _solved(rated_by: dict[int, list[tuple[int, float]]], factors: dict[int, Factor]) -> dict[int, Factor]:
    """New factors of the other side, from these factors and the ratings each key was part of."""
    terms: dict[int, Terms] = {}
    for key, rated in rated_by.items():
        for other, share in terms_for_others((key, (rated, factors[key]))):
            terms[other] = add_terms(terms[other], share) if other in terms else share
    return {other: solve(t) for other, t in terms.items()}


# --- stream --------------------------------------------------------------------------------------


def batch_records(batch: int, records: int, keys: int) -> list[tuple[int, int]]:
    """Batch `batch`'s records: (key, value), value 0 to 99."""
    out = []
    for j in range(records):
        x = _mix(batch * records + j)
        out.append((x % keys, (x >> 7) % 100))
    return out


def fold_batch(lists: tuple[Sequence[int], Sequence[tuple[int, int]]]) -> tuple[int, int]:
    """(the batch's values of a key, [its state] or []) -> its new state: (count, sum)."""
    values, old = lists
    count, total = old[0] if old else (0, 0)
    return count + len(values), total + sum(values)


def stream_reference(batches: int, records: int, keys: int) -> dict[int, tuple[int, int]]:
    state: dict[int, tuple[int, int]] = {}
    for batch in range(batches):
        values: dict[int, list[int]] = defaultdict(list)
        for key, value in batch_records(batch, records, keys):
            values[key].append(value)
        for key in values.keys() | state.keys():
            state[key] = fold_batch((values.get(key, []), [state[key]] if key in state else []))
    return state
