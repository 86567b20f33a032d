"""The C heap's figures, and every service's loop handing its free pages back to the OS."""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Iterator

import pytest
import structlog
from squall.common import c_heap
from squall.common.settings import Settings
from squall.common.transport import ServiceLoop

from tests.heap_holes import BLOCKS, holed_heap, rss_anon_mib

pytestmark = pytest.mark.skipif(not c_heap.allocator(), reason="glibc's malloc only")


@pytest.fixture
def holes() -> Iterator[list[bytearray]]:
    """32 MiB free inside the heap, kept by malloc until trimmed."""
    yield holed_heap()


@pytest.fixture
def restore_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()  # ServiceLoop.run freezes what exists and raises the thresholds: undo both
    gc.set_threshold(*thresholds)


def test_allocator_figures_add_up() -> None:
    figures = c_heap.allocator()
    assert figures["malloc_held"] >= figures["malloc_in_use"] > 0
    assert figures["malloc_free"] >= 0 and figures["python_blocks"] > 0


def test_trim_gives_free_pages_in_the_middle_of_the_heap_back(holes: list[bytearray]) -> None:
    before = rss_anon_mib()
    c_heap.trim()
    assert rss_anon_mib() < before - 16, "at least half the 32 MiB of holes goes back"
    assert len(holes) == BLOCKS // 2


def test_large_blocks_stay_mapped_on_their_own_after_a_larger_one_is_freed() -> None:
    c_heap.map_large_blocks()
    freed = bytearray(4 * 2**20)  # unpinned, freeing it would raise glibc's threshold to 4 MiB
    del freed
    # Other threads of this process (a test's leftover daemon) may map or unmap a block meanwhile:
    # one clean look out of a few is enough; from the heap, no look would see the block mapped.
    deltas = []
    for _ in range(5):
        before = c_heap.allocator()["malloc_mapped_blocks"]
        block = bytearray(512 * 1024)
        deltas.append(c_heap.allocator()["malloc_mapped_blocks"] - before)
        del block
        if deltas[-1] == 1:
            break
    assert 1 in deltas, f"a 512 KiB block came from the heap (mapped blocks changed by {deltas})"


def run_loop_for(interval: float, seconds: float, until: float) -> float:
    """Run a service loop with memory_trim_interval=`interval` until resident memory is below
    `until` MiB or `seconds` pass; the resident memory at the end."""
    loop = ServiceLoop(Settings(memory_trim_interval=interval), structlog.get_logger())
    deadline = time.monotonic() + seconds

    def check() -> None:
        if rss_anon_mib() < until or time.monotonic() > deadline:
            loop.stop()

    loop.every(0.01, check)
    loop.run()
    return rss_anon_mib()


@pytest.mark.skipif(sys.platform != "linux", reason="/proc")
def test_a_service_loop_trims_its_heap_periodically(holes: list[bytearray], restore_gc: None) -> None:
    before = rss_anon_mib()
    assert run_loop_for(0.0, 0.3, before - 16) > before - 16, "without trimming the holes stay"
    assert run_loop_for(0.05, 10.0, before - 16) < before - 16
