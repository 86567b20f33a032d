"""The executor's pure core: `handle(event) -> instructions`, no sockets, no clock, no user code.

One dispatch table maps each event (a message is keyed by where it came from and its type) to
what it means here; the tasks themselves, from launch to report, are TaskFlow's (task_flow.py).
The server turns whatever happens into an event and carries out the instructions, in order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from squall.common.core import Event, Log, Received, Send, Tick, ToShuffleMeta
from squall.common.protocol import (
    Blocks,
    BlocksReady,
    CancelJobs,
    DecommissionAnswer,
    DroppedPersisted,
    ErrorReply,
    FetchBlocks,
    FetchPersisted,
    ForgetPersisted,
    ForgetStates,
    GetTracked,
    HandedOver,
    HandOverStates,
    LaunchGroup,
    LaunchTasks,
    Leave,
    MapOutputs,
    PersistedData,
    Ping,
    Pong,
    PruneCheckpoints,
    PushBlocks,
    Registered,
    RegisterExecutor,
    ReleaseJob,
    Reregister,
    StateCheckpointed,
)
from squall.common.settings import Settings
from squall.common.tracked import tracked_reply
from squall.services.executor.departure import Departure
from squall.services.executor.events import (
    AnswerOverdue,
    CheckpointsWritten,
    FromScheduler,
    GraceOver,
    HeldDue,
    SchedulerForgotUs,
    ShuffleMetaRestarted,
    SliceOver,
    Started,
    StatesLoaded,
    TaskCompleted,
    Terminated,
    TrackedAsked,
)
from squall.services.executor.instructions import (
    DropStates,
    ForgetCheckpoints,
    Instruction,
    LoadStates,
    PruneMapCheckpoints,
    ToScheduler,
)
from squall.services.executor.local_scheduler import BATCH
from squall.services.executor.preemption import PreemptionCounters
from squall.services.executor.registration import Registration
from squall.services.executor.reports import Failure
from squall.services.executor.task_flow import TaskFlow
from squall.services.executor.task_states import Stories, TaskKey, TaskState
from squall.services.executor.work_counters import WorkCounters, payload_bytes

__all__ = ["BLOCK_SOCKET_MESSAGES", "PEER_MESSAGES", "SCHEDULER_MESSAGES", "ExecutorState", "Failure"]

STORY_LENGTH = 1000  # task transitions kept, all tasks together

# What each connection may carry (the server drops anything else, with a warning).
SCHEDULER_MESSAGES = (Registered, Reregister, LaunchTasks, LaunchGroup, ReleaseJob, CancelJobs, PruneCheckpoints,
                      ForgetStates, ForgetPersisted, ErrorReply, Pong, HandOverStates, HandedOver, DecommissionAnswer, Leave)
PEER_MESSAGES = (Blocks, MapOutputs, PersistedData, ErrorReply)  # answers from other executors and shuffle_meta
BLOCK_SOCKET_MESSAGES = (FetchBlocks, FetchPersisted, PushBlocks, BlocksReady, Ping, GetTracked)


class ExecutorState:
    def __init__(self, executor_id: str, data_address: str, settings: Settings, *, incarnation: str = "", pid: int = 0,
                 wall_offset: float = 0.0, story_length: int = STORY_LENGTH, metrics_address: str = "") -> None:
        self.executor_id = executor_id
        self.data_address = data_address
        self.settings = settings
        self.wall_offset = wall_offset
        self.registration = Registration(RegisterExecutor(executor_id=executor_id, incarnation=incarnation, data_address=data_address,
                                                          slots=settings.executor_slots, pid=pid,
                                                          metrics_address=metrics_address))
        self.stories = Stories(story_length)  # kept when the work is written off: a story may span it
        self.counters = PreemptionCounters()  # kept too: they count over the executor's life
        self.work = WorkCounters()  # and these (the metrics endpoint reads them)
        self.flow = self._new_flow()
        self.departure = Departure(executor_id)  # scale-in: leaving when told to (SIGTERM)
        self._handlers: dict[object, Callable[[Any], list[Instruction]]] = {
            Started: lambda e: self.registration.start(e.now),
            Tick: self._tick,
            HeldDue: self._held_due,
            TaskCompleted: lambda e: self.flow.completed(e.task, e.outcome),
            SliceOver: lambda e: self.flow.slice_over(e.key),
            SchedulerForgotUs: self._forgot_us,
            ShuffleMetaRestarted: self._shuffle_meta_restarted,
            CheckpointsWritten: self._checkpoints_written,
            StatesLoaded: lambda e: self.flow.launch_group(e.launch, e.restored),
            (FromScheduler, Registered): self._registered,
            (FromScheduler, Reregister): self._forgot_us,
            (FromScheduler, LaunchTasks): lambda e: self.flow.launch(e.msg),
            (FromScheduler, LaunchGroup): self._launch_group,
            (FromScheduler, ReleaseJob): lambda e: self.flow.release(set(e.msg.job_ids), e.msg.superseded),
            (FromScheduler, CancelJobs): lambda e: self.flow.cancel(set(e.msg.job_ids)),
            (FromScheduler, PruneCheckpoints): lambda e: [PruneMapCheckpoints(e.msg.state_id, e.msg.before)],
            (FromScheduler, ForgetStates): self._forget_states,
            (FromScheduler, ForgetPersisted): self._forget_persisted,
            (FromScheduler, ErrorReply): lambda e: [Log("warning", "scheduler_error", {"reason": e.msg.reason})],
            (FromScheduler, Pong): lambda e: [],
            (FromScheduler, HandOverStates): lambda e: self.flow.hand_over(e.msg.partitions),
            (FromScheduler, HandedOver): lambda e: self.flow.handed_over(e.msg.partitions),
            (FromScheduler, DecommissionAnswer): lambda e: self.departure.answered(e.msg),
            (FromScheduler, Leave): lambda e: self.departure.told_to_go(),
            Terminated: lambda e: self.departure.requested(self.registration.registered),
            GraceOver: lambda e: self.departure.grace_over(),
            AnswerOverdue: lambda e: self.departure.answer_overdue(),
            (Received, Blocks): self._fetched,
            (Received, MapOutputs): lambda e: self.flow.arrived(
                self.flow.inputs.located(e.msg, self.executor_id, self.flow.outputs.blocks, e.now)),
            (Received, ErrorReply): lambda e: self.flow.refused(e.msg),
            (Received, PersistedData): lambda e: self.flow.arrived(self.flow.block_reads.answered(e.msg, e.payloads)),
            (Received, PushBlocks): lambda e: self.flow.arrived(self.flow.inputs.pushed(e.msg, e.payloads)),
            (Received, BlocksReady): lambda e: self.flow.arrived(self.flow.inputs.blocks_ready(e.msg, e.now)),
            (Received, FetchBlocks): lambda e: [self.flow.outputs.serve(e.peer, e.msg)],
            (Received, FetchPersisted): lambda e: [self.flow.block_reads.serve(e.peer, e.msg)],
            (Received, Ping): lambda e: [Send(e.peer, Pong(nonce=e.msg.nonce, service="executor"))],
            (TrackedAsked, GetTracked): lambda e: [
                Send(e.peer, tracked_reply("executor", {**self.tracked(), **e.server_sizes}, e.msg.heap,
                                           {**self.counters.as_dict(), **e.server_counters}))],
        }

    def _new_flow(self) -> TaskFlow:
        return TaskFlow(self.executor_id, self.data_address, self.settings, self.wall_offset, self.stories, self.counters, self.work)

    # --- the one way in -------------------------------------------------------------------------

    def handle(self, event: Event) -> list[Instruction]:
        msg = getattr(event, "msg", None)
        handler = self._handlers.get(type(event) if msg is None else (type(event), type(msg)))
        if handler is None:
            return [Log("warning", "unexpected_event", {"event": type(event).__name__, "message": type(msg).__name__})]
        flow = self.flow
        flow.now, flow.stimulus = event.now, event.stimulus_id
        out = handler(event)
        wake = self.flow.held.wake_up() if self.flow.held else None
        return out + [wake] if wake is not None else out

    # --- queries --------------------------------------------------------------------------------

    def tracked(self) -> dict[str, int]:
        """Entries in each table (GetTracked): all bounded while jobs come and go."""
        flow = self.flow
        return {
            "stages": len(flow.stages),
            "code": len(flow.code),
            "tasks": len(flow.tasks),
            "groups": len(flow.groups),
            "held": len(flow.held),
            "batch_done": len(flow.batch_done),
            **flow.outputs.tracked(),
            **flow.inputs.tracked(),
            **flow.persisted.tracked(),
            **flow.block_reads.tracked(),
            **{f"local.{k}": v for k, v in flow.local.tracked().items()},
            **{f"keyed.{k}": v for k, v in flow.keyed.tracked().items()},
        }

    def load(self) -> tuple[int, int, int]:
        """Tasks launched here and not over, latency and batch, and suspended ones (heartbeats)."""
        flow = self.flow
        batch = sum(1 for local in flow.tasks.values() if local.lane == BATCH)
        suspended = 1 if flow.batch_running is not None and flow.batch_running.state is TaskState.SUSPENDED else 0
        return len(flow.tasks) - batch, batch, suspended

    def observed(self) -> tuple[dict[str, int], dict[str, int]]:
        """For heartbeats (the dashboard): persisted bytes by dataset, and batch tasks finished by
        "job:stage" (copies: the heartbeat thread reads them)."""
        return self.flow.persisted.bytes_by_dataset(), dict(self.flow.batch_done)

    def story(self, key: TaskKey) -> list[tuple[TaskState | None, TaskState, str, float]]:
        """The task's recent transitions: (from, to, stimulus id, time), oldest first."""
        return self.stories.story(key)

    def next_release(self) -> float | None:
        """When the earliest held source task is due (monotonic), if any."""
        return self.flow.held.next_release()

    def validate(self) -> None:
        """Check the invariants tying the tables together (tests call it after every event)."""
        self.flow.validate()

    # --- handlers -------------------------------------------------------------------------------

    def _registered(self, event: FromScheduler) -> list[Instruction]:
        msg = event.msg
        assert isinstance(msg, Registered)
        return self.registration.accepted(msg.shuffle_meta_address)

    def _forgot_us(self, event: Event) -> list[Instruction]:
        """The scheduler wrote our work off: all of it goes, and we register again. The persisted
        blocks go too, and the block directory hears of it, so that no job is sent here for them."""
        leaving = self.departure.forgotten()
        if leaving is not None:
            return leaving
        out = self.registration.forgotten(event.now)
        if out is None:
            return []  # registering again already
        held = self.flow.persisted.held()
        self.flow = self._new_flow()
        return out + [ToShuffleMeta(DroppedPersisted(executor_id=self.executor_id, blocks=held))] if held else out

    def _tick(self, event: Tick) -> list[Instruction]:
        out = self.registration.retry_if_due(event.now)
        if self.flow.held:
            out += self.flow.release_held()
        elif self.flow.batch_suspended():  # its latency work may have been in flight past batch_max_suspension
            out += self.flow.next_tasks()
        arrivals = self.flow.inputs.expire(event.now)  # look-ups and fetches past their deadline
        arrivals += self.flow.block_reads.expire(event.now)
        return out + self.flow.arrived(arrivals) if arrivals.failed or arrivals.lost else out

    def _held_due(self, event: HeldDue) -> list[Instruction]:
        self.flow.held.woken()
        return self.flow.release_held()

    def _launch_group(self, event: FromScheduler) -> list[Instruction]:
        """Drizzle: partitions taken over start from their checkpoint, which the server loads first."""
        assert isinstance(event.msg, LaunchGroup)
        msg = event.msg.expanded()  # push targets travel once per distinct list
        return [LoadStates(msg)] if msg.restores else self.flow.launch_group(msg, {})

    def _forget_states(self, event: FromScheduler) -> list[Instruction]:
        """A stream ended: its keyed state here goes, and its checkpoints."""
        msg = event.msg
        assert isinstance(msg, ForgetStates)
        self.flow.keyed.forget(set(msg.state_ids))
        return [DropStates(msg.state_ids), ForgetCheckpoints(msg.state_ids)]

    def _forget_persisted(self, event: FromScheduler) -> list[Instruction]:
        """A driver unpersisted these datasets: their blocks here go (the scheduler tells the
        block directory itself). Tasks that read one already have it."""
        msg = event.msg
        assert isinstance(msg, ForgetPersisted)
        self.flow.persisted.drop(msg.dataset_ids)
        return []

    def _shuffle_meta_restarted(self, event: ShuffleMetaRestarted) -> list[Instruction]:
        """shuffle_meta came back empty: tell it every map output and persisted block held here
        again, and repeat the look-ups it had not answered (it rebuilds from the executors' reports)."""
        return [Log("warning", "shuffle_meta_reconnected"), *self.flow.outputs.register_all(), *self.flow.register_blocks(),
                *self.flow.inputs.pending_lookups()]

    def _fetched(self, event: Received) -> list[Instruction]:
        self.work.shuffle_bytes_fetched += payload_bytes(event.payloads)
        return self.flow.arrived(self.flow.inputs.fetched(cast(Blocks, event.msg), event.payloads))

    def _checkpoints_written(self, event: CheckpointsWritten) -> list[Instruction]:
        if not event.written:
            return []
        return [ToScheduler(StateCheckpointed(executor_id=self.executor_id, checkpoints=event.written))]
