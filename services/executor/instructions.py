"""What the executor's core asks its server to do: plain values, carried out in order.

The common ones (`Send` a reply on our block socket, `ToShuffleMeta`, `Log`) come from
squall.common.core; the rest are the executor's own. Everything the server does, apart from moving
bytes and keeping its sockets tidy, is one of these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from squall.common.core import Log, Send, ToShuffleMeta
from squall.common.plan import StageSpec
from squall.common.protocol import LaunchGroup, Message, TaskDescriptor

TaskKey = tuple[str, int, int]  # (job_id, stage_id, partition)


@dataclass(frozen=True)
class ToScheduler:
    msg: Message
    payloads: tuple[object, ...] = ()


@dataclass(frozen=True)
class ToPeer:
    """Send to another executor's block socket (the server keeps one connection per address)."""

    address: str
    msg: Message
    payloads: tuple[object, ...] = ()


@dataclass(frozen=True)
class Connect:
    """Open connections to these peers now (those already open stay as they are). A group's map
    tasks will push to them and its result tasks send there as soon as its batches are due; a new
    connection's handshake (TCP, CurveZMQ, the peer's authentication) is better made while the
    group waits for its batches than when a batch's blocks wait on it, as after executors join."""

    addresses: tuple[str, ...]


@dataclass(frozen=True)
class RunTask:
    """Run a task whose inputs are all present. It carries the pickled code its stage needs (the
    runner keeps no store of its own that the loop could change under it), and the persisted
    blocks it reads (dataset id -> block)."""

    task: TaskDescriptor
    spec: StageSpec
    inputs: list[object]
    code: dict[str, bytes] = field(default_factory=dict, compare=False, repr=False)
    persisted: dict[str, object] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class StopTask:
    """Ask the runner to stop this task at its next safe point (its run was cancelled)."""

    key: TaskKey


@dataclass(frozen=True)
class SuspendTask:
    """Park the batch task at its next safe point until ResumeTask (a latency task runs meanwhile).
    Carried out before the RunTask of the same step."""

    key: TaskKey


@dataclass(frozen=True)
class ResumeTask:
    """Let the suspended batch task go on: for good (`slice` 0), or for `slice` seconds, after
    which it parks itself again and the loop hears of it (SliceOver)."""

    key: TaskKey
    slice: float = 0.0


@dataclass(frozen=True)
class PreemptTask:
    """Abandon the batch task at its next safe point (preemption "kill"): it returns as Preempted,
    and runs again later from its start."""

    key: TaskKey


@dataclass(frozen=True)
class RestoreState:
    """A stateful partition starts over from `table` (its checkpoint, or empty)."""

    state_id: str
    partition: int
    table: dict[Any, Any]


@dataclass(frozen=True)
class DropStates:
    """State tables go: every partition's of these states (their streams ended), or only
    `partition`'s (its checkpoint was unreadable, or it was handed over to another executor)."""

    state_ids: list[str]
    partition: int | None = None


@dataclass(frozen=True)
class LoadStates:
    """Load the checkpoints of the partitions `launch` restores, and answer with StatesLoaded."""

    launch: LaunchGroup


@dataclass(frozen=True)
class CheckpointMapOutput:
    """Write a map task's blocks to the checkpoint store, in the background."""

    key: str
    blocks: list[bytes]


@dataclass(frozen=True)
class CheckpointState:
    """Snapshot a stateful partition as it is after `batch` and write it, in the background."""

    state_id: str
    partition: int
    batch: int


@dataclass(frozen=True)
class PruneMapCheckpoints:
    """Delete the state's map-output checkpoints of batches before `before`."""

    state_id: str
    before: int


@dataclass(frozen=True)
class ForgetCheckpoints:
    """The streams of these states ended: delete all their checkpoints."""

    state_ids: list[str]


@dataclass(frozen=True)
class WakeAt:
    """Feed a HeldDue event at monotonic time `when` (a held source task's batch time)."""

    when: float


@dataclass(frozen=True)
class Activate:
    """Registered: heartbeats start, and the shuffle_meta connection is made (once)."""

    shuffle_meta_address: str


@dataclass(frozen=True)
class Reconnect:
    """The scheduler forgot us: heartbeats stop until we are registered again, and the scheduler
    connection is replaced by a fresh one (what was queued on the old one is written off)."""


@dataclass(frozen=True)
class Exit:
    """Stop the service and exit with `code` (the scheduler let it go, or it gave up waiting)."""

    code: int = 0


@dataclass(frozen=True)
class DiscardWork:
    """Everything run so far is written off: results of tasks started before are ignored, and
    every state table goes."""


Instruction = (
    ToScheduler | ToShuffleMeta | ToPeer | Connect | Send | Log | RunTask | StopTask | SuspendTask | ResumeTask | PreemptTask
    | CheckpointMapOutput | CheckpointState | PruneMapCheckpoints | ForgetCheckpoints | LoadStates | RestoreState | DropStates | WakeAt
    | Activate | Reconnect | DiscardWork | Exit
)
