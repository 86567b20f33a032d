"""The C heap under a Python process (glibc's malloc): its figures, and handing its free pages back.

Python objects live in Python's own small-object arenas, but every message buffer, compressed
block and C extension's data comes from malloc. A long-lived service that allocates buffers of
many sizes leaves free holes in malloc's heaps, and glibc returns to the operating system only
the free memory at the top of a heap: measured on a 100,000 events/s stream, each executor's
resident memory grew by about 0.7 MiB an hour while the bytes malloc had handed out stayed flat;
the growth was free memory malloc kept. `trim()` (glibc's malloc_trim) gives the free pages in the
middle of the heaps back too; each service calls it every Settings.memory_trim_interval seconds.
And `map_large_blocks()` pins malloc's mmap threshold: by default glibc raises it to the size of
every large block freed (up to 32 MiB), after which blocks of that size (a pushed shuffle block, a
big message) come from the heap and leave holes there when freed; pinned, they are mapped and
unmapped on their own. Elsewhere (musl, macOS) all three are no-ops.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from functools import cache
from typing import Any

from squall.common import pymalloc


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


@cache
def _libc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallinfo2.restype = _MallInfo2  # glibc >= 2.33
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        return libc
    except (OSError, AttributeError):
        return None  # musl, an older glibc


def allocator() -> dict[str, int]:
    """The C heap: bytes malloc has from the system (`malloc_held`, mmapped blocks included), of
    which handed out and not had back (`malloc_in_use`) and free (`malloc_free`: fragmentation or
    not yet returned), and how many blocks are mapped on their own (`malloc_mapped_blocks`);
    Python's small-object blocks in use (`python_blocks`); and the arenas Python maps outside
    malloc for those blocks (common.pymalloc: `pymalloc_held`, `pymalloc_in_use`, `pymalloc_free`,
    `pymalloc_arenas`, `pymalloc_arenas_highwater`). Empty where glibc's mallinfo2 is missing."""
    libc = _libc()
    if libc is None:
        return {}
    info = libc.mallinfo2()
    return {"malloc_held": info.arena + info.hblkhd, "malloc_in_use": info.uordblks + info.hblkhd,
            "malloc_free": info.fordblks, "malloc_mapped_blocks": info.hblks, "python_blocks": sys.getallocatedblocks(), **pymalloc.figures()}


def trim() -> None:
    """Give the C heap's free pages back to the operating system."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


M_MMAP_THRESHOLD = -3  # mallopt's parameter (malloc.h)
LARGE_BLOCK = 128 * 1024  # glibc's initial threshold, kept: blocks from here up are mapped on their own


def map_large_blocks() -> bool:
    """Pin malloc's mmap threshold (see the module docstring); True if glibc took it."""
    libc = _libc()
    return bool(libc.mallopt(M_MMAP_THRESHOLD, LARGE_BLOCK)) if libc is not None else False
