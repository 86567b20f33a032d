"""The executor's pure core: `handle(event) -> instructions`, no sockets, no clock, no user code.

Tasks arrive in two ways. BSP (LaunchTasks): a reducer looks up where its map outputs live
(shuffle_meta) and fetches them. Drizzle (LaunchGroup): a whole group's share at once; a mapper
pushes each reduce partition's block straight to the reducer's executor, and a reducer becomes
runnable the moment all its mappers' blocks are in: no scheduler message between stages
(shuffle_inputs.py, map_outputs.py). Runnable tasks go to the runner one at a time in
local-scheduler order. Each group is reported once, when all its tasks here are over. Every task
moves through the states of task_states.py by `_transition`, which keeps its story.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from squall.common.core import Event, Log, Received, Send, Tick
from squall.common.plan import ShuffleRead, ShuffleWrite, StageSpec
from squall.common.protocol import (
    Blocks,
    BlocksReady,
    CancelJobs,
    ErrorReply,
    FetchBlocks,
    ForgetStates,
    GetTracked,
    GroupDone,
    LaunchGroup,
    LaunchTasks,
    MapOutputs,
    Ping,
    Pong,
    PruneCheckpoints,
    PushBlocks,
    Registered,
    RegisterExecutor,
    ReleaseJob,
    Reregister,
    ResultPartition,
    StateCheckpointed,
    StateRestore,
    TaskDescriptor,
    fits,
)
from squall.common.settings import Settings
from squall.common.tracked import tracked_reply
from squall.services.executor.events import (
    CheckpointsWritten,
    FromScheduler,
    HeldDue,
    SchedulerForgotUs,
    ShuffleMetaRestarted,
    Started,
    StatesLoaded,
    TaskCompleted,
    TrackedAsked,
)
from squall.services.executor.instructions import (
    Activate,
    CheckpointMapOutput,
    CheckpointState,
    DiscardWork,
    DropState,
    DropStateTables,
    ForgetCheckpoints,
    Instruction,
    LoadStates,
    PruneMapCheckpoints,
    Reconnect,
    RestoreState,
    RunTask,
    StopTask,
    ToScheduler,
    WakeAt,
)
from squall.services.executor.keyed_partitions import KeyedPartitions, StateKey
from squall.services.executor.local_scheduler import LocalScheduler, LocalTask
from squall.services.executor.map_outputs import MapOutputStore
from squall.services.executor.reports import Failure, task_failed, task_finished
from squall.services.executor.shuffle_inputs import Arrivals, ShuffleInputs
from squall.services.executor.task_states import (
    CANCELLED,
    DONE,
    FAILED,
    HELD,
    NEW,
    ON_RUNNER,
    ORPHANED,
    PARKED,
    READY,
    RUNNING,
    WAITING,
    Stories,
    TaskKey,
    TaskState,
)
from squall.services.executor.tasks import TaskOutput

__all__ = ["ExecutorState", "Failure", "SCHEDULER_MESSAGES", "PEER_MESSAGES", "BLOCK_SOCKET_MESSAGES"]

REGISTER_RETRY = 1.0  # seconds between registrations until the scheduler answers
STORY_LENGTH = 1000  # task transitions kept, all tasks together

# What each connection may carry (the server drops anything else, with a warning).
SCHEDULER_MESSAGES = (Registered, Reregister, LaunchTasks, LaunchGroup, ReleaseJob, CancelJobs, PruneCheckpoints,
                      ForgetStates, ErrorReply, Pong)
PEER_MESSAGES = (Blocks, MapOutputs, ErrorReply)  # answers from other executors and shuffle_meta
BLOCK_SOCKET_MESSAGES = (FetchBlocks, PushBlocks, BlocksReady, Ping, GetTracked)


@dataclass
class _Group:
    outstanding: set[TaskKey]
    tasks: int
    busy: float = 0.0
    skipped: int = 0


class ExecutorState:
    def __init__(self, executor_id: str, data_address: str, settings: Settings, *, incarnation: str = "", pid: int = 0,
                 wall_offset: float = 0.0, story_length: int = STORY_LENGTH) -> None:
        self.executor_id = executor_id
        self.data_address = data_address
        self.settings = settings
        self.incarnation = incarnation
        self.pid = pid
        self.wall_offset = wall_offset  # time.time() - time.monotonic(): batch times are wall-clock
        self.stories = Stories(story_length)
        self.registered = False
        self._register_due: float | None = None  # while registering: when to ask again
        self._wake_at: float | None = None  # the HeldDue asked for last (WakeAt)
        self._now = 0.0  # the event being handled: its time and stimulus id
        self._stimulus = ""
        self._handlers: dict[object, Callable[[Any], list[Instruction]]] = {
            Started: self._on_started,
            Tick: self._tick,
            HeldDue: self._held_due,
            TaskCompleted: self._task_completed,
            SchedulerForgotUs: self._forgot_us,
            ShuffleMetaRestarted: self._shuffle_meta_restarted,
            CheckpointsWritten: self._checkpoints_written,
            StatesLoaded: lambda e: self._launch_group(e.launch, e.restored),
            (FromScheduler, Registered): self._registered,
            (FromScheduler, Reregister): self._forgot_us,
            (FromScheduler, LaunchTasks): lambda e: self._launch(e.msg),
            (FromScheduler, LaunchGroup): self._launch_group_asked,
            (FromScheduler, ReleaseJob): lambda e: self._release(set(e.msg.job_ids), e.msg.superseded),
            (FromScheduler, CancelJobs): lambda e: self._cancel(set(e.msg.job_ids)),
            (FromScheduler, PruneCheckpoints): lambda e: [PruneMapCheckpoints(e.msg.state_id, e.msg.before)],
            (FromScheduler, ForgetStates): self._forget_states,
            (FromScheduler, ErrorReply): lambda e: [Log("warning", "scheduler_error", {"reason": e.msg.reason})],
            (FromScheduler, Pong): lambda e: [],
            (Received, Blocks): lambda e: self._arrived(self.inputs.fetched(e.msg, e.payloads)),
            (Received, MapOutputs): lambda e: self._arrived(
                self.inputs.located(e.msg, self.executor_id, self.outputs.blocks, self._now)),
            (Received, ErrorReply): lambda e: self._arrived(self.inputs.refused(e.msg)),
            (Received, PushBlocks): lambda e: self._arrived(self.inputs.pushed(e.msg, e.payloads)),
            (Received, BlocksReady): lambda e: self._arrived(self.inputs.blocks_ready(e.msg, self._now)),
            (Received, FetchBlocks): lambda e: [self.outputs.serve(e.peer, e.msg)],
            (Received, Ping): lambda e: [Send(e.peer, Pong(nonce=e.msg.nonce, service="executor"))],
            (TrackedAsked, GetTracked): lambda e: [
                Send(e.peer, tracked_reply("executor", {**self.tracked(), **e.server_sizes}, e.msg.heap))],
        }
        self._clear()

    def _clear(self) -> None:
        """Forget all work (at start, and when the scheduler wrote ours off)."""
        self.stages: dict[str, StageSpec] = {}
        self.code: dict[str, bytes] = {}  # pickled code by code key; each RunTask carries its stage's
        self.outputs = MapOutputStore(self.executor_id, self.data_address, self.settings)
        self.inputs = ShuffleInputs(self.settings)
        self.local = LocalScheduler()
        self.tasks: dict[TaskKey, LocalTask] = {}  # launched here and not over (the running one included)
        self.running: LocalTask | None = None
        self._started = 0.0  # when the running task was handed to the runner
        self.barrier = False
        self.groups: dict[int, _Group] = {}
        # Source tasks waiting for their batch's time: (monotonic release time, seq, task).
        self._held: list[tuple[float, int, LocalTask]] = []
        self.keyed = KeyedPartitions()  # batch order and kept outputs of the stateful partitions here
        self._seq = itertools.count(1)

    # --- the one way in -------------------------------------------------------------------------

    def handle(self, event: Event) -> list[Instruction]:
        msg = getattr(event, "msg", None)
        handler = self._handlers.get(type(event) if msg is None else (type(event), type(msg)))
        self._now, self._stimulus = event.now, event.stimulus_id
        if handler is None:
            return [Log("warning", "unexpected_event", {"event": type(event).__name__, "message": type(msg).__name__})]
        out = handler(event)
        if self._held and (self._wake_at is None or self._held[0][0] < self._wake_at):
            self._wake_at = self._held[0][0]
            out.append(WakeAt(self._wake_at))
        return out

    # --- queries --------------------------------------------------------------------------------

    def tracked(self) -> dict[str, int]:
        """Entries in each table (GetTracked): all bounded while jobs come and go."""
        return {
            "stages": len(self.stages),
            "code": len(self.code),
            "tasks": len(self.tasks),
            "groups": len(self.groups),
            "held": len(self._held),
            **self.outputs.tracked(),
            **self.inputs.tracked(),
            **{f"local.{k}": v for k, v in self.local.tracked().items()},
            **{f"keyed.{k}": v for k, v in self.keyed.tracked().items()},
        }

    def story(self, key: TaskKey) -> list[tuple[TaskState | None, TaskState, str, float]]:
        """The task's recent transitions: (from, to, stimulus id, time), oldest first."""
        return self.stories.story(key)

    def next_release(self) -> float | None:
        """When the earliest held source task is due (monotonic), if any."""
        return self._held[0][0] if self._held else None

    def validate(self) -> None:
        """Check the invariants tying the tables together (tests call it after every event)."""
        running = self.running
        if running is not None:
            assert running.state in ON_RUNNER and self.tasks.get(running.key) is running, running
        for key, local in self.tasks.items():
            assert local.key == key and local.state is not None and local.state not in (DONE, FAILED), local
            assert (local.state in ON_RUNNER) == (local is running), f"{key} is {local.state} but the runner has {running}"
        for local in self.local.queued():
            assert local.state is READY and self.tasks.get(local.key) is local, local
        queued = {local.key for local in self.local.queued()}
        readers = {reader.task_key for reader in self.inputs.readers.values()}
        held = {entry[2].key for entry in self._held}
        for key, local in self.tasks.items():
            assert local.state is not READY or key in queued, f"{key} is ready but not queued"
            assert local.state is not WAITING or key in readers, f"{key} waits for inputs nobody delivers"
            assert local.state is not HELD or key in held, f"{key} is held without a release time"
        for inbox_key, reader in self.inputs.readers.items():
            task = self.tasks.get(reader.task_key)
            assert task is not None and task.state is WAITING, f"reader of {inbox_key}: {task}"
        for group_id, group in self.groups.items():
            assert group.outstanding <= self.tasks.keys(), f"group {group_id} waits for unknown tasks"

    # --- registration ---------------------------------------------------------------------------

    def _register(self) -> list[Instruction]:
        self._register_due = self._now + REGISTER_RETRY
        msg = RegisterExecutor(executor_id=self.executor_id, incarnation=self.incarnation, data_address=self.data_address,
                               slots=self.settings.executor_slots, pid=self.pid)
        return [ToScheduler(msg)]

    def _on_started(self, event: Started) -> list[Instruction]:
        return self._register()

    def _registered(self, event: FromScheduler) -> list[Instruction]:
        msg = event.msg
        assert isinstance(msg, Registered)
        self.registered, self._register_due = True, None
        address = msg.shuffle_meta_address
        return [Activate(address), Log("info", "registered", {"shuffle_meta": address})]

    def _forgot_us(self, event: Event) -> list[Instruction]:
        if not self.registered:
            return []  # registering again already
        self.registered = False
        self._clear()
        return [Log("warning", "scheduler_forgot_us"), Reconnect(), DiscardWork(), *self._register()]

    def _tick(self, event: Tick) -> list[Instruction]:
        out = self._register() if self._register_due is not None and self._register_due <= self._now else []
        if self._held:
            out += self._release_held()
        arrivals = self.inputs.expire(self._now)
        return out + self._arrived(arrivals) if arrivals.failed else out

    # --- launching ------------------------------------------------------------------------------

    def _launch(self, msg: LaunchTasks) -> list[Instruction]:
        """BSP: tasks to run now; a reducer first looks its map outputs up."""
        self._cache(msg.stages, msg.code, msg.forget_stages, msg.forget_code)
        out: list[Instruction] = []
        for task in msg.tasks:
            out += self._accept(task, None)
        return out + self._next()

    def _launch_group_asked(self, event: FromScheduler) -> list[Instruction]:
        """Drizzle: partitions taken over start from their checkpoint, which the server loads first."""
        msg = event.msg
        assert isinstance(msg, LaunchGroup)
        return [LoadStates(msg)] if msg.restores else self._launch_group(msg, {})

    def _launch_group(self, msg: LaunchGroup, restored: dict[StateKey, tuple[int, dict[Any, Any]] | str]) -> list[Instruction]:
        """Drizzle: a whole group's share; reducers wait for what their mappers push."""
        self._cache(msg.stages, msg.code, msg.forget_stages, msg.forget_code)
        self.barrier = msg.barrier
        out: list[Instruction] = []
        unreadable: dict[StateKey, str] = {}
        for restore in msg.restores:
            out += self._restore(restore, restored.get((restore.state_id, restore.partition)), unreadable)
        self.groups[msg.group_id] = _Group(outstanding={t.key for t in msg.tasks}, tasks=len(msg.tasks))
        for task in msg.tasks:
            spec = self.stages.get(task.stage_key)
            why = unreadable.get((spec.state.state_id, task.partition), "") if spec is not None and spec.state is not None else ""
            if why:
                out += self._report_failure(task, msg.group_id, Failure("task", "CheckpointUnreadable", why))
            else:
                out += self._accept(task, msg.group_id)
        if not msg.tasks:
            out += self._group_over(msg.group_id)
        return out + self._next()

    def _cache(self, stages: dict[str, StageSpec], code: dict[str, bytes], forget_stages: list[str], forget_code: list[str]) -> None:
        """Drop what the scheduler evicted from its record of our cache (no task in flight uses it:
        queued tasks hold their spec, and a running one carries its code), then add what came."""
        for key in forget_stages:
            self.stages.pop(key, None)
        for key in forget_code:
            self.code.pop(key, None)
        self.stages.update(stages)
        self.code.update(code)

    def _restore(self, restore: StateRestore, loaded: tuple[int, dict[Any, Any]] | str | None,
                 unreadable: dict[StateKey, str]) -> list[Instruction]:
        """Take over a stateful partition at its checkpoint (or empty, before its first batch)."""
        key = (restore.state_id, restore.partition)
        running = self.running
        if running is not None and running.state is not ORPHANED and running.spec.state is not None \
                and (running.spec.state.state_id, running.task.partition) == key:
            self._transition(running, ORPHANED)  # it works on the table being replaced: its batch does not count
        if isinstance(loaded, str):
            self.keyed.drop(key)
            unreadable[key] = loaded
            return [DropState(*key)]
        batch, table = loaded if loaded is not None else (restore.first_batch - 1, {})
        self.keyed.restore(key, batch)
        log = Log("info", "state_restored", {"state": key[0], "partition": key[1], "batch": loaded[0] if loaded else None})
        return [RestoreState(key[0], key[1], table), log]

    def _accept(self, task: TaskDescriptor, group_id: int | None) -> list[Instruction]:
        spec = self.stages.get(task.stage_key)
        if spec is None:
            failure = Failure("code", "MissingCode", f"stage spec {task.stage_key} was never sent to this executor")
            return self._report_failure(task, group_id, failure)
        local = LocalTask(task, spec, group_id)
        self.tasks[task.key] = local
        self.local.launched(local)
        if spec.state is not None and group_id is not None:  # launches come in batch order
            key = (spec.state.state_id, task.partition)
            self.keyed.launched(key, task.batch)
            if self.keyed.applied(key, task.batch):
                return self._already_applied(local)
        if not isinstance(spec.input, ShuffleRead):
            release_at = task.not_before - self.wall_offset
            if task.not_before and release_at > self._now:  # a stream batch whose interval is not over
                self._transition(local, HELD)
                heapq.heappush(self._held, (release_at, next(self._seq), local))
            else:
                self._ready(local)
            return []
        inbox_key = (task.job_id, spec.input.shuffle_id, task.partition)
        local.inputs, arrivals = self.inputs.read(inbox_key, task.key, spec.input.map_partitions)
        self._transition(local, WAITING)
        if arrivals.failed:
            return self._arrived(arrivals)
        if group_id is not None:
            return self._maybe_runnable(local)
        return [self.inputs.look_up(inbox_key, spec.input.map_partitions, self._now)]

    def _held_due(self, event: HeldDue) -> list[Instruction]:
        self._wake_at = None
        return self._release_held()

    def _release_held(self) -> list[Instruction]:
        """Make the source tasks whose batch time has come runnable."""
        while self._held and self._held[0][0] <= self._now:
            _, _, local = heapq.heappop(self._held)
            if self.tasks.get(local.key) is local:  # not released meanwhile
                self._ready(local)
        return self._next()

    # --- shuffle input --------------------------------------------------------------------------

    def _arrived(self, arrivals: Arrivals) -> list[Instruction]:
        """Act on what input bookkeeping found out: reducers complete, or failed."""
        out: list[Instruction] = list(arrivals.sends)
        for key in arrivals.complete:
            local = self.tasks.get(key)
            if local is not None and local.state is WAITING:
                out += self._maybe_runnable(local)
        for key, error_type, reason in arrivals.failed:
            local = self.tasks.pop(key, None)
            if local is not None:
                self.local.finished(local)
                out += self._report_failure(local.task, local.group_id, Failure("fetch", error_type, reason), local)
        return out + self._next() if arrivals.complete or arrivals.failed else out

    def _maybe_runnable(self, local: LocalTask) -> list[Instruction]:
        read = local.spec.input
        assert isinstance(read, ShuffleRead)
        if not self.inputs.take_if_complete((local.task.job_id, read.shuffle_id, local.task.partition)):
            return []
        state = local.spec.state
        if state is not None and local.group_id is not None:
            key = (state.state_id, local.task.partition)
            if self.keyed.applied(key, local.task.batch):  # applied meanwhile
                return self._already_applied(local)
            if self.keyed.park_unless_due(key, local):
                self._transition(local, PARKED)  # batch b of a state waits for batch b-1
                return []
        self._ready(local)
        return []

    # --- running --------------------------------------------------------------------------------

    def _ready(self, local: LocalTask) -> None:
        self._transition(local, READY)
        self.local.push(local)

    def _next(self) -> list[Instruction]:
        if self.running is not None:
            return []
        out: list[Instruction] = []
        while True:
            local = self.local.pop(self.barrier)
            if local is None:
                return out
            state = local.spec.state
            if state is None or local.group_id is None or not self.keyed.applied((state.state_id, local.task.partition), local.task.batch):
                break
            out += self._already_applied(local)  # its first attempt applied it meanwhile
        self._transition(local, RUNNING)
        self.running, self._started = local, self._now
        inputs = [local.inputs[p] for p in sorted(local.inputs)]
        code = {k: self.code[k] for k in local.spec.code_keys() if k in self.code}
        return [*out, RunTask(local.task, local.spec, inputs, code)]

    def _task_completed(self, event: TaskCompleted) -> list[Instruction]:
        task, outcome, running = event.task, event.outcome, self.running
        if running is None or running.key != task.key:
            return []  # it was written off meanwhile
        self.running = None
        self.tasks.pop(task.key, None)
        self.local.finished(running)
        group = self.groups.get(running.group_id) if running.group_id is not None else None
        if group is not None:
            group.busy += self._now - self._started
            if isinstance(outcome, TaskOutput):
                group.skipped += outcome.skipped
        if running.state is ORPHANED:
            return self._task_over(running, advance=False) + self._next()
        out: list[Instruction] = []
        state = running.spec.state
        if state is not None and running.group_id is not None and isinstance(outcome, TaskOutput):
            # The state has applied this batch, whatever becomes of the job: keep what it made.
            if not task.replay_only:
                self.keyed.keep((state.state_id, task.partition), task.batch, task.job_id, outcome)
            if task.checkpoint_state:
                out.append(CheckpointState(state.state_id, task.partition, task.batch))
        if running.state is CANCELLED:
            if running.group_id is None:  # BSP: the scheduler still counts the slot as taken
                out.append(ToScheduler(task_finished(self.executor_id, task, TaskOutput([], False), self._started, self._now)))
            return out + self._task_over(running) + self._next()
        if isinstance(outcome, Failure):
            return out + self._report_failure(task, running.group_id, outcome, running) + self._next()
        return out + self._complete(running, outcome, self._started) + self._next()

    def _complete(self, local: LocalTask, outcome: TaskOutput, started: float) -> list[Instruction]:
        """A task's output is ready: send it on (a replay_only task's goes nowhere)."""
        task = local.task
        if outcome.is_result and not fits(outcome.size, self.settings.max_message_bytes):
            message = (
                f"result partition {task.partition} is {outcome.size} bytes, more than a message may carry "
                f"(max_message_bytes={self.settings.max_message_bytes}, SQUALL_MAX_MESSAGE_BYTES); "
                "reduce it on the cluster or use more partitions"
            )
            return self._report_failure(task, local.group_id, Failure("task", "ResultTooLarge", message), local)
        self._transition(local, DONE)
        out: list[Instruction] = []
        if task.replay_only:
            pass
        elif outcome.is_result and local.group_id is None:
            out.append(ToScheduler(task_finished(self.executor_id, task, outcome, started, self._now), tuple(outcome.blocks)))
        elif outcome.is_result:
            msg = ResultPartition(executor_id=self.executor_id, job_id=task.job_id, partition=task.partition)
            out.append(ToScheduler(msg, tuple(outcome.blocks)))
        else:
            out += self._map_output(local, outcome)
            if local.group_id is None:
                out.append(ToScheduler(task_finished(self.executor_id, task, outcome, started, self._now)))
        return out + self._task_over(local)

    def _map_output(self, local: LocalTask, outcome: TaskOutput) -> list[Instruction]:
        """Keep the blocks; push them to pre-scheduled reducers; tell shuffle_meta (off the critical path)."""
        task, output = local.task, local.spec.output
        assert isinstance(output, ShuffleWrite)
        sends, here = self.outputs.keep(task, output.shuffle_id, outcome.blocks)
        arrivals = Arrivals()
        for r in here:
            self.inputs.arrive((task.job_id, output.shuffle_id, r), task.partition, outcome.blocks[r], arrivals)
        out: list[Instruction] = [*sends, *self._arrived(arrivals)]
        if task.map_checkpoint and task.attempt == 0:
            out.append(CheckpointMapOutput(task.map_checkpoint, outcome.blocks))
        if local.group_id is None:  # BSP reducers look outputs up: register at once
            out += self.outputs.register()
        return out

    def _already_applied(self, local: LocalTask) -> list[Instruction]:
        """A stateful task for a batch its partition has applied already: a replay after a failure
        elsewhere. It takes the output kept from then (a rebuild needs none)."""
        task, spec = local.task, local.spec
        assert isinstance(spec.input, ShuffleRead) and spec.state is not None  # keyed state follows a shuffle
        self.tasks.pop(task.key, None)
        self.local.finished(local)
        self.inputs.drop_reader((task.job_id, spec.input.shuffle_id, task.partition))
        if task.replay_only:
            self._transition(local, DONE)
            return self._task_over(local)
        kept = self.keyed.take((spec.state.state_id, task.partition), task.batch, task.job_id)
        if kept is None:
            message = f"partition {task.partition} of keyed state {spec.state.state_id} is past batch {task.batch} and no longer holds its output"
            return self._report_failure(task, local.group_id, Failure("task", "StateAhead", message), local)
        return self._complete(local, kept, self._now)

    # --- releasing ------------------------------------------------------------------------------

    def _release(self, jobs: set[str], superseded: bool = False, cancelled: bool = False) -> list[Instruction]:
        """Jobs are over: drop their blocks; cancel their tasks that have not started (a BSP task is
        reported so the scheduler frees its slot); a running one reports without keeping output.
        Outputs kept for stateful batches go too, unless the jobs are `superseded` by replays."""
        if not superseded:
            self.keyed.release(jobs)
        self.outputs.release(jobs, cancelled)
        self.inputs.release(jobs)
        self.local.remove_jobs(jobs)
        out: list[Instruction] = []
        for key in [k for k in self.tasks if k[0] in jobs]:
            local = self.tasks[key]
            if local is self.running:
                if local.state is RUNNING:
                    self._transition(local, CANCELLED)
                continue
            del self.tasks[key]
            self.local.finished(local)
            if local.group_id is None:
                out += self._report_failure(local.task, None, Failure("fetch", "Cancelled", f"job {key[0]} was released"), local, CANCELLED)
            else:
                self._transition(local, CANCELLED)
                out += self._task_over(local, advance=False)  # never ran: its batch is not applied
        return out + self._next()

    def _cancel(self, jobs: set[str]) -> list[Instruction]:
        """Their run was cancelled: everything of theirs goes as on a release (queued tasks, blocks
        here and in the inbox, look-ups and fetches), and so do source tasks held for their batch's
        time and map outputs not yet registered. The running task is asked to stop at its next safe
        point; when it returns, its output is dropped and the runner takes the next task."""
        if any(local.key[0] in jobs for _, _, local in self._held):
            self._held = [held for held in self._held if held[2].key[0] not in jobs]
            heapq.heapify(self._held)
        running = self.running
        stop: list[Instruction] = [StopTask(running.key)] if running is not None and running.key[0] in jobs else []
        return stop + self._release(jobs, cancelled=True)

    def _forget_states(self, event: FromScheduler) -> list[Instruction]:
        """A stream ended: its keyed state here goes, and its checkpoints."""
        msg = event.msg
        assert isinstance(msg, ForgetStates)
        state_ids = msg.state_ids
        self.keyed.forget(set(state_ids))
        return [DropStateTables(state_ids), ForgetCheckpoints(state_ids)]

    def _shuffle_meta_restarted(self, event: ShuffleMetaRestarted) -> list[Instruction]:
        """shuffle_meta came back empty: tell it every map output held here again, and repeat the
        look-ups it had not answered (it rebuilds from the executors' reports)."""
        return [Log("warning", "shuffle_meta_reconnected"), *self.outputs.register_all(), *self.inputs.pending_lookups()]

    def _checkpoints_written(self, event: CheckpointsWritten) -> list[Instruction]:
        if not event.written:
            return []
        return [ToScheduler(StateCheckpointed(executor_id=self.executor_id, checkpoints=event.written))]

    # --- reporting ------------------------------------------------------------------------------

    def _transition(self, local: LocalTask, new: TaskState) -> None:
        self.stories.record(local.key, local.state, new, self._stimulus, self._now)
        local.state = new

    def _task_over(self, local: LocalTask, advance: bool = True) -> list[Instruction]:
        """A stateful task over lets its state's next batch run; its group may be over too."""
        state = local.spec.state
        if advance and state is not None and local.group_id is not None:
            parked = self.keyed.advance((state.state_id, local.task.partition), local.task.batch)
            if parked is not None and self.tasks.get(parked.key) is parked:
                self._ready(parked)
        return self._group_task_over(local.group_id, local.key)

    def _group_task_over(self, group_id: int | None, key: TaskKey) -> list[Instruction]:
        """Group accounting: report the group once every task of it here is over."""
        if group_id is None or group_id not in self.groups:
            return []
        outstanding = self.groups[group_id].outstanding
        outstanding.discard(key)
        return [] if outstanding else self._group_over(group_id)

    def _group_over(self, group_id: int) -> list[Instruction]:
        group = self.groups.pop(group_id)
        done = GroupDone(group_id=group_id, executor_id=self.executor_id, tasks=group.tasks, busy=group.busy, skipped=group.skipped)
        return [ToScheduler(done), *self.outputs.register()]  # locations travel after the report

    def _report_failure(self, task: TaskDescriptor, group_id: int | None, failure: Failure, local: LocalTask | None = None,
                        final: TaskState = FAILED) -> list[Instruction]:
        failed = ToScheduler(task_failed(self.executor_id, task, failure, self.settings.max_message_bytes))
        if local is None:  # it never became a task here (no spec, or its partition could not be restored)
            self.stories.record(task.key, NEW, final, self._stimulus, self._now)
            return [failed, *self._group_task_over(group_id, task.key)]
        self._transition(local, final)
        return [failed, *self._task_over(local)]

