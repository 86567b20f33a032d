"""The scheduler's own events and instructions, beside the shared ones of common/core.py.

Events are what the server observes besides messages (`Received`) and time (`Tick`): the watch
connections to executors (watch.py) coming up or dropping, and a connection to the ROUTER
dropping, after which the drivers the scheduler holds something for are probed (driver_watch.py).
Instructions are what the server carries out besides sending and logging: which executors to
keep a watch connection to, and which drivers to probe.
"""

from __future__ import annotations

from dataclasses import dataclass

from squall.common.core import Event, Log, Send, ToShuffleMeta


@dataclass(frozen=True, kw_only=True, slots=True)
class ExecutorConnected(Event):
    """The watch connection to this admission (`joined`) of the executor is up: from now on its
    process is vouched for by ZeroMQ's heartbeats, and its silence only makes it hung."""

    executor_id: str
    joined: int


@dataclass(frozen=True, kw_only=True, slots=True)
class ExecutorDisconnected(Event):
    """The watch connection to the executor dropped: its process died, stopped or was cut off."""

    executor_id: str


@dataclass(frozen=True, kw_only=True, slots=True)
class ConnectionDropped(Event):
    """Some connection to the scheduler's ROUTER dropped (whose, a probe of the drivers tells)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class DriversGone(Event):
    """These drivers' connections are gone (a probe found them unreachable)."""

    drivers: tuple[bytes, ...]


@dataclass(frozen=True)
class WatchExecutors:
    """Keep a watch connection to exactly these executors: id -> (block address, admission).
    Given whenever membership changed."""

    executors: dict[str, tuple[str, int]]


@dataclass(frozen=True)
class ProbeDrivers:
    """Ask the ROUTER whether these drivers are still connected; the unreachable come back as
    DriversGone."""

    drivers: tuple[bytes, ...]


Instruction = Send | ToShuffleMeta | Log | WatchExecutors | ProbeDrivers
