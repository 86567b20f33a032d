"""The executor's pure core: events in, actions out, no sockets and no user code.

Tasks arrive in two ways. BSP (LaunchTasks): a reducer looks up where its map outputs live
(shuffle_meta) and fetches them. Drizzle (LaunchGroup): a whole group's share at once; a mapper
pushes each reduce partition's block straight to the reducer's executor (inline when small,
otherwise a notice the reducer answers with a fetch), and a reducer becomes runnable the moment
all its mappers' blocks are in: no scheduler message between stages. Runnable tasks go to the
runner one at a time in local-scheduler order. Each group is reported once, when all its tasks
here are over. Look-ups and fetches have deadlines, so a dead peer fails a task, never hangs it.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass

from squall.common.plan import ShuffleRead, ShuffleWrite, StageSpec
from squall.common.protocol import (
    Blocks,
    BlocksReady,
    ErrorReply,
    FetchBlocks,
    GroupDone,
    LaunchGroup,
    LaunchTasks,
    LookupMapOutputs,
    MapLocation,
    MapOutput,
    MapOutputs,
    Message,
    PushBlocks,
    RegisterMapOutputs,
    ResultPartition,
    StateRestore,
    TaskDescriptor,
    TaskFailed,
    TaskFinished,
    fits,
)
from squall.common.recent_ids import RecentIds
from squall.common.settings import Settings
from squall.services.executor.inbox import InboxKey, ShuffleInbox
from squall.services.executor.keyed_partitions import KeyedPartitions, StateKey
from squall.services.executor.local_scheduler import LocalScheduler, LocalTask
from squall.services.executor.tasks import StateTables, TaskOutput

TaskKey = tuple[str, int, int]  # (job_id, stage_id, partition)
BlockKey = tuple[str, int, int]  # (job_id, shuffle_id, map_partition)


# --- actions -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToScheduler:
    msg: Message
    payloads: tuple[object, ...] = ()


@dataclass(frozen=True)
class ToShuffleMeta:
    msg: Message


@dataclass(frozen=True)
class ToPeer:
    """Send to another executor's block socket (the loop keeps one connection per address)."""

    address: str
    msg: Message
    payloads: tuple[object, ...] = ()


@dataclass(frozen=True)
class Reply:
    """Answer a peer on our own block socket."""

    peer: bytes
    msg: Message
    payloads: tuple[object, ...] = ()


@dataclass(frozen=True)
class Run:
    """Hand a task whose inputs are all present to the runner thread."""

    task: TaskDescriptor
    spec: StageSpec
    inputs: list[object]


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
class StopTask:
    """Ask the runner to stop this task at its next safe point (its run was cancelled)."""

    key: TaskKey


Action = ToScheduler | ToShuffleMeta | ToPeer | Reply | Run | CheckpointMapOutput | CheckpointState | StopTask

Restored = dict[StateKey, tuple[int, dict] | str]  # loaded checkpoints: (batch, table), or why not


@dataclass(frozen=True)
class Failure:
    kind: str  # "task" | "fetch" | "code"
    error_type: str
    message: str
    traceback: str = ""


def _bounded(text: str, max_message_bytes: int, keep: str) -> str:
    """A failure's text cut to what a report may carry: user exceptions can quote whole records,
    and a TaskFailed over the message limit would make ZeroMQ drop the connection it travels on.
    `keep` is "head" (a message) or "ends" (a traceback: its start and its final lines)."""
    limit = min(64 * 1024, max_message_bytes // 16)  # characters; at most 4 bytes each in UTF-8
    if len(text) <= limit:
        return text
    note = f"\n[... {len(text) - limit} characters cut: a failure report is limited to {limit} ...]\n"
    if keep == "head":
        return text[:limit] + note
    return text[: limit // 2] + note + text[-(limit // 2) :]


@dataclass
class _Request:
    """An outstanding look-up (BSP) or fetch, with the reducer input it serves."""

    inbox_key: InboxKey
    task_key: TaskKey | None
    what: str
    deadline: float
    lookup: LookupMapOutputs | None = None  # kept, to ask a restarted shuffle_meta again


@dataclass
class _Group:
    outstanding: set[TaskKey]
    tasks: int
    busy: float = 0.0
    skipped: int = 0


@dataclass
class _Running:
    local: LocalTask
    started: float
    released: bool = False  # its job ended while it ran: report, keep nothing
    orphaned: bool = False  # its stateful partition was restored from a checkpoint while it ran


class ExecutorState:
    def __init__(self, executor_id: str, data_address: str, settings: Settings) -> None:
        self.executor_id = executor_id
        self.data_address = data_address
        self.settings = settings
        self.stages: dict[str, StageSpec] = {}
        self.code: dict[str, bytes] = {}  # pickled code by code key (the runner loads from here)
        self.store: dict[BlockKey, list[bytes]] = {}  # our map outputs, one block per reduce partition
        self.inbox = ShuffleInbox()
        self.local = LocalScheduler()
        self.tasks: dict[TaskKey, LocalTask] = {}  # launched here and not over (running included)
        self.running: _Running | None = None
        self.barrier = False
        self.groups: dict[int, _Group] = {}
        self._readers: dict[InboxKey, TaskKey] = {}
        self._requests: dict[int, _Request] = {}
        self._failed_inputs: dict[InboxKey, tuple[str, str]] = {}  # failed before their reducer arrived
        self._unregistered: list[MapOutput] = []  # map outputs shuffle_meta has not heard of yet
        # Source tasks waiting for their batch's time: (monotonic release time, seq, task).
        self._held: list[tuple[float, int, LocalTask]] = []
        self.wall_offset = 0.0  # time.time() - time.monotonic(), set by the loop
        # Keyed state of the stateful partitions run here (the runner updates the tables), the
        # order their batches apply in, and outputs kept for replays (keyed_partitions.py).
        self.states: StateTables = {}
        self.keyed = KeyedPartitions(self.states)
        self._released = RecentIds()  # jobs over: their late blocks are dropped
        self._ids = itertools.count(1)

    def tracked(self) -> dict[str, int]:
        """Entries in each table (GetTracked): all bounded while jobs come and go."""
        return {
            "stages": len(self.stages),
            "code": len(self.code),
            "store": len(self.store),
            "tasks": len(self.tasks),
            "groups": len(self.groups),
            "readers": len(self._readers),
            "requests": len(self._requests),
            "failed_inputs": len(self._failed_inputs),
            "unregistered": len(self._unregistered),
            "held": len(self._held),
            "released": len(self._released),
            **{f"inbox.{k}": v for k, v in self.inbox.tracked().items()},
            **{f"local.{k}": v for k, v in self.local.tracked().items()},
            **{f"keyed.{k}": v for k, v in self.keyed.tracked().items()},
        }

    def reset(self) -> None:
        """The scheduler forgot us: drop everything; our work was written off. (The code store is
        the same object afterwards, emptied: the runner holds on to it.)"""
        code, states, wall_offset = self.code, self.states, self.wall_offset
        code.clear()
        states.clear()
        self.__init__(self.executor_id, self.data_address, self.settings)  # type: ignore[misc]
        self.code, self.states, self.wall_offset = code, states, wall_offset
        self.keyed = KeyedPartitions(states)

    # --- launching ------------------------------------------------------------------------------

    def launch(self, msg: LaunchTasks, now: float) -> list[Action]:
        """BSP: tasks to run now; a reducer first looks its map outputs up."""
        self._forget(msg.forget_stages, msg.forget_code)
        self.stages.update(msg.stages)
        self.code.update(msg.code)
        actions: list[Action] = []
        for task in msg.tasks:
            actions += self._accept(task, None, now)
        return actions + self._next(now)

    def launch_group(self, msg: LaunchGroup, now: float, restored: Restored | None = None) -> list[Action]:
        """Drizzle: a whole group's share; reducers wait for what their mappers push. Partitions
        taken over (`msg.restores`) start from their checkpoint, loaded by the loop (`restored`)."""
        self._forget(msg.forget_stages, msg.forget_code)
        self.stages.update(msg.stages)
        self.code.update(msg.code)
        self.barrier = msg.barrier
        unreadable: dict[StateKey, str] = {}
        for restore in msg.restores:
            unreadable.update(self._restore(restore, (restored or {}).get((restore.state_id, restore.partition))))
        self.groups[msg.group_id] = _Group(outstanding={t.key for t in msg.tasks}, tasks=len(msg.tasks))
        actions: list[Action] = []
        for task in msg.tasks:
            spec = self.stages.get(task.stage_key)
            why = unreadable.get((spec.state.state_id, task.partition), "") if spec is not None and spec.state is not None else ""
            if why:
                actions += self._report_failure(task, msg.group_id, Failure("task", "CheckpointUnreadable", why))
            else:
                actions += self._accept(task, msg.group_id, now)
        if not msg.tasks:
            actions += self._group_over(msg.group_id)
        return actions + self._next(now)

    def _forget(self, stage_keys: list[str], code_keys: list[str]) -> None:
        """Drop what the scheduler evicted from its record of our cache (no task in flight uses it:
        queued tasks hold their spec, and their code stays)."""
        for key in stage_keys:
            self.stages.pop(key, None)
        for key in code_keys:
            self.code.pop(key, None)

    def _restore(self, restore: StateRestore, loaded: tuple[int, dict] | str | None) -> dict[StateKey, str]:
        """Take over a stateful partition at its checkpoint (or empty, before its first batch)."""
        key = (restore.state_id, restore.partition)
        running = self.running
        if running is not None and running.local.spec.state is not None and (running.local.spec.state.state_id, running.local.task.partition) == key:
            running.orphaned = True  # it works on the table being replaced: its batch does not count
        if isinstance(loaded, str):
            self.keyed.drop(key)
            return {key: loaded}
        batch, table = loaded if loaded is not None else (restore.first_batch - 1, {})
        self.keyed.restore(key, batch, table)
        return {}

    def _accept(self, task: TaskDescriptor, group_id: int | None, now: float) -> list[Action]:
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
                return self._already_applied(local, now)
        if not isinstance(spec.input, ShuffleRead):
            release_at = task.not_before - self.wall_offset
            if task.not_before and release_at > now:  # a stream batch whose interval is not over
                heapq.heappush(self._held, (release_at, next(self._ids), local))
            else:
                self.local.push(local)
            return []
        inbox_key = (task.job_id, spec.input.shuffle_id, task.partition)
        local.inputs = self.inbox.claim(inbox_key)
        self._readers[inbox_key] = task.key
        if inbox_key in self._failed_inputs:
            error_type, reason = self._failed_inputs.pop(inbox_key)
            return self._fail_input(inbox_key, reason, error_type)
        if group_id is not None:
            return self._maybe_runnable(local)
        request_id = self._request(inbox_key, task.key, "map output locations", now + self.settings.shuffle_lookup_timeout)
        lookup = LookupMapOutputs(
            request_id=request_id,
            job_id=task.job_id,
            shuffle_id=spec.input.shuffle_id,
            expected=spec.input.map_partitions,
            timeout=self.settings.shuffle_lookup_timeout,
        )
        self._requests[request_id].lookup = lookup
        return [ToShuffleMeta(lookup)]

    def shuffle_meta_restarted(self) -> list[Action]:
        """shuffle_meta came back empty: tell it every map output held here again, and repeat the
        look-ups it had not answered (it rebuilds from the executors' reports)."""
        outputs = [
            MapOutput(job_id=job_id, shuffle_id=shuffle_id,
                      location=MapLocation(map_partition, self.executor_id, self.data_address, [len(b) for b in blocks]))
            for (job_id, shuffle_id, map_partition), blocks in self.store.items()
        ]
        self._unregistered = []
        actions: list[Action] = [ToShuffleMeta(RegisterMapOutputs(outputs=outputs))] if outputs else []
        return actions + [ToShuffleMeta(r.lookup) for r in self._requests.values() if r.lookup is not None]

    # --- shuffle input --------------------------------------------------------------------------

    def map_outputs(self, msg: MapOutputs, now: float) -> list[Action]:
        """BSP: where a reducer's inputs live. Local ones are taken, remote ones fetched."""
        request = self._requests.pop(msg.request_id, None)
        if request is None:
            return []
        job_id, shuffle_id, reduce_partition = request.inbox_key
        by_address: dict[str, list[int]] = {}
        actions: list[Action] = []
        for loc in msg.locations:
            if loc.executor_id == self.executor_id:
                blocks = self.store.get((job_id, shuffle_id, loc.map_partition))
                if blocks is None:
                    return self._fail_input(request.inbox_key, f"map output {loc.map_partition} is not in the local block store")
                actions += self._arrive(request.inbox_key, loc.map_partition, blocks[reduce_partition], now)
            else:
                by_address.setdefault(loc.address, []).append(loc.map_partition)
        for address, parts in sorted(by_address.items()):
            actions.append(ToPeer(address, self._fetch(request.inbox_key, parts, now)))
        return actions

    def pushed(self, msg: PushBlocks, payloads: list[object], now: float) -> list[Action]:
        if msg.job_id in self._released:
            return []  # a late push for a job that is over (or an attempt replaced by a replay)
        actions: list[Action] = []
        for reduce_partition, frame in zip(msg.reduce_partitions, payloads, strict=True):
            actions += self._arrive((msg.job_id, msg.shuffle_id, reduce_partition), msg.map_partition, frame, now)
        return actions

    def blocks_ready(self, msg: BlocksReady, now: float) -> list[Action]:
        """Drizzle: a mapper's blocks were too large to push; fetch each reduce partition's."""
        if msg.job_id in self._released:
            return []
        return [
            ToPeer(msg.address, self._fetch((msg.job_id, msg.shuffle_id, r), [msg.map_partition], now))
            for r in msg.reduce_partitions
        ]

    def blocks(self, msg: Blocks, payloads: list[object], now: float) -> list[Action]:
        request = self._requests.pop(msg.request_id, None)
        if request is None:
            return []
        actions: list[Action] = []
        for map_partition, frame in zip(msg.map_partitions, payloads, strict=True):
            actions += self._arrive(request.inbox_key, map_partition, frame, now)
        return actions

    def request_failed(self, msg: ErrorReply) -> list[Action]:
        request = self._requests.pop(msg.request_id, None)
        if request is None:
            return []
        return self._fail_input(request.inbox_key, msg.reason)

    def next_release(self) -> float | None:
        """When the earliest held source task is due (monotonic), if any."""
        return self._held[0][0] if self._held else None

    def release_due(self, now: float) -> list[Action]:
        """Make the source tasks whose batch time has come runnable."""
        while self._held and self._held[0][0] <= now:
            _, _, local = heapq.heappop(self._held)
            if self.tasks.get(local.key) is local:  # not released meanwhile
                self.local.push(local)
        return self._next(now)

    def tick(self, now: float) -> list[Action]:
        actions: list[Action] = self.release_due(now) if self._held else []
        for request_id, request in list(self._requests.items()):
            if request.deadline <= now and self._requests.pop(request_id, None) is not None:
                actions += self._fail_input(request.inbox_key, f"timed out waiting for {request.what}")
        return actions + self._next(now) if actions else actions

    def _arrive(self, inbox_key: InboxKey, map_partition: int, block: object, now: float) -> list[Action]:
        if not self.inbox.add(inbox_key, map_partition, block):
            return []
        task_key = self._readers.get(inbox_key)
        if task_key is None:
            return []  # early: the reducer's launch has not arrived yet
        return self._maybe_runnable(self.tasks[task_key]) + self._next(now)

    def _maybe_runnable(self, local: LocalTask) -> list[Action]:
        read = local.spec.input
        assert isinstance(read, ShuffleRead)
        if len(local.inputs) < read.map_partitions:
            return []
        inbox_key = (local.task.job_id, read.shuffle_id, local.task.partition)
        self._readers.pop(inbox_key, None)
        self.inbox.discard(inbox_key)
        for request_id in [i for i, r in self._requests.items() if r.inbox_key == inbox_key]:
            del self._requests[request_id]
        state = local.spec.state
        if state is not None and local.group_id is not None:
            key = (state.state_id, local.task.partition)
            if self.keyed.applied(key, local.task.batch):  # applied meanwhile
                return self._already_applied(local, 0.0)
            if self.keyed.park_unless_due(key, local):
                return []  # batch b of a state waits for batch b-1
        self.local.push(local)
        return []

    def _state_advanced(self, local: LocalTask) -> None:
        """A stateful task is over: its state's next batch may run."""
        state = local.spec.state if local.spec is not None else None
        if state is None or local.group_id is None:
            return
        parked = self.keyed.advance((state.state_id, local.task.partition), local.task.batch)
        if parked is not None and self.tasks.get(parked.key) is parked:
            self.local.push(parked)

    def _fetch(self, inbox_key: InboxKey, map_partitions: list[int], now: float) -> FetchBlocks:
        job_id, shuffle_id, reduce_partition = inbox_key
        request_id = self._request(inbox_key, self._readers.get(inbox_key), "shuffle blocks", now + self.settings.shuffle_fetch_timeout)
        return FetchBlocks(
            request_id=request_id,
            job_id=job_id,
            shuffle_id=shuffle_id,
            reduce_partition=reduce_partition,
            map_partitions=map_partitions,
        )

    def _request(self, inbox_key: InboxKey, task_key: TaskKey | None, what: str, deadline: float) -> int:
        request_id = next(self._ids)
        self._requests[request_id] = _Request(inbox_key, task_key, what, deadline)
        return request_id

    def _fail_input(self, inbox_key: InboxKey, reason: str, error_type: str = "FetchFailed") -> list[Action]:
        task_key = self._readers.pop(inbox_key, None)
        if task_key is None:
            # The reducer's launch has not arrived yet: it fails the moment it does.
            self._failed_inputs[inbox_key] = (error_type, reason)
            self.inbox.discard(inbox_key)
            return []
        local = self.tasks.pop(task_key)
        self.inbox.discard(inbox_key)
        self.local.finished(local)
        return self._report_failure(local.task, local.group_id, Failure("fetch", error_type, reason))

    # --- serving our blocks ---------------------------------------------------------------------

    def serve_fetch(self, peer: bytes, msg: FetchBlocks) -> list[Action]:
        frames = []
        for part in msg.map_partitions:
            blocks = self.store.get((msg.job_id, msg.shuffle_id, part))
            if blocks is None or msg.reduce_partition >= len(blocks):
                reason = f"executor {self.executor_id} has no block for job {msg.job_id} shuffle {msg.shuffle_id} map {part}"
                return [Reply(peer, ErrorReply(reason=reason, request_id=msg.request_id))]
            frames.append(blocks[msg.reduce_partition])
        size = sum(len(f) for f in frames)
        if not fits(size, self.settings.max_message_bytes):
            reason = (
                f"shuffle blocks for reduce partition {msg.reduce_partition} are {size} bytes, more than a "
                f"message may carry (max_message_bytes={self.settings.max_message_bytes}, SQUALL_MAX_MESSAGE_BYTES); "
                "use more partitions, or make records smaller"
            )
            return [Reply(peer, ErrorReply(reason=reason, request_id=msg.request_id))]
        return [Reply(peer, Blocks(request_id=msg.request_id, map_partitions=list(msg.map_partitions)), tuple(frames))]

    # --- running --------------------------------------------------------------------------------

    def _next(self, now: float) -> list[Action]:
        if self.running is not None:
            return []
        actions: list[Action] = []
        while True:
            local = self.local.pop(self.barrier)
            if local is None:
                return actions
            state = local.spec.state
            if state is None or local.group_id is None or not self.keyed.applied((state.state_id, local.task.partition), local.task.batch):
                break
            actions += self._already_applied(local, now)  # its first attempt applied it meanwhile
        self.running = _Running(local, now)
        inputs = [local.inputs[p] for p in sorted(local.inputs)]
        return [*actions, Run(local.task, local.spec, inputs)]

    def task_done(self, task: TaskDescriptor, outcome: TaskOutput | Failure, now: float) -> list[Action]:
        running = self.running
        if running is None or running.local.key != task.key:
            return []  # we were reset meanwhile
        self.running = None
        local = running.local
        self.tasks.pop(task.key, None)
        self.local.finished(local)
        if local.group_id is not None and local.group_id in self.groups:
            self.groups[local.group_id].busy += now - running.started
            if isinstance(outcome, TaskOutput):
                self.groups[local.group_id].skipped += outcome.skipped
        actions: list[Action] = []
        state = local.spec.state
        if running.orphaned:
            return self._task_over(local, advance=False) + self._next(now)
        if state is not None and local.group_id is not None and isinstance(outcome, TaskOutput):
            # The state has applied this batch, whatever becomes of the job: keep what it made.
            key = (state.state_id, task.partition)
            if not task.replay_only:
                self.keyed.keep(key, task.batch, task.job_id, outcome)
            if task.checkpoint_state:
                actions.append(CheckpointState(state.state_id, task.partition, task.batch))
        if running.released:
            if local.group_id is None:  # BSP: the scheduler still counts the slot as taken
                actions.append(ToScheduler(self._finished(task, TaskOutput([], False), running.started, now)))
            return actions + self._task_over(local) + self._next(now)
        if isinstance(outcome, Failure):
            return actions + self._report_failure(task, local.group_id, outcome) + self._next(now)
        return actions + self._complete(local, outcome, running.started, now) + self._next(now)

    def _complete(self, local: LocalTask, outcome: TaskOutput, started: float, now: float) -> list[Action]:
        """A task's output is ready: send it on (a replay_only task's goes nowhere)."""
        task = local.task
        if outcome.is_result and not fits(outcome.size, self.settings.max_message_bytes):
            message = (
                f"result partition {task.partition} is {outcome.size} bytes, more than a message may carry "
                f"(max_message_bytes={self.settings.max_message_bytes}, SQUALL_MAX_MESSAGE_BYTES); "
                "reduce it on the cluster or use more partitions"
            )
            return self._report_failure(task, local.group_id, Failure("task", "ResultTooLarge", message))
        if task.replay_only:
            actions: list[Action] = []
        elif outcome.is_result:
            actions = [self._result(task, local, outcome, started, now)]
        else:
            actions = self._map_output(task, local, outcome, now)
            if local.group_id is None:
                actions.append(ToScheduler(self._finished(task, outcome, started, now)))
        return actions + self._task_over(local)

    def _already_applied(self, local: LocalTask, now: float) -> list[Action]:
        """A stateful task for a batch its partition has applied already: a replay after a failure
        elsewhere. It takes the output kept from then (a rebuild needs none)."""
        task = local.task
        self.tasks.pop(task.key, None)
        self.local.finished(local)
        inbox_key = (task.job_id, local.spec.input.shuffle_id, task.partition)  # type: ignore[union-attr]
        self._readers.pop(inbox_key, None)
        self.inbox.discard(inbox_key)
        if task.replay_only:
            return self._task_over(local)
        key = (local.spec.state.state_id, task.partition)  # type: ignore[union-attr]
        kept = self.keyed.take(key, task.batch, task.job_id)
        if kept is None:
            message = f"partition {task.partition} of keyed state {key[0]} is past batch {task.batch} and no longer holds its output"
            return self._report_failure(task, local.group_id, Failure("task", "StateAhead", message))
        return self._complete(local, kept, now, now)

    def _result(self, task: TaskDescriptor, local: LocalTask, outcome: TaskOutput, started: float, now: float) -> Action:
        if local.group_id is None:
            return ToScheduler(self._finished(task, outcome, started, now), tuple(outcome.blocks))
        msg = ResultPartition(executor_id=self.executor_id, job_id=task.job_id, partition=task.partition)
        return ToScheduler(msg, tuple(outcome.blocks))

    def _map_output(self, task: TaskDescriptor, local: LocalTask, outcome: TaskOutput, now: float) -> list[Action]:
        """Keep the blocks; push them to pre-scheduled reducers; tell shuffle_meta (off the critical path)."""
        output = local.spec.output
        assert isinstance(output, ShuffleWrite)
        blocks = outcome.blocks
        self.store[(task.job_id, output.shuffle_id, task.partition)] = blocks
        actions: list[Action] = []
        by_address: dict[str, list[int]] = {}
        for reduce_partition, address in enumerate(task.push_to):
            if address:  # "": a rebuild needs no block for that partition
                by_address.setdefault(address, []).append(reduce_partition)
        for address, parts in by_address.items():
            if address == self.data_address:
                for r in parts:
                    actions += self._arrive((task.job_id, output.shuffle_id, r), task.partition, blocks[r], now)
            elif self._pushable(sum(len(blocks[r]) for r in parts)):
                push = PushBlocks(job_id=task.job_id, shuffle_id=output.shuffle_id, map_partition=task.partition, reduce_partitions=parts)
                actions.append(ToPeer(address, push, tuple(blocks[r] for r in parts)))
            else:
                notice = BlocksReady(
                    job_id=task.job_id,
                    shuffle_id=output.shuffle_id,
                    map_partition=task.partition,
                    reduce_partitions=parts,
                    address=self.data_address,
                )
                actions.append(ToPeer(address, notice))
        if task.map_checkpoint and task.attempt == 0:
            actions.append(CheckpointMapOutput(task.map_checkpoint, blocks))
        location = MapLocation(task.partition, self.executor_id, self.data_address, [len(b) for b in blocks])
        self._unregistered.append(MapOutput(job_id=task.job_id, shuffle_id=output.shuffle_id, location=location))
        if local.group_id is None:  # BSP reducers look outputs up: register at once
            actions += self._register_outputs()
        return actions

    def _register_outputs(self) -> list[Action]:
        if not self._unregistered:
            return []
        outputs, self._unregistered = self._unregistered, []
        return [ToShuffleMeta(RegisterMapOutputs(outputs=outputs))]

    def _pushable(self, size: int) -> bool:
        """Small enough to travel with the notice; larger blocks are fetched by the reducer, and
        a block over the message limit is refused there with an error naming the limit."""
        return size <= self.settings.push_inline_max_bytes and fits(size, self.settings.max_message_bytes)

    # --- releasing ------------------------------------------------------------------------------

    def release_jobs(self, job_ids: list[str], now: float, superseded: bool = False) -> list[Action]:
        """Jobs are over: drop their blocks; cancel their tasks that have not started (a BSP task is
        reported so the scheduler frees its slot); a running one reports without keeping output.
        Outputs kept for stateful batches go too, unless the jobs are `superseded` by replays."""
        jobs = set(job_ids)
        for job_id in job_ids:
            self._released.add(job_id)
        if not superseded:
            self.keyed.release(jobs)
        self.store = {k: v for k, v in self.store.items() if k[0] not in jobs}
        self.inbox.release(jobs)
        self._readers = {k: v for k, v in self._readers.items() if k[0] not in jobs}
        self._requests = {i: r for i, r in self._requests.items() if r.inbox_key[0] not in jobs}
        self._failed_inputs = {k: v for k, v in self._failed_inputs.items() if k[0] not in jobs}
        self.local.remove_jobs(jobs)
        actions: list[Action] = []
        for key in [k for k in self.tasks if k[0] in jobs]:
            if self.running is not None and self.running.local.key == key:
                self.running.released = True
                continue
            local = self.tasks.pop(key)
            self.local.finished(local)
            if local.group_id is None:
                actions += self._report_failure(local.task, None, Failure("fetch", "Cancelled", f"job {key[0]} was released"))
            else:
                actions += self._task_over(local, advance=False)  # never ran: its batch is not applied
        return actions + self._next(now)

    def cancel_jobs(self, job_ids: list[str], now: float) -> list[Action]:
        """Their run was cancelled: everything of theirs goes as on a release (queued tasks, blocks
        here and in the inbox, look-ups and fetches), and so do source tasks held for their batch's
        time and map outputs not yet registered. The running task is asked to stop at its next safe
        point; when it returns, its output is dropped and the runner takes the next task."""
        jobs = set(job_ids)
        if any(local.key[0] in jobs for _, _, local in self._held):
            self._held = [held for held in self._held if held[2].key[0] not in jobs]
            heapq.heapify(self._held)
        self._unregistered = [o for o in self._unregistered if o.job_id not in jobs]
        running = self.running
        stop: list[Action] = [StopTask(running.local.key)] if running is not None and running.local.key[0] in jobs else []
        return stop + self.release_jobs(job_ids, now)

    # --- reporting ------------------------------------------------------------------------------

    def _task_over(self, local: LocalTask, advance: bool = True) -> list[Action]:
        """Group accounting: report the group once every task of it here is over."""
        if advance:
            self._state_advanced(local)
        if local.group_id is None:
            return []
        group = self.groups.get(local.group_id)
        if group is None:
            return []
        group.outstanding.discard(local.key)
        if group.outstanding:
            return []
        return self._group_over(local.group_id)

    def _group_over(self, group_id: int) -> list[Action]:
        group = self.groups.pop(group_id)
        done = GroupDone(group_id=group_id, executor_id=self.executor_id, tasks=group.tasks, busy=group.busy, skipped=group.skipped)
        return [ToScheduler(done), *self._register_outputs()]  # locations travel after the report

    def forget_states(self, state_ids: list[str]) -> None:
        """A stream ended: its keyed state here goes."""
        self.keyed.forget(set(state_ids))

    def _report_failure(self, task: TaskDescriptor, group_id: int | None, failure: Failure) -> list[Action]:
        failed = TaskFailed(
            executor_id=self.executor_id,
            job_id=task.job_id,
            stage_id=task.stage_id,
            partition=task.partition,
            attempt=task.attempt,
            kind=failure.kind,  # type: ignore[arg-type]
            error_type=failure.error_type,
            message=_bounded(failure.message, self.settings.max_message_bytes, "head"),
            traceback=_bounded(failure.traceback, self.settings.max_message_bytes, "ends"),
        )
        local = LocalTask(task, self.stages.get(task.stage_key), group_id)  # type: ignore[arg-type]
        return [ToScheduler(failed), *self._task_over(local)]

    def _finished(self, task: TaskDescriptor, outcome: TaskOutput, started: float, now: float) -> TaskFinished:
        return TaskFinished(
            executor_id=self.executor_id,
            job_id=task.job_id,
            stage_id=task.stage_id,
            partition=task.partition,
            attempt=task.attempt,
            has_result=outcome.is_result,
            output_bytes=outcome.size,
            elapsed=max(0.0, now - started),
            skipped=outcome.skipped,
        )

