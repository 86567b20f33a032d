"""What a service holds: the sizes of its tables, and on request its live Python objects by type.

Every service answers GetTracked with Tracked. A stream that runs for weeks must hold a constant
amount: anything kept per batch, job, group or run is released once nothing can need it. The
soak benchmark and the long-run test read these counts; the heap view (gc's objects by type,
which costs a pass over every object) is there for diagnosing what a count does not show. When the
process runs under tracemalloc (PYTHONTRACEMALLOC=1), the heap view also names the source lines
holding the most traced memory, keyed "file:line" with bytes: that is where a slow growth shows.
Every reply also carries the allocators' own figures (common.c_heap, common.pymalloc), which tell
a native leak from fragmentation when resident memory grows while the Python heap does not, and the
cyclic garbage collector's: objects it had to free (garbage in reference cycles, which waits for a
collection instead of going at once) make the heap's peaks higher than what is live.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections import Counter

from squall.common.c_heap import allocator
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


def memory_figures() -> dict[str, int]:
    """The allocators' figures (common.c_heap.allocator) and the cyclic garbage collector's:
    collections of each generation so far (`gc_collections_0`..`_2`) and the objects they freed
    in all (`gc_collected`): garbage in reference cycles, freed only when a collection runs."""
    stats = gc.get_stats()
    return {**allocator(), **{f"gc_collections_{generation}": s["collections"] for generation, s in enumerate(stats)},
            "gc_collected": sum(s["collected"] for s in stats)}


def tracked_reply(service: str, sizes: dict[str, int], heap: bool, counters: dict[str, float] | None = None) -> Tracked:
    return Tracked(service=service, sizes=sizes, heap=heap_by_type() if heap else {},
                   traced=heap_by_line() if heap else {}, allocator=memory_figures(), counters=counters or {})
