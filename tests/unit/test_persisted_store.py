"""An executor's persisted blocks (services/executor/persisted.py): least recently used out first,
within an exact byte budget; blocks larger than all of it never kept; unpersisted datasets fenced."""

from __future__ import annotations

import pytest
from squall.common.protocol import PersistedBlock
from squall.services.executor.persisted import Kept, PersistedStore

pytestmark = pytest.mark.timeout(10)


def keep(store: PersistedStore, *made: tuple[str, int, bytes]) -> Kept:
    kept = store.keep([(dataset_id, partition, 8, block) for dataset_id, partition, block in made])
    store.validate()
    return kept


def held(store: PersistedStore) -> set[tuple[str, int]]:
    return {(b.dataset_id, b.partition) for b in store.held()}


def test_blocks_fill_the_budget_exactly_and_the_least_recently_used_go_first():
    store = PersistedStore(budget=100)
    keep(store, ("d", 0, b"a" * 40), ("d", 1, b"b" * 30))
    assert keep(store, ("d", 2, b"c" * 30)).dropped == []  # 100 bytes: exactly the budget
    assert store.bytes == 100
    assert store.get("d", 0) == b"a" * 40  # read: now the most recently used; partition 1 is the least
    kept = keep(store, ("d", 3, b"d" * 10))
    assert kept.held == [PersistedBlock("d", 3, 8, 10)]
    assert kept.dropped == [PersistedBlock("d", 1, 8, 30)]
    assert held(store) == {("d", 0), ("d", 2), ("d", 3)} and store.bytes == 80
    assert store.get("d", 1) is None


def test_as_many_go_as_it_takes_to_fit_and_no_more():
    store = PersistedStore(budget=100)
    keep(store, ("d", 0, b"x" * 20), ("d", 1, b"x" * 20), ("d", 2, b"x" * 20), ("d", 3, b"x" * 20))
    kept = keep(store, ("e", 0, b"y" * 55))
    assert [(b.dataset_id, b.partition) for b in kept.dropped] == [("d", 0), ("d", 1)]
    assert store.bytes == 95


def test_a_block_larger_than_the_whole_budget_is_not_kept_and_reported_once_per_dataset():
    store = PersistedStore(budget=100)
    keep(store, ("small", 0, b"s" * 50))
    kept = keep(store, ("big", 0, b"b" * 101))
    assert kept == Kept(held=[], dropped=[], too_large=[("big", 101)])
    assert held(store) == {("small", 0)}  # nothing was dropped for it
    assert keep(store, ("big", 1, b"b" * 200)).too_large == []  # the same dataset: reported already
    assert keep(store, ("other", 0, b"o" * 101)).too_large == [("other", 101)]


def test_a_budget_of_zero_keeps_nothing_and_says_nothing():
    store = PersistedStore(budget=0)
    assert keep(store, ("d", 0, b"x")) == Kept()
    assert len(store) == 0


def test_the_same_partition_kept_again_replaces_its_block():
    store = PersistedStore(budget=100)
    keep(store, ("d", 0, b"old" * 10), ("d", 1, b"x" * 50))
    kept = keep(store, ("d", 0, b"new" * 5))
    assert kept.held == [PersistedBlock("d", 0, 8, 15)] and kept.dropped == []
    assert store.get("d", 0) == b"new" * 5 and store.bytes == 65


def test_a_block_pushed_out_by_a_later_one_of_the_same_task_is_neither_registered_nor_dropped():
    store = PersistedStore(budget=100)
    keep(store, ("old", 0, b"o" * 30))
    kept = keep(store, ("d", 0, b"a" * 60), ("d", 1, b"b" * 60))
    assert kept.held == [PersistedBlock("d", 1, 8, 60)]
    assert kept.dropped == [PersistedBlock("old", 0, 8, 30)]  # the directory never heard of ("d", 0)


def test_a_registered_block_replaced_and_pushed_out_in_one_go_is_dropped():
    store = PersistedStore(budget=100)
    keep(store, ("d", 0, b"a" * 40))
    kept = keep(store, ("d", 0, b"b" * 40), ("d", 1, b"c" * 70))
    assert kept.held == [PersistedBlock("d", 1, 8, 70)]
    assert kept.dropped == [PersistedBlock("d", 0, 8, 40)]


def test_dropping_datasets_frees_their_bytes_and_refuses_their_blocks_from_then_on():
    store = PersistedStore(budget=100)
    keep(store, ("d", 0, b"x" * 30), ("d", 1, b"x" * 30), ("keep", 0, b"k" * 10))
    store.drop(["d"])
    store.validate()
    assert held(store) == {("keep", 0)} and store.bytes == 10
    assert keep(store, ("d", 2, b"late")) == Kept()  # computed by a task that ran while it was unpersisted
    assert held(store) == {("keep", 0)}
    assert store.tracked() == {"persisted_blocks": 1, "persisted_bytes": 10, "persisted_forgotten": 1, "persisted_warned": 0}
