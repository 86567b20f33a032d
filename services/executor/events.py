"""What happens to an executor, beside the common `Received` and `Tick` (squall.common.core).

A message on the scheduler connection arrives as `FromScheduler` (an ErrorReply there means
something else than one from a peer); everything else the server sees is one of these events.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from squall.common.core import Event, Received
from squall.common.protocol import LaunchGroup, TaskDescriptor
from squall.services.executor.keyed_partitions import StateKey
from squall.services.executor.reports import Failure
from squall.services.executor.tasks import TaskOutput

Restored = dict[StateKey, tuple[int, dict[Any, Any]] | str]  # loaded checkpoints: (batch, table), or why not


@dataclass(frozen=True, kw_only=True, slots=True)
class Started(Event):
    """The server is up: register with the scheduler."""


@dataclass(frozen=True, kw_only=True, slots=True)
class FromScheduler(Received):
    """A message on the connection to the scheduler."""


@dataclass(frozen=True, kw_only=True, slots=True)
class TrackedAsked(Received):
    """GetTracked on our block socket; `server_sizes` are the tables the server itself holds."""

    server_sizes: dict[str, int] = field(default_factory=dict)
    server_counters: dict[str, float] = field(default_factory=dict)  # what the server measures (suspension latency)


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskCompleted(Event):
    """The runner finished a task (or it raised, or stopped): its output, or why it failed."""

    task: TaskDescriptor
    outcome: TaskOutput | Failure


@dataclass(frozen=True, kw_only=True, slots=True)
class SliceOver(Event):
    """The batch task given a slice (ResumeTask with a slice) ran it and parked itself again."""

    key: tuple[str, int, int]


@dataclass(frozen=True, kw_only=True, slots=True)
class HeldDue(Event):
    """The time asked for by WakeAt has come: source tasks held for their batch time may run."""


@dataclass(frozen=True, kw_only=True, slots=True)
class SchedulerForgotUs(Event):
    """The scheduler answered a heartbeat with Reregister: it restarted, or gave up on us."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ShuffleMetaRestarted(Event):
    """The shuffle_meta connection was made again: it restarted and knows nothing."""


@dataclass(frozen=True, kw_only=True, slots=True)
class CheckpointsWritten(Event):
    """State snapshots made durable: (state id, partition, batch) each."""

    written: list[tuple[str, int, int]]


@dataclass(frozen=True, kw_only=True, slots=True)
class StatesLoaded(Event):
    """The answer to LoadStates: the launch, and the checkpoint loaded for each restored partition
    (absent: none was written yet; a string: why it could not be read)."""

    launch: LaunchGroup
    restored: Restored


@dataclass(frozen=True, kw_only=True, slots=True)
class Terminated(Event):
    """The process got SIGTERM: leave gracefully (departure.py), or at once if asked again."""


@dataclass(frozen=True, kw_only=True, slots=True)
class AnswerOverdue(Event):
    """departure.ANSWER_TIMEOUT has passed since the first SIGTERM."""


@dataclass(frozen=True, kw_only=True, slots=True)
class GraceOver(Event):
    """decommission_timeout has passed since the first SIGTERM."""
