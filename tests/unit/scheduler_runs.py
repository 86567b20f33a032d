"""Helpers for the scheduler's tests: executors, runs, and playing the executors' part (result
partitions, GroupDone) against a SchedulerState, without sockets.

Every scheduler under test is made by `checked()`: it checks the state's invariants
(SchedulerState.validate) after every event it handles, so no test can forget to.

The scheduler may keep more than one group of a run in flight (GROUPS_IN_FLIGHT, so executors
never idle at a group boundary); tests written with these helpers hold for any depth."""

from __future__ import annotations

from squall.common.core import Event, Log, Received, Send, Tick
from squall.common.plan import Aggregator, LogicalPlan, NarrowNode, RangeSource, ShuffleNode, SourceNode
from squall.common.protocol import (
    ClusterStatus,
    GetClusterStatus,
    GroupDone,
    JobSpec,
    LaunchGroup,
    Message,
    RegisterExecutor,
    ResultPartition,
    SubmitJobs,
    TaskFailed,
)
from squall.common.settings import Settings
from squall.services.scheduler.drizzle_mode import GROUPS_IN_FLIGHT
from squall.services.scheduler.events import DriversGone, ExecutorDisconnected, Instruction
from squall.services.scheduler.state import SchedulerState

DRIVER = b"driver"
CODE = {"fn": b"pickled fn" * 10, "add": b"pickled add" * 10}


class CheckedSchedulerState(SchedulerState):
    """A SchedulerState that validates its invariants after every event."""

    def handle(self, event: Event) -> list[Instruction]:
        instructions = super().handle(event)
        self.validate()
        return instructions


def checked(settings: Settings) -> SchedulerState:
    return CheckedSchedulerState(settings)


def receive(s: SchedulerState, msg: Message, now: float = 0.0, peer: bytes | None = None, payloads=()) -> list:
    """`msg` arrives from `peer` (a driver's or executor's routing identity)."""
    return s.handle(Received(msg=msg, payloads=list(payloads), peer=peer, now=now, stimulus_id="test"))


def tick(s: SchedulerState, now: float) -> list:
    return s.handle(Tick(now=now, stimulus_id="test"))


def lose(s: SchedulerState, executor_id: str, now: float) -> list:
    """The watch connection to the executor dropped."""
    return s.handle(ExecutorDisconnected(executor_id=executor_id, now=now, stimulus_id="test"))


def driver_gone(s: SchedulerState, driver: bytes, now: float) -> list:
    """A probe found the driver's connection gone."""
    return s.handle(DriversGone(drivers=(driver,), now=now, stimulus_id="test"))


def status(s: SchedulerState, now: float) -> ClusterStatus:
    (reply,) = sends(receive(s, GetClusterStatus(), now, peer=b"asker"))
    assert isinstance(reply, ClusterStatus)
    return reply


def logs(instructions, event: str | None = None) -> list[Log]:
    return [i for i in instructions if isinstance(i, Log) and (event is None or i.event == event)]


def state(*eids: str) -> SchedulerState:
    # Executors here never get a watch connection: silence past join_timeout is their death.
    s = checked(Settings(heartbeat_interval=0.1, heartbeat_misses=3, join_timeout=0.3, shuffle_meta_address="tcp://meta:1",
                         reduce_placement="spread"))
    for eid in eids:
        receive(s, RegisterExecutor(executor_id=eid, incarnation=f"{eid}-1", data_address=f"tcp://{eid}:1", slots=1), 0.0, peer=eid.encode())
    return s


def two_stage(maps: int = 3, reduces: int = 3) -> LogicalPlan:
    return LogicalPlan(nodes=[
        SourceNode(source=RangeSource(start=0, stop=100, step=1, partitions=maps)),
        NarrowNode(parent=0, fn="fn"),
        ShuffleNode(parent=1, partitions=reduces, aggregator=Aggregator(kind="reduce", fn="add")),
    ])


def submit(s: SchedulerState, jobs: int, group_size: int, run_id: str = "r", code=CODE, now: float = 0.0,
           plan: LogicalPlan | None = None, **options) -> list:
    """A run of `jobs` micro-batches with ids run_id.0, run_id.1, ... (pre-scheduled unless told)."""
    specs = [JobSpec(job_id=f"{run_id}.{i}", plan=plan or two_stage()) for i in range(jobs)]
    return receive(s, SubmitJobs(run_id=run_id, jobs=specs, code=code, group_size=group_size, **options), now, peer=DRIVER)


def sends(actions, kind=None, peer=None) -> list:
    return [a.msg for a in actions if isinstance(a, Send) and (kind is None or isinstance(a.msg, kind))
            and (peer is None or a.peer == peer)]


def depth() -> int:
    """How many groups of a run the scheduler keeps in flight."""
    return GROUPS_IN_FLIGHT


def groups(actions) -> list[dict[str, LaunchGroup]]:
    """The groups launched, in dispatch order, each as its LaunchGroup by executor id (peer == id)."""
    found: dict[int, dict[str, LaunchGroup]] = {}
    for a in actions:
        if isinstance(a, Send) and isinstance(a.msg, LaunchGroup):
            share = found.setdefault(a.msg.group_id, {})
            assert a.peer.decode() not in share, "more than one LaunchGroup for an executor in a group"
            share[a.peer.decode()] = a.msg
    return [found[g] for g in sorted(found)]


def launches(actions) -> dict[str, LaunchGroup]:
    """The first group launched by these actions ({} if none)."""
    found = groups(actions)
    return found[0] if found else {}


def jobs_of(launch: dict[str, LaunchGroup]) -> set[str]:
    return {t.job_id for m in launch.values() for t in m.tasks}


def results(s: SchedulerState, launch: dict[str, LaunchGroup], job_id: str, now: float = 1.0) -> list:
    """Every result partition of one job, from where its result tasks were placed."""
    actions = []
    for eid, msg in launch.items():
        for t in msg.tasks:
            if t.job_id == job_id and t.push_to == []:
                actions += receive(s, ResultPartition(executor_id=eid, job_id=job_id, partition=t.partition), now, payloads=[b"rows"])
    return actions


def group_done(s: SchedulerState, launch: dict[str, LaunchGroup], now: float = 1.0, skip=()) -> list:
    actions = []
    for eid, msg in launch.items():
        if eid not in skip:
            actions += receive(s, GroupDone(group_id=msg.group_id, executor_id=eid, tasks=len(msg.tasks), busy=0.0), now)
    return actions


def finish_group(s: SchedulerState, launch: dict[str, LaunchGroup], now: float = 1.0) -> list:
    jobs = sorted({t.job_id for msg in launch.values() for t in msg.tasks})
    actions = [a for j in jobs for a in results(s, launch, j, now)]
    return actions + group_done(s, launch, now)


def drive(s: SchedulerState, actions: list, now: float = 1.0) -> tuple[list[dict[str, LaunchGroup]], list]:
    """Complete the groups in flight oldest first until none is left.
    Returns every group launched (in order) and every action (the submit's included)."""
    pending = groups(actions)
    launched, everything = list(pending), list(actions)
    while pending:
        assert len(pending) <= depth()
        more = finish_group(s, pending.pop(0), now)
        everything += more
        pending += groups(more)
        launched += groups(more)
    return launched, everything


def failed(s: SchedulerState, eid: str, job_id: str, stage_id: int = 0, partition: int = 0) -> list:
    msg = TaskFailed(executor_id=eid, job_id=job_id, stage_id=stage_id, partition=partition, attempt=0, kind="task",
                     error_type="ZeroDivisionError", message="division by zero", traceback="Traceback ...")
    return receive(s, msg, 1.0)
