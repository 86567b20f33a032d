"""The memory figures every service reports (common.tracked.memory_figures): the allocators' and
the cyclic garbage collector's."""

from __future__ import annotations

import gc

from squall.common.tracked import memory_figures


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def test_garbage_in_reference_cycles_shows_as_collected() -> None:
    gc.collect()
    before = memory_figures()
    for _ in range(100):  # pairs that reference each other: only the cyclic collector frees them
        a, b = Node(), Node()
        a.other, b.other = b, a
    del a, b
    gc.collect()
    after = memory_figures()
    assert after["gc_collected"] - before["gc_collected"] >= 200
    assert after["gc_collections_2"] == before["gc_collections_2"] + 1


def test_they_include_the_allocators_figures() -> None:
    figures = memory_figures()
    assert figures["python_blocks"] > 0
    assert {"gc_collections_0", "gc_collections_1", "gc_collections_2"} <= set(figures)
