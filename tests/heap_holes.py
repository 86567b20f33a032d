"""Free memory in the middle of malloc's heap, for tests of handing it back: resident memory
drops only if something trims the heap (common.c_heap.trim)."""

from __future__ import annotations

BLOCK = 16 * 1024  # below malloc's mmap threshold: these come from the heap itself
BLOCKS = 4096  # 64 MiB, half of it freed in holes no heap top trim can reach
HOLES_MIB = BLOCK * BLOCKS // 2 / 2**20


def rss_anon_mib() -> float:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("RssAnon:"))
    return int(line.split()[1]) / 1024


def holed_heap() -> list[bytearray]:
    """Every other block freed: HOLES_MIB free inside the heap, kept by malloc until trimmed.
    Keep the list (the blocks between the holes) until the test is over."""
    blocks = [bytearray(BLOCK) for _ in range(BLOCKS)]
    del blocks[::2]
    return blocks
