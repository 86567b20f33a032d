"""What a service holds: the sizes of its tables, and on request its live Python objects by type.

Every service answers GetTracked with Tracked. A stream that runs for weeks must hold a constant
amount: anything kept per batch, job, group or run is released once nothing can need it. The
soak benchmark and the long-run test read these counts; the heap view (gc's objects by type,
which costs a pass over every object) is there for diagnosing what a count does not show. When the
process runs under tracemalloc (PYTHONTRACEMALLOC=1), the heap view also names the source lines
holding the most traced memory, keyed "file:line" with bytes: that is where a slow growth shows.
Every reply also carries the C allocator's own figures (glibc's mallinfo2, where there is one):
bytes in use and bytes free but kept, which tell a native leak from fragmentation when resident
memory grows while the Python heap does not.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import sys
import tracemalloc
from collections import Counter
from functools import cache

from squall.common.protocol import Tracked

HEAP_TYPES = 40  # the most numerous object types (and largest allocation sites) a heap view names
SITE_FRAMES = 4  # frames that name an allocation site


def heap_by_type(top: int = HEAP_TYPES) -> dict[str, int]:
    """Live objects tracked by the garbage collector, counted by type name: the `top` most numerous."""
    counts = Counter(type(obj).__name__ for obj in gc.get_objects())
    return dict(counts.most_common(top))


def heap_by_line(top: int = HEAP_TYPES) -> dict[str, int]:
    """Bytes held by the `top` allocation sites, when tracemalloc traces this process; else nothing."""
    if not tracemalloc.is_tracing():
        return {}
    stats = tracemalloc.take_snapshot().statistics("traceback")[:top]
    # innermost first: "x.py:3 < caller.py:40 < ..." (as many frames as PYTHONTRACEMALLOC asked for)
    return {" < ".join(f"{f.filename}:{f.lineno}" for f in reversed(list(s.traceback)[-SITE_FRAMES:])): s.size for s in stats}


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


@cache
def _mallinfo2() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        function = libc.mallinfo2  # glibc >= 2.33
    except (OSError, AttributeError):
        return None  # musl, an older glibc
    function.restype = _MallInfo2
    return function


def allocator() -> dict[str, int]:
    """The C heap: bytes malloc has from the system (`malloc_held`, mmapped blocks included), of
    which handed out and not had back (`malloc_in_use`) and free (`malloc_free`: fragmentation or
    not yet returned); and Python's small-object blocks in use (`python_blocks`; Python's
    small-object arenas are mapped outside malloc). Empty where glibc's mallinfo2 is missing."""
    function = _mallinfo2()
    if function is None:
        return {}
    info = function()
    return {"malloc_held": info.arena + info.hblkhd, "malloc_in_use": info.uordblks + info.hblkhd,
            "malloc_free": info.fordblks,
            "python_blocks": sys.getallocatedblocks()}


def tracked_reply(service: str, sizes: dict[str, int], heap: bool, counters: dict[str, float] | None = None) -> Tracked:
    return Tracked(service=service, sizes=sizes, heap=heap_by_type() if heap else {},
                   traced=heap_by_line() if heap else {}, allocator=allocator(), counters=counters or {})
