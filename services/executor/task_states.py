"""The states a task goes through on an executor, and the bounded log of its transitions.

    waiting --inputs in--> ready --runner free--> running --> done | failed
    held (a source task before its batch time) --time--> ready
    parked (batch b of a state before b - 1 is over) --b - 1 over--> ready
    running --its job released or cancelled--> cancelled (still on the runner until it returns)
    running --its partition restored from a checkpoint meanwhile--> orphaned (its batch does not count)
    running (batch) --a latency task to run--> suspended --latency work over--> running
    running (batch) --a latency task to run, preemption "kill"--> preempted --its thread returns--> ready

A task not yet over may be cancelled (its job released) or fail (an input lost, a report that
cannot travel). Done, failed, cancelled and orphaned are final; a cancelled or orphaned task the
runner still has stays the running one until the runner returns it. A stateful task whose batch
was applied already is done at once (it takes the output kept from then). Only a batch task is
ever suspended (its thread parked at a safe point, to be resumed where it stopped) or preempted
(abandoned at its next safe point, to run again from its start); either stays the batch lane's
task until its thread returns it. The story log keeps the newest
transitions of all tasks in one ring, so its size never depends on how long the executor runs.
"""

from __future__ import annotations

from collections import deque
from enum import Enum

TaskKey = tuple[str, int, int]  # (job_id, stage_id, partition)


class TaskState(Enum):
    WAITING = "waiting"  # for its shuffle inputs
    HELD = "held"  # a source task waiting for its batch's time
    PARKED = "parked"  # a stateful task waiting for its state's previous batch
    READY = "ready"  # in the local queue
    RUNNING = "running"
    CANCELLED = "cancelled"  # its job ended; if it was running, the runner still has it
    ORPHANED = "orphaned"  # running while its partition was taken over from a checkpoint
    SUSPENDED = "suspended"  # a batch task parked at a safe point while latency work runs
    PREEMPTED = "preempted"  # a batch task abandoned for latency work: it runs again from its start
    DONE = "done"
    FAILED = "failed"

    # Members are singletons: hash by identity, in C (Enum's own hash is a Python call, and every
    # transition checks a pair of states against ALLOWED).
    __hash__ = object.__hash__


WAITING, HELD, PARKED, READY, RUNNING = TaskState.WAITING, TaskState.HELD, TaskState.PARKED, TaskState.READY, TaskState.RUNNING
CANCELLED, ORPHANED, DONE, FAILED = TaskState.CANCELLED, TaskState.ORPHANED, TaskState.DONE, TaskState.FAILED
SUSPENDED, PREEMPTED = TaskState.SUSPENDED, TaskState.PREEMPTED

OVER = frozenset({DONE, FAILED, CANCELLED, ORPHANED})
ON_RUNNER = frozenset({RUNNING, CANCELLED, ORPHANED})  # a task the latency lane has (at most one)
ON_BATCH_LANE = ON_RUNNER | {SUSPENDED, PREEMPTED}  # a task the batch lane has (at most one)
QUEUED = frozenset({WAITING, HELD, PARKED, READY})
NEW = None  # the state before a task's first transition

ALLOWED: frozenset[tuple[TaskState | None, TaskState]] = frozenset(
    {(NEW, s) for s in (WAITING, HELD, PARKED, READY, DONE, FAILED, CANCELLED)}
    | {(s, READY) for s in (WAITING, HELD, PARKED)}
    | {(WAITING, PARKED), (READY, RUNNING)}
    | {(s, DONE) for s in (WAITING, PARKED, READY, RUNNING)}  # done at once: its batch's output was kept
    | {(s, FAILED) for s in (*QUEUED, RUNNING)}
    | {(s, CANCELLED) for s in (*QUEUED, RUNNING)}
    | {(RUNNING, ORPHANED), (CANCELLED, ORPHANED)}
    | {(RUNNING, SUSPENDED), (SUSPENDED, RUNNING), (SUSPENDED, CANCELLED), (SUSPENDED, ORPHANED)}
    | {(RUNNING, PREEMPTED), (PREEMPTED, READY), (PREEMPTED, CANCELLED)}
    # A task asked to park or die may pass its last safe point first, and finish or fail.
    | {(s, t) for s in (SUSPENDED, PREEMPTED) for t in (DONE, FAILED)}
)


class InvalidTransition(AssertionError):
    pass


class Stories:
    """The newest transitions, as (task key, from, to, stimulus id, time) tuples, oldest first."""

    def __init__(self, length: int) -> None:
        self._log: deque[tuple[TaskKey, TaskState | None, TaskState, str, float]] = deque(maxlen=length)

    def __len__(self) -> int:
        return len(self._log)

    def record(self, key: TaskKey, old: TaskState | None, new: TaskState, stimulus_id: str, now: float) -> None:
        if (old, new) not in ALLOWED:
            raise InvalidTransition(f"task {key}: {old.value if old else 'new'} -> {new.value} ({stimulus_id})")
        self._log.append((key, old, new, stimulus_id, now))

    def story(self, key: TaskKey) -> list[tuple[TaskState | None, TaskState, str, float]]:
        return [(old, new, stimulus_id, now) for k, old, new, stimulus_id, now in self._log if k == key]
