"""The tasks an executor runs, from launch to report: pure bookkeeping behind ExecutorState.

Tasks arrive in two ways. BSP (LaunchTasks): a reducer looks up where its map outputs live
(shuffle_meta) and fetches them. Drizzle (LaunchGroup): a whole group's share at once; a mapper
pushes each reduce partition's block straight to the reducer's executor, and a reducer becomes
runnable the moment all its mappers' blocks are in, for every shuffle it reads: no scheduler
message between stages (shuffle_inputs.py, map_outputs.py). A task told to read a persisted
partition as a block waits for it too (persisted_reads.py); a task that computed persisted
partitions hands their blocks back with its output, and they are kept here (persisted.py) and
registered with the block directory before the task is reported. Runnable tasks go to the
runner one at a time in local-scheduler order. Each group is reported once, when all its tasks here are over
(group_ledger.py). A stateful partition applies each batch once, in order (keyed_partitions.py).
Every task moves through the states of task_states.py by `_transition`, which keeps its story.

Two lanes (Neptune): at most one latency task runs (`running`: inline or on the runner thread)
and at most one batch task (`batch_running`, on a thread of its own), running or suspended. A
latency task to run while the batch task runs preempts it as settings.preemption says: "suspend"
parks it at its next safe point, "kill" abandons it (it runs again from its start), "none" lets
the latency task wait. Once latency work is over the batch task resumes; if latency work kept it
suspended for batch_max_suspension, it gets a slice of batch_slice seconds between two latency
tasks instead. A new batch task starts only when no latency task runs or waits to.

`now` and `stimulus` are those of the event being handled (ExecutorState.handle sets them).
"""

from __future__ import annotations

import itertools
from typing import Any

from squall.common.core import Log, ToShuffleMeta
from squall.common.plan import ShuffleRead, ShuffleWrite, StageSpec
from squall.common.protocol import (
    DroppedPersisted,
    ErrorReply,
    GroupDone,
    LaunchGroup,
    LaunchTasks,
    PushBlocks,
    RegisterPersisted,
    ResultPartition,
    StateRestore,
    TaskDescriptor,
    fits,
)
from squall.common.settings import Settings
from squall.services.executor.group_ledger import GroupLedger
from squall.services.executor.held_tasks import HeldTasks
from squall.services.executor.instructions import (
    CheckpointMapOutput,
    CheckpointState,
    Connect,
    DropStates,
    Instruction,
    PreemptTask,
    RestoreState,
    ResumeTask,
    RunTask,
    StopTask,
    SuspendTask,
    ToPeer,
    ToScheduler,
)
from squall.services.executor.keyed_partitions import KeyedPartitions, StateKey
from squall.services.executor.local_scheduler import BATCH, LATENCY, LocalScheduler, LocalTask
from squall.services.executor.map_outputs import MapOutputStore
from squall.services.executor.persisted import MadeBlock, PersistedStore
from squall.services.executor.persisted_reads import PersistedReads
from squall.services.executor.preemption import PreemptionCounters
from squall.services.executor.reports import Failure, task_failed, task_finished
from squall.services.executor.shuffle_inputs import Arrivals, ShuffleInputs
from squall.services.executor.task_states import (
    CANCELLED,
    DONE,
    FAILED,
    HELD,
    NEW,
    ON_BATCH_LANE,
    ON_RUNNER,
    ORPHANED,
    PARKED,
    PREEMPTED,
    READY,
    RUNNING,
    SUSPENDED,
    WAITING,
    Stories,
    TaskKey,
    TaskState,
)
from squall.services.executor.tasks import TaskOutput
from squall.services.executor.work_counters import WorkCounters, payload_bytes


class TaskFlow:
    def __init__(self, executor_id: str, data_address: str, settings: Settings, wall_offset: float, stories: Stories,
                 counters: PreemptionCounters | None = None, work: WorkCounters | None = None) -> None:
        self.executor_id = executor_id
        self.data_address = data_address
        self.settings = settings
        # Batch-priority tasks of Drizzle groups finished here, by "job wire id:stage", until their
        # job is released: heartbeats carry it, so a long batch job shows its progress.
        self.batch_done: dict[str, int] = {}
        self.wall_offset = wall_offset  # time.time() - time.monotonic(): batch times are wall-clock
        self.stories = stories
        self.now = 0.0
        self.stimulus = ""
        self.stages: dict[str, StageSpec] = {}
        self.code: dict[str, bytes] = {}  # pickled code by code key; each RunTask carries its stage's
        self.outputs = MapOutputStore(executor_id, data_address, settings)
        request_ids = itertools.count(1).__next__  # one sequence for every request a peer answers
        self.inputs = ShuffleInputs(settings, request_ids)
        self.persisted = PersistedStore(settings.persist_memory)
        self.block_reads = PersistedReads(settings, self.persisted, data_address, request_ids)
        self.local = LocalScheduler()
        self.tasks: dict[TaskKey, LocalTask] = {}  # launched here and not over (the running one included)
        self.running: LocalTask | None = None  # the latency lane's task
        self.started = 0.0  # when the running task was handed to the runner
        self.batch_running: LocalTask | None = None  # the batch lane's task (running, suspended, or on its way out)
        self.batch_started = 0.0
        self.suspended_since = 0.0  # when the batch task was last suspended
        self.slicing = False  # the batch task runs a starvation slice: latency tasks wait for its end (SliceOver)
        self.counters = counters if counters is not None else PreemptionCounters()
        self.work = work if work is not None else WorkCounters()  # for the metrics endpoint
        self.barrier = False
        self.groups = GroupLedger(executor_id)
        self.held = HeldTasks()  # source tasks waiting for their batch's time
        self.keyed = KeyedPartitions()  # batch order and kept outputs of the stateful partitions here

    def validate(self) -> None:
        """Check the invariants tying the tables together (tests call it after every event)."""
        running, batch = self.running, self.batch_running
        if running is not None:
            assert running.state in ON_RUNNER and self.tasks.get(running.key) is running, running
            assert running.lane == LATENCY, f"the latency lane runs {running}"
        if batch is not None:
            assert batch.state in ON_BATCH_LANE and self.tasks.get(batch.key) is batch, batch
            assert batch.lane == BATCH, f"the batch lane runs {batch}"
        assert not self.slicing or batch is not None, "a slice with no batch task"
        for key, local in self.tasks.items():
            assert local.key == key and local.state is not None and local.state not in (DONE, FAILED), local
            on_lane = local is running or local is batch
            assert (local.state in ON_BATCH_LANE) == on_lane, f"{key} is {local.state} but the runner has {running}, the batch lane {batch}"
            assert local.state not in (SUSPENDED, PREEMPTED) or local is batch, f"{key} is {local.state} off the batch lane"
        for local in self.local.queued():
            assert local.state is READY and self.tasks.get(local.key) is local, local
        queued = {local.key for local in self.local.queued()}
        readers = {reader.task_key for reader in self.inputs.readers.values()} | self.block_reads.waiting.keys()
        held = self.held.keys()
        for key, local in self.tasks.items():
            assert local.state is not READY or key in queued, f"{key} is ready but not queued"
            assert local.state is not WAITING or key in readers, f"{key} waits for inputs nobody delivers"
            assert local.state is not HELD or key in held, f"{key} is held without a release time"
        for key in self.block_reads.waiting:
            task = self.tasks.get(key)
            assert task is not None and task.state is WAITING, f"blocks fetched for {key}: {task}"
        self.block_reads.validate()
        self.persisted.validate()
        for inbox_key, reader in self.inputs.readers.items():
            task = self.tasks.get(reader.task_key)
            assert task is not None and task.state is WAITING, f"reader of {inbox_key}: {task}"
        for group_id, outstanding in self.groups.outstanding():
            assert outstanding <= self.tasks.keys(), f"group {group_id} waits for unknown tasks"

    # --- launching ---------------------------------------------------------------------------------

    def launch(self, msg: LaunchTasks) -> list[Instruction]:
        """BSP: tasks to run now; a reducer first looks its map outputs up."""
        self._cache(msg.stages, msg.code, msg.forget_stages, msg.forget_code)
        out: list[Instruction] = []
        for task in msg.tasks:
            out += self._accept(task, None)
        return out + self._next()

    def launch_group(self, msg: LaunchGroup, restored: dict[StateKey, tuple[int, dict[Any, Any]] | str]) -> list[Instruction]:
        """Drizzle: a whole group's share; reducers wait for what their mappers push."""
        self._cache(msg.stages, msg.code, msg.forget_stages, msg.forget_code)
        self.barrier = msg.barrier
        # (A replay's push_to has "" where a reducer is not run again: nothing to connect to.)
        peers = {a for t in msg.tasks for a in t.push_to if a} | {t.result_to for t in msg.tasks if t.result_to}
        peers.discard(self.data_address)
        out: list[Instruction] = [Connect(tuple(sorted(peers)))] if peers else []
        unreadable: dict[StateKey, str] = {}
        for restore in msg.restores:
            out += self._restore(restore, restored.get((restore.state_id, restore.partition)), unreadable)
        done = self.groups.open(msg.group_id, {t.key for t in msg.tasks})
        for task in msg.tasks:
            spec = self.stages.get(task.stage_key)
            why = unreadable.get((spec.state.state_id, task.partition), "") if spec is not None and spec.state is not None else ""
            if why:
                out += self._report_failure(task, msg.group_id, Failure("task", "CheckpointUnreadable", why))
            else:
                out += self._accept(task, msg.group_id)
        return out + (self._group_over(done) if done is not None else []) + self._next()

    def _cache(self, stages: dict[str, StageSpec], code: dict[str, bytes], forget_stages: list[str], forget_code: list[str]) -> None:
        """Drop what the scheduler evicted from its record of our cache (it evicts only what no task
        here still needs: queued tasks hold their spec, a running one carries its code), then add
        what came."""
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
        out: list[Instruction] = []
        batch = self.batch_running
        if batch is not None and batch.state in (RUNNING, SUSPENDED) and batch.spec.state is not None \
                and (batch.spec.state.state_id, batch.task.partition) == key:
            self._transition(batch, ORPHANED)  # the same; and stopped, so that a suspended one does not stay parked
            out.append(StopTask(batch.key))
        if isinstance(loaded, str):
            self.keyed.drop(key)
            unreadable[key] = loaded
            return [*out, DropStates([key[0]], key[1])]
        applied, table = loaded if loaded is not None else (restore.first_batch - 1, {})
        self.keyed.restore(key, applied)
        log = Log("info", "state_restored", {"state": key[0], "partition": key[1], "batch": loaded[0] if loaded else None})
        return [*out, RestoreState(key[0], key[1], table), log]

    def hand_over(self, partitions: list[tuple[str, int, int]]) -> list[Instruction]:
        """The scheduler moves these partitions elsewhere after the batch given: checkpoint each
        as it is then (StateCheckpointed tells the scheduler), and keep it until HandedOver."""
        out: list[Instruction] = []
        for state_id, partition, batch in partitions:
            now = self.keyed.hand_over((state_id, partition), batch)
            if now:
                out.append(CheckpointState(state_id, partition, batch))
            elif now is None:  # the scheduler gives up on the move after handover_timeout
                why = f"partition {partition} of keyed state {state_id} is not here as of batch {batch}"
                out.append(Log("warning", "state_handover_impossible", {"state": state_id, "partition": partition, "reason": why}))
        return out

    def handed_over(self, partitions: list[tuple[str, int]]) -> list[Instruction]:
        """Their new owners have them: the tables here go."""
        out: list[Instruction] = []
        for state_id, partition in partitions:
            self.keyed.drop((state_id, partition))
            out.append(DropStates([state_id], partition))
        return out

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
        fetches: list[Instruction] = []
        if local.unplaced or local.blocks_read:
            found = self._gather_blocks(local)
            if found.lost:
                return self.arrived(found, run_next=False)
            fetches += found.sends
        if not local.reads and not self.block_reads.waits(task.key):
            release_at = task.not_before - self.wall_offset
            if task.not_before and release_at > self.now:  # a stream batch whose interval is not over
                self._transition(local, HELD)
                self.held.hold(local, release_at)
            else:
                self._ready(local)
            return fetches
        # One inbox key per shuffle it reads (a union's task reads one branch's, a cogroup's all).
        arrivals = Arrivals()
        for (read, _), inbox_key in zip(local.reads, local.inbox_keys, strict=True):
            local.inputs[read.shuffle_id], found = self.inputs.read(inbox_key, task.key, read.map_partitions)
            arrivals.failed += found.failed
        self._transition(local, WAITING)
        if arrivals.failed:
            return self.arrived(arrivals, run_next=False)  # its fetches of blocks are dropped: their answers find nothing
        if group_id is not None:
            return fetches + self._maybe_runnable(local)
        return fetches + [self.inputs.look_up(inbox_key, read.map_partitions, self.now)
                          for (read, _), inbox_key in zip(local.reads, local.inbox_keys, strict=True)]

    def _gather_blocks(self, local: LocalTask) -> Arrivals:
        """The persisted blocks the task reads: from the store here, or fetched from their holder.
        A persisted partition it can neither read nor compute means the scheduler placed it
        wrong: lost too, so the job is planned again."""
        if local.unplaced:
            read, partition = local.unplaced[0]
            reason = (f"partition {partition} of persisted dataset {read.dataset_id} was not said to be held anywhere, "
                      "and the lineage to compute it was not planned")
            return Arrivals(lost=[(local.key, reason)])
        return self.block_reads.gather(local.key, local.blocks_read, local.task.persisted, local.blocks, self.now)

    def release_held(self) -> list[Instruction]:
        """Make the source tasks whose batch time has come runnable."""
        for local in self.held.due(self.now):
            if self.tasks.get(local.key) is local:  # not released meanwhile
                self._ready(local)
        return self._next()

    def arrived(self, arrivals: Arrivals, run_next: bool = True) -> list[Instruction]:
        """Act on what input bookkeeping found out: reducers complete, or failed. `run_next`:
        hand the runner its next task now (not in the middle of a launch or a completion, which
        do so once they are through: the local order then sees every task they add)."""
        out: list[Instruction] = list(arrivals.sends)
        for key in arrivals.complete:
            local = self.tasks.get(key)
            if local is not None and local.state is WAITING:
                out += self._maybe_runnable(local)
        failures = [(key, Failure("fetch", error_type, reason)) for key, error_type, reason in arrivals.failed]
        failures += [(key, Failure("block", "BlockLost", reason)) for key, reason in arrivals.lost]
        for key, failure in failures:
            local = self.tasks.pop(key, None)
            if local is not None:
                self.inputs.drop_readers(local.inbox_keys)  # its other inputs are of no use now
                self.block_reads.drop(key)
                self.local.finished(local)
                out += self._report_failure(local.task, local.group_id, failure, local)
        return out + self._next() if run_next and (arrivals.complete or failures) else out

    def refused(self, msg: ErrorReply) -> list[Instruction]:
        """A peer or shuffle_meta could not answer a request: a fetch of a block, or of shuffle input."""
        found = self.block_reads.refused(msg)
        return self.arrived(found if found is not None else self.inputs.refused(msg))

    def _maybe_runnable(self, local: LocalTask) -> list[Instruction]:
        if self.block_reads.waits(local.key) or not self.inputs.take_if_complete(local.inbox_keys):
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

    def _ready(self, local: LocalTask) -> None:
        self._transition(local, READY)
        self.local.push(local)

    def batch_suspended(self) -> bool:
        return self.batch_running is not None and self.batch_running.state is SUSPENDED

    def next_tasks(self) -> list[Instruction]:
        """What the lanes take next: on the clock's tick, a batch task suspended past
        batch_max_suspension for latency work still in flight goes on."""
        return self._next()

    def _next(self) -> list[Instruction]:
        """Hand each free lane its next task, as the lanes' rules say (module docstring)."""
        if self.running is not None:
            out: list[Instruction] = []
        else:
            out = self._start(LATENCY) if self.batch_running is None else self._next_latency()
        # The latency lane still free: no latency task could start (none runnable, or all held
        # by the barrier, perhaps behind a batch reducer), so a batch task may.
        if self.running is None and self.batch_running is None and self.local.has_runnable(BATCH):
            out += self._start(BATCH)
        return out

    def _next_latency(self) -> list[Instruction]:
        """The latency lane is free and the batch lane busy: resume, slice, preempt or wait."""
        batch = self.batch_running
        assert batch is not None
        if batch.state is SUSPENDED:
            starved = self.now - self.suspended_since >= self.settings.batch_max_suspension
            if starved and self.local.has_runnable(LATENCY):
                self.counters.slices += 1
                self.slicing = True
                self._transition(batch, RUNNING)
                return [ResumeTask(batch.key, self.settings.batch_slice)]
            out = self._start(LATENCY)
            # No latency task to run after all: the batch task goes on, unless a latency reducer
            # here is being fed (it runs within milliseconds; until it has, the batch task would
            # only take the CPU from the mappers feeding it, here or on executors beside this one).
            if self.running is None and (starved or not self._latency_imminent()):
                self.counters.resumes += 1
                self._transition(batch, RUNNING)
                out.append(ResumeTask(batch.key))
            return out
        if batch.state is not RUNNING:  # on its way out (cancelled, orphaned, preempted): no contest
            return self._start(LATENCY)
        if self.slicing or self.settings.preemption == "none" or not self.local.has_runnable(LATENCY):
            return []
        # Stateful tasks are never killed: a batch half applied to its table cannot be run again
        # from its start (some records would count twice), so they are suspended instead. A task
        # is killed once at most: killed at every latency task, a task longer than the stream's
        # batch interval would never finish; its run from the start goes to its end (as "none").
        kill = self.settings.preemption == "kill" and batch.spec.state is None
        if kill and batch.killed:
            return []
        out = self._start(LATENCY)
        if self.running is None:
            return out
        if kill:
            batch.killed = True
            self.counters.kills += 1
            self._transition(batch, PREEMPTED)
            return [PreemptTask(batch.key), *out]
        self.counters.suspensions += 1
        self._transition(batch, SUSPENDED)
        self.suspended_since = self.now
        return [SuspendTask(batch.key), *out]

    def _latency_imminent(self) -> bool:
        """A latency reducer here has some of its inputs and waits for the rest: its mappers run
        now. (A scan of the tasks here, made only while a batch task is suspended.)"""
        return any(t.lane == LATENCY and t.state is WAITING and any(t.inputs.values()) for t in self.tasks.values())

    def _start(self, lane: int) -> list[Instruction]:
        """The lane's next runnable task goes to it (stateful tasks whose batch was applied
        meanwhile are done at once on the way)."""
        out: list[Instruction] = []
        while True:
            local = self.local.pop(self.barrier, lane)
            if local is None:
                return out
            state = local.spec.state
            key = (state.state_id, local.task.partition) if state is not None else None
            if key is None or local.group_id is None or not self.keyed.applied(key, local.task.batch):
                break
            out += self._already_applied(local)  # its first attempt applied it meanwhile
        self._transition(local, RUNNING)
        if lane == LATENCY:
            self.running, self.started = local, self.now
        else:
            self.batch_running, self.batch_started = local, self.now
        # Flat, shuffle by shuffle in id order, each by map partition (tasks.py splits them again).
        inputs = [blocks[p] for _, blocks in sorted(local.inputs.items()) for p in sorted(blocks)]
        code = {k: self.code[k] for k in local.spec.code_keys() if k in self.code}
        return [*out, RunTask(local.task, local.spec, inputs, code, local.blocks)]

    def slice_over(self, key: TaskKey) -> list[Instruction]:
        """The batch task's slice is over: it parked itself again, or its time is up by the loop's
        clock (a niced thread the OS ran late must not hold latency tasks up: SuspendTask parks it
        at its next safe point, and is a no-op for a task parked already). Latency tasks go on."""
        batch = self.batch_running
        if batch is None or batch.key != key or not self.slicing:
            return []  # over meanwhile, or the other of the two notices of one slice
        self.slicing = False
        if batch.state is not RUNNING:  # its job is over meanwhile, or its partition restored: not parked for long
            return [ResumeTask(batch.key)]
        self._transition(batch, SUSPENDED)
        self.suspended_since = self.now
        return [SuspendTask(batch.key), *self._next()]

    def completed(self, task: TaskDescriptor, outcome: TaskOutput | Failure) -> list[Instruction]:
        """A lane is done with its task. The persisted blocks it computed are kept whatever becomes
        of it (their records are right even if the task's own output goes nowhere), and the block
        directory hears of them before the task's report leaves: the next job's look-up there
        follows that report."""
        kept = self._keep_blocks(outcome.persisted) if isinstance(outcome, TaskOutput) and outcome.persisted else []
        return kept + self._lane_done(task, outcome)

    def _keep_blocks(self, made: list[MadeBlock]) -> list[Instruction]:
        kept = self.persisted.keep(made)
        out: list[Instruction] = []
        if kept.dropped:
            out.append(ToShuffleMeta(DroppedPersisted(executor_id=self.executor_id, blocks=kept.dropped)))
        if kept.held:
            out.append(ToShuffleMeta(RegisterPersisted(executor_id=self.executor_id, address=self.data_address, blocks=kept.held)))
        for dataset_id, size in kept.too_large:
            out.append(Log("warning", "persisted_block_too_large", {
                "dataset": dataset_id, "bytes": size, "persist_memory": self.persisted.budget,
                "hint": "a partition larger than persist_memory (SQUALL_PERSIST_MEMORY) is computed again by every job "
                        "that reads it: raise the budget, or use more partitions"}))
        return out

    def register_blocks(self) -> list[Instruction]:
        """Every persisted block held here, for a block directory that restarted empty."""
        held = self.persisted.held()
        return [ToShuffleMeta(RegisterPersisted(executor_id=self.executor_id, address=self.data_address, blocks=held))] if held else []

    def _lane_done(self, task: TaskDescriptor, outcome: TaskOutput | Failure) -> list[Instruction]:
        running, started = self.running, self.started
        if running is not None and running.key == task.key:
            self.running = None
        else:
            running, started = self.batch_running, self.batch_started
            if running is None or running.key != task.key:
                return []  # it was written off meanwhile
            self.batch_running, self.slicing = None, False
            if running.state is PREEMPTED and isinstance(outcome, Failure) and outcome.error_type == "Preempted":
                return self._run_again(running, started) + self._next()
        self.tasks.pop(task.key, None)
        self.local.finished(running)
        skipped = outcome.skipped if isinstance(outcome, TaskOutput) else 0
        self.groups.ran(running.group_id, self.now - started, skipped)
        self.work.tasks_completed[task.priority] += 1
        self.work.skipped_records += skipped
        if running.state is ORPHANED:
            return self._task_over(running, advance=False) + self._next()
        out: list[Instruction] = []
        state = running.spec.state
        if state is not None and running.group_id is not None and isinstance(outcome, TaskOutput):
            # The state has applied this batch, whatever becomes of the job: keep what it made.
            if not task.replay_only:
                self.keyed.keep((state.state_id, task.partition), task.batch, task.job_id, outcome)
            if task.checkpoint_state or self.keyed.handing_over((state.state_id, task.partition), task.batch):
                out.append(CheckpointState(state.state_id, task.partition, task.batch))
        if running.state is CANCELLED:
            if running.group_id is None:  # BSP: the scheduler still counts the slot as taken
                out.append(ToScheduler(task_finished(self.executor_id, task, TaskOutput([], False), started, self.now)))
            return out + self._task_over(running) + self._next()
        if isinstance(outcome, Failure):
            return out + self._report_failure(task, running.group_id, outcome, running) + self._next()
        return out + self._complete(running, outcome, started) + self._next()

    def _run_again(self, local: LocalTask, started: float) -> list[Instruction]:
        """A killed batch task came back from its safe point: it waits to run from its start
        again, with the same inputs (it still holds them); what it had done is thrown away."""
        thrown_away = self.now - started
        self.counters.thrown_away_seconds += thrown_away
        self._ready(local)
        key = local.key
        return [Log("info", "task_preempted", {"job": key[0], "stage": key[1], "partition": key[2],
                                                "thrown_away": round(thrown_away, 4)})]

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
        if task.priority == "batch" and local.group_id is not None:
            done_key = f"{task.job_id}:{task.stage_id}"
            self.batch_done[done_key] = self.batch_done.get(done_key, 0) + 1
        out: list[Instruction] = []
        if task.replay_only:
            pass
        elif outcome.is_result and local.group_id is None:
            out.append(ToScheduler(task_finished(self.executor_id, task, outcome, started, self.now), tuple(outcome.blocks)))
        elif outcome.is_result:
            out.append(self._result_partition(local, outcome))
        else:
            out += self._map_output(local, outcome)
            if local.group_id is None:
                out.append(ToScheduler(task_finished(self.executor_id, task, outcome, started, self.now)))
        return out + self._task_over(local)

    def _result_partition(self, local: LocalTask, outcome: TaskOutput) -> Instruction:
        """A Drizzle result task's records: straight to the driver when it gave an address (the
        group's report tells the scheduler they went), to the scheduler otherwise."""
        task = local.task
        msg = ResultPartition(executor_id=self.executor_id, job_id=task.job_id, partition=task.partition, attempt=task.attempt,
                              partitions=local.spec.partitions)
        if not task.result_to:
            return ToScheduler(msg, tuple(outcome.blocks))
        self.groups.sent_result(local.group_id, task.job_id, task.partition)
        return ToPeer(task.result_to, msg, tuple(outcome.blocks))

    def _map_output(self, local: LocalTask, outcome: TaskOutput) -> list[Instruction]:
        """Keep the blocks; push them to pre-scheduled reducers; tell shuffle_meta (off the critical path)."""
        task, output = local.task, local.spec.output
        assert isinstance(output, ShuffleWrite)
        sends, here = self.outputs.keep(task, output.shuffle_id, outcome.blocks)
        self.work.shuffle_bytes_pushed += sum(payload_bytes(send.payloads) for send in sends if type(send.msg) is PushBlocks)
        arrivals = Arrivals()
        for r in here:
            self.inputs.arrive((task.job_id, output.shuffle_id, r), task.partition, outcome.blocks[r], arrivals)
        out: list[Instruction] = [*sends, *self.arrived(arrivals, run_next=False)]
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
        self.inputs.drop_readers(local.inbox_keys)
        if task.replay_only:
            self._transition(local, DONE)
            return self._task_over(local)
        kept = self.keyed.take((spec.state.state_id, task.partition), task.batch, task.job_id)
        if kept is None:
            message = (f"partition {task.partition} of keyed state {spec.state.state_id} is past batch {task.batch} "
                       "and no longer holds its output")
            return self._report_failure(task, local.group_id, Failure("task", "StateAhead", message), local)
        return self._complete(local, kept, self.now)

    def release(self, jobs: set[str], superseded: bool = False, cancelled: bool = False) -> list[Instruction]:
        """Jobs are over: drop their blocks; cancel their tasks that have not started (a BSP task is
        reported so the scheduler frees its slot); a running one reports without keeping output.
        Outputs kept for stateful batches go too, unless the jobs are `superseded` by replays."""
        if not superseded:
            self.keyed.release(jobs)
        for done_key in [k for k in self.batch_done if k.rpartition(":")[0] in jobs]:
            del self.batch_done[done_key]
        self.outputs.release(jobs, cancelled)
        self.inputs.release(jobs)
        self.block_reads.release(jobs)
        self.local.remove_jobs(jobs)
        out: list[Instruction] = []
        for key in [k for k in self.tasks if k[0] in jobs]:
            local = self.tasks[key]
            if local is self.running:
                if local.state is RUNNING:
                    self._transition(local, CANCELLED)
                continue
            if local is self.batch_running:
                if local.state in (RUNNING, SUSPENDED):
                    out.append(self._wind_down(local, cancelled))
                if local.state in (RUNNING, SUSPENDED, PREEMPTED):  # a preempted one is on its way out already
                    self._transition(local, CANCELLED)
                continue
            del self.tasks[key]
            self.local.finished(local)
            if local.group_id is None:
                why = Failure("fetch", "Cancelled", f"job {key[0]} was released")
                out += self._report_failure(local.task, None, why, local, CANCELLED)
            else:
                self._transition(local, CANCELLED)
                out += self._task_over(local, advance=False)  # never ran: its batch is not applied
        return out + self._next()

    def _wind_down(self, local: LocalTask, cancelled: bool) -> Instruction:
        """The batch task's job is over: it must not stay parked. It is stopped (its output is
        dropped, and the lane is wanted), unless it is stateful and its job only released: then it
        finishes, as the latency lane's task does, so the output of the batch it applies is kept
        for replays (stopped after its state's update, the batch would count twice)."""
        if local.spec.state is None or cancelled:
            return StopTask(local.key)
        return ResumeTask(local.key)

    def cancel(self, jobs: set[str]) -> list[Instruction]:
        """Their run was cancelled: everything of theirs goes as on a release (queued tasks, blocks
        here and in the inbox, look-ups and fetches), and so do source tasks held for their batch's
        time and map outputs not yet registered. The running task is asked to stop at its next safe
        point; when it returns, its output is dropped and the runner takes the next task (the batch
        lane's task is stopped by release)."""
        self.held.drop_jobs(jobs)
        running = self.running
        stop: list[Instruction] = [StopTask(running.key)] if running is not None and running.key[0] in jobs else []
        return stop + self.release(jobs, cancelled=True)

    def _transition(self, local: LocalTask, new: TaskState) -> None:
        self.stories.record(local.key, local.state, new, self.stimulus, self.now)
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
        done = self.groups.task_over(group_id, key)
        return self._group_over(done) if done is not None else []

    def _group_over(self, done: GroupDone) -> list[Instruction]:
        return [ToScheduler(done), *self.outputs.register()]  # locations travel after the report

    def _report_failure(self, task: TaskDescriptor, group_id: int | None, failure: Failure, local: LocalTask | None = None,
                        final: TaskState = FAILED) -> list[Instruction]:
        failed = ToScheduler(task_failed(self.executor_id, task, failure, self.settings.max_message_bytes))
        if local is None:  # it never became a task here (no spec, or its partition could not be restored)
            self.stories.record(task.key, NEW, final, self.stimulus, self.now)
            return [failed, self._story_log(task.key, failure), *self._group_task_over(group_id, task.key)]
        self._transition(local, final)
        return [failed, self._story_log(task.key, failure), *self._task_over(local)]

    def _story_log(self, key: TaskKey, failure: Failure) -> Log:
        """A failed task's story, for the debug log: each state it went through, and what moved it."""
        story = [f"{old.value if old else 'new'}->{new.value} ({stimulus}, {now:.3f})" for old, new, stimulus, now in self.stories.story(key)]
        return Log("debug", "task_story", {"job": key[0], "stage": key[1], "partition": key[2], "error": failure.error_type, "story": story})

