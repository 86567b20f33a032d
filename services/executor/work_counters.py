"""What an executor has done over its life, as plain counters its metrics endpoint reads
(services/executor/metrics.py). They live beside the task flow, not in it: a flow written off
(the scheduler forgot this executor) starts anew, the counters go on.

Counted where the work happens, one addition each: tasks completed (task_flow.py), shuffle
bytes pushed to peers (task_flow.py, as a map task's blocks go out) and fetched from them
(state.py, as the blocks arrive). The checkpointer keeps its own (checkpoints.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

from squall.common.protocol import Priority


@dataclass
class WorkCounters:
    tasks_completed: dict[Priority, int] = field(default_factory=lambda: {"latency": 0, "batch": 0})
    skipped_records: int = 0  # records user functions raised on, skipped (bad_records="skip")
    shuffle_bytes_pushed: int = 0  # map output blocks sent to reducers elsewhere with the notice (PushBlocks)
    shuffle_bytes_fetched: int = 0  # blocks a reducer here fetched from another executor (Blocks)


def payload_bytes(payloads: Iterable[object]) -> int:
    """The bytes of a message's payload frames (bytes, memoryviews or zmq.Frames)."""
    total = 0
    for frame in payloads:
        total += len(frame) if isinstance(frame, bytes | bytearray) else memoryview(cast(Any, frame)).nbytes
    return total
