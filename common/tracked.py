"""What a service holds: the sizes of its tables, and on request its live Python objects by type.

Every service answers GetTracked with Tracked. A stream that runs for weeks must hold a constant
amount: anything kept per batch, job, group or run is released once nothing can need it. The
soak benchmark and the long-run test read these counts; the heap view (gc's objects by type,
which costs a pass over every object) is there for diagnosing what a count does not show.
"""

from __future__ import annotations

import gc
from collections import Counter

from squall.common.protocol import Tracked

HEAP_TYPES = 40  # the most numerous object types a heap view names


def heap_by_type(top: int = HEAP_TYPES) -> dict[str, int]:
    """Live objects tracked by the garbage collector, counted by type name: the `top` most numerous."""
    counts = Counter(type(obj).__name__ for obj in gc.get_objects())
    return dict(counts.most_common(top))


def tracked_reply(service: str, sizes: dict[str, int], heap: bool) -> Tracked:
    return Tracked(service=service, sizes=sizes, heap=heap_by_type() if heap else {})
