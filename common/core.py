"""The vocabulary every service's pure core speaks: events in, instructions out.

A core is one object with one entry, `handle(event) -> list[Instruction]`. Its server only moves
bytes and time: it turns what arrives (a message, a timer, a thread's result) into an event, calls
`handle`, and carries out the instructions it gets back, in order. Everything a service decides is
therefore visible to a unit test as a list of plain values.

Each event carries the time it happened (the server's monotonic clock, so cores never read a
clock) and a stimulus id, the name of what caused it; the instructions and task transitions an
event causes are logged with that id, so a debug log can follow one cause through a service.
Instructions that mean the same thing in every service are defined here once; a service adds its
own (an executor's `RunTask`, say) beside its core.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from squall.common.protocol import Message

_stimuli = itertools.count(1)


def stimulus(kind: str) -> str:
    """A fresh stimulus id: what caused an event, and a number unique in this process."""
    return f"{kind}-{next(_stimuli)}"


@dataclass(frozen=True, kw_only=True, slots=True)
class Event:
    """Something that happened to a service. `now` is its monotonic clock when it happened."""

    now: float
    stimulus_id: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class Received(Event):
    """A message arrived. `peer` is the sender's routing identity on our bound socket, or None
    when it came on a connection we opened (the scheduler, shuffle_meta, another executor)."""

    msg: Message
    payloads: list[object] = field(default_factory=list)
    peer: bytes | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Tick(Event):
    """Time passed: deadlines are checked."""


# --- instructions every service may give ---------------------------------------------------------


@dataclass(frozen=True)
class Send:
    """Send `msg` on our bound socket to the peer with routing identity `peer`. `frames`, when
    set, is the message already encoded (it was measured), and goes out as it is."""

    peer: bytes
    msg: Message
    payloads: tuple[object, ...] = ()
    frames: list[object] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class ToShuffleMeta:
    """Send `msg` to the shuffle-metadata service, on the connection this service keeps to it."""

    msg: Message


@dataclass(frozen=True)
class Log:
    """Write a structured log line (a decision worth an operator's eye: an executor lost, a
    replay, a run cancelled). `level` is a structlog method name: "debug", "info", "warning", "error"."""

    level: str
    event: str
    fields: dict[str, object] = field(default_factory=dict)
