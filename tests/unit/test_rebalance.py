"""squall.services.scheduler.rebalance: where keyed state partitions go as executors join and leave."""

from __future__ import annotations

from collections import Counter

import pytest
from squall.services.scheduler.rebalance import balanced_moves

pytestmark = pytest.mark.timeout(10)


def after(owners: dict[int, str], moves: list[tuple[int, str, str]]) -> dict[int, str]:
    final = dict(owners)
    for partition, old, new in moves:
        assert final[partition] == old, f"partition {partition} moved from {old}, but {final[partition]} owns it"
        final[partition] = new
    return final


def test_joining_executors_take_partitions_from_the_most_loaded_and_no_more_move_than_needed():
    owners = {p: f"e{p % 4}" for p in range(12)}  # 3 each on e0..e3
    moves = balanced_moves(owners, [f"e{i}" for i in range(6)], set())
    counts = Counter(after(owners, moves).values())
    assert sorted(counts.values()) == [2] * 6
    assert len(moves) == 4 and {new for _, _, new in moves} == {"e4", "e5"}
    assert len({p for p, _, _ in moves}) == len(moves)  # each partition moves once


def test_a_leaving_executors_partitions_go_to_the_least_loaded_others():
    owners = {p: f"e{p % 6}" for p in range(12)}
    targets = ["e0", "e1"]
    moves = balanced_moves(owners, targets, {"e2", "e3", "e4", "e5"})
    final = after(owners, moves)
    assert Counter(final.values()) == {"e0": 6, "e1": 6}
    assert {old for _, old, _ in moves} == {"e2", "e3", "e4", "e5"}  # the stayers keep theirs


def test_an_even_spread_stays_put():
    owners = {0: "e0", 1: "e1", 2: "e2", 3: "e0", 4: "e1"}
    assert balanced_moves(owners, ["e0", "e1", "e2"], set()) == []


def test_without_balancing_only_a_leaving_executors_partitions_move():
    owners = {p: f"e{p % 2}" for p in range(8)}
    assert balanced_moves(owners, ["e0", "e1", "e2"], set(), balance=False) == []
    moves = balanced_moves(owners, ["e0", "e2"], {"e1"}, balance=False)
    assert Counter(after(owners, moves).values()) == {"e0": 4, "e2": 4}


def test_partitions_of_an_executor_gone_are_left_to_recovery():
    owners = {0: "e0", 1: "dead", 2: "e0", 3: "e0"}
    moves = balanced_moves(owners, ["e0", "e1"], set())
    assert 1 not in {p for p, _, _ in moves}
    assert Counter(after(owners, moves).values()) == {"e0": 2, "e1": 1, "dead": 1}


def test_the_extra_partition_goes_to_the_executor_owning_fewest_over_all_states():
    owners = {0: "e0", 1: "e0", 2: "e0"}
    moves = balanced_moves(owners, ["e0", "e1", "e2", "e3"], set(), load={"e0": 3, "e1": 5, "e2": 0, "e3": 1})
    assert [new for _, _, new in moves] == ["e2", "e3"]


def test_no_target_no_move():
    assert balanced_moves({0: "e0"}, [], {"e0"}) == []
