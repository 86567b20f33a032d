"""Driving an ExecutorState in unit tests: specs, event constructors, and `feed`, which hands one
event to the core, checks its invariants (validate) and returns its instructions.

`Executor` plays the server's part without sockets: each method builds the event the server would
build for that message or happening (with sensible defaults) and feeds it; a LaunchGroup with
restores is answered with StatesLoaded as the server answers LoadStates. Everything else (its
tables, `running`, `story`) is read from the core itself.
"""

from __future__ import annotations

from typing import Any

from squall.common.core import Event, Received, Tick
from squall.common.plan import Aggregator, RangeSource, ResultWrite, ShuffleRead, ShuffleWrite, StageSpec, StateUpdate
from squall.common.protocol import (
    Blocks,
    BlocksReady,
    CancelJobs,
    ErrorReply,
    FetchBlocks,
    LaunchGroup,
    LaunchTasks,
    MapOutputs,
    Message,
    PushBlocks,
    Registered,
    ReleaseJob,
    TaskDescriptor,
)
from squall.common.settings import Settings
from squall.services.executor.events import FromScheduler, HeldDue, Restored, SchedulerForgotUs, StatesLoaded, TaskCompleted
from squall.services.executor.instructions import Instruction, LoadStates, RunTask, ToScheduler
from squall.services.executor.reports import Failure
from squall.services.executor.state import ExecutorState
from squall.services.executor.tasks import TaskOutput

ME = "tcp://me:1"
GROUP = Aggregator(kind="group")


# --- stages --------------------------------------------------------------------------------------


def map_spec(reduces: int, maps: int = 2, shuffle_id: int = 7) -> StageSpec:
    """A source stage of `maps` partitions writing a grouping shuffle of `reduces` partitions."""
    return StageSpec(partitions=maps, input=RangeSource(start=0, stop=10, step=1, partitions=maps), ops=["fn"],
                     output=ShuffleWrite(shuffle_id=shuffle_id, partitions=reduces, aggregator=GROUP))


def reduce_spec(maps: int, reduces: int, shuffle_id: int = 7, state: StateUpdate | None = None) -> StageSpec:
    """A stage reading that shuffle and sending its result (updating keyed state first, if given)."""
    return StageSpec(partitions=reduces, input=ShuffleRead(shuffle_id=shuffle_id, map_partitions=maps, aggregator=GROUP),
                     ops=[], output=ResultWrite(), state=state)


# --- events --------------------------------------------------------------------------------------


def from_scheduler(msg: Message, now: float = 0.0) -> FromScheduler:
    return FromScheduler(now=now, stimulus_id=f"test-{type(msg).__name__}", msg=msg)


def received(msg: Message, payloads: list[object] | None = None, now: float = 0.0, peer: bytes | None = None) -> Received:
    """A message from a peer (or shuffle_meta); with `peer`, one on our block socket."""
    return Received(now=now, stimulus_id=f"test-{type(msg).__name__}", msg=msg, payloads=payloads or [], peer=peer)


def completed(task: TaskDescriptor, outcome: TaskOutput | Failure, now: float = 0.0) -> TaskCompleted:
    return TaskCompleted(now=now, stimulus_id="test-done", task=task, outcome=outcome)


def tick(now: float) -> Tick:
    return Tick(now=now, stimulus_id="test-tick")


def feed(state: ExecutorState, event: Event) -> list[Instruction]:
    """Handle one event and check the core's invariants after it."""
    out = state.handle(event)
    state.validate()
    return out


# --- the server's part ---------------------------------------------------------------------------


class Executor:
    def __init__(self, executor_id: str = "e1", address: str = ME, settings: Settings | None = None) -> None:
        self.state = ExecutorState(executor_id, address, settings or Settings())
        self.log: list[Instruction] = []  # every instruction fed so far
        self.restored: Restored = {}  # what LoadStates finds (launch_group sets it)

    def __getattr__(self, name: str) -> Any:  # the core's queries, and the tables of its tasks
        flow = self.state.flow
        return getattr(flow if hasattr(flow, name) else self.state, name)

    def feed(self, event: Event) -> list[Instruction]:
        out = feed(self.state, event)
        for instruction in list(out):
            if isinstance(instruction, LoadStates):  # the server loads nothing here: see launch_group
                out += feed(self.state, StatesLoaded(now=event.now, stimulus_id="test-loaded", launch=instruction.launch,
                                                     restored=self.restored))
        self.log += out
        return out

    def launch(self, msg: LaunchTasks, now: float = 0.0) -> list[Instruction]:
        return self.feed(from_scheduler(msg, now))

    def launch_group(self, msg: LaunchGroup, now: float = 0.0, restored: Restored | None = None) -> list[Instruction]:
        self.restored = restored or {}
        return self.feed(from_scheduler(msg, now))

    def release_jobs(self, job_ids: list[str], now: float = 0.0, superseded: bool = False) -> list[Instruction]:
        return self.feed(from_scheduler(ReleaseJob(job_ids=job_ids, superseded=superseded), now))

    def cancel_jobs(self, job_ids: list[str], now: float = 0.0) -> list[Instruction]:
        return self.feed(from_scheduler(CancelJobs(job_ids=job_ids), now))

    def pushed(self, msg: PushBlocks, payloads: list[object], now: float = 0.0) -> list[Instruction]:
        return self.feed(received(msg, payloads, now, peer=b"mapper"))

    def blocks_ready(self, msg: BlocksReady, now: float = 0.0) -> list[Instruction]:
        return self.feed(received(msg, [], now, peer=b"mapper"))

    def blocks(self, msg: Blocks, payloads: list[object], now: float = 0.0) -> list[Instruction]:
        return self.feed(received(msg, payloads, now))

    def map_outputs(self, msg: MapOutputs, now: float = 0.0) -> list[Instruction]:
        return self.feed(received(msg, [], now))

    def request_failed(self, msg: ErrorReply, now: float = 0.0) -> list[Instruction]:
        return self.feed(received(msg, [], now))

    def serve_fetch(self, peer: bytes, msg: FetchBlocks, now: float = 0.0) -> list[Instruction]:
        return self.feed(received(msg, [], now, peer=peer))

    def task_done(self, task: TaskDescriptor, outcome: TaskOutput | Failure, now: float = 0.0) -> list[Instruction]:
        return self.feed(completed(task, outcome, now))

    def tick(self, now: float) -> list[Instruction]:
        return self.feed(tick(now))

    def release_due(self, now: float) -> list[Instruction]:
        return self.feed(HeldDue(now=now, stimulus_id="test-held-due"))

    def register(self, now: float = 0.0) -> list[Instruction]:
        return self.feed(from_scheduler(Registered(executor_id=self.state.executor_id, shuffle_meta_address="tcp://meta:1"), now))

    def forgotten(self, now: float = 0.0) -> list[Instruction]:
        return self.feed(SchedulerForgotUs(now=now, stimulus_id="test-forgotten"))


def runs(instructions: list[Instruction]) -> list[TaskDescriptor]:
    return [i.task for i in instructions if isinstance(i, RunTask)]


def to_scheduler(instructions: list[Instruction], kind: type) -> list[Any]:
    return [i.msg for i in instructions if isinstance(i, ToScheduler) and isinstance(i.msg, kind)]


def only(instructions: list[Instruction], kind: type) -> Any:
    found = [i for i in instructions if isinstance(i, kind)]
    assert len(found) == 1, instructions
    return found[0]
