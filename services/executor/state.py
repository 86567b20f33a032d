"""The executor's pure core: events in, actions out, no sockets and no user code.

A launched task whose stage reads a shuffle first looks up where the map outputs live
(shuffle_meta), then takes local blocks from the block store and fetches the others from their
executors, one request per peer; when every block is in, the task is handed to the runner. A
finished map task's blocks go into the block store, its location to shuffle_meta and its
completion to the scheduler. Look-ups and fetches have deadlines: a dead peer fails the task
with a fetch error instead of hanging it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from common.plan import ShuffleRead, StageSpec
from common.protocol import (
    Blocks,
    ErrorReply,
    FetchBlocks,
    LaunchTasks,
    LookupMapOutputs,
    MapLocation,
    MapOutputs,
    Message,
    RegisterMapOutput,
    TaskDescriptor,
    TaskFailed,
    TaskFinished,
    fits,
)
from common.settings import Settings
from services.executor.tasks import TaskOutput

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


Action = ToScheduler | ToShuffleMeta | ToPeer | Reply | Run


@dataclass(frozen=True)
class Failure:
    kind: str  # "task" | "fetch" | "code"
    error_type: str
    message: str
    traceback: str = ""


# --- task bookkeeping ----------------------------------------------------------------------------


@dataclass
class _PendingTask:
    task: TaskDescriptor
    spec: StageSpec
    deadline: float = 0.0
    phase: str = "map output locations"
    blocks: dict[int, object] = field(default_factory=dict)
    requests: set[int] = field(default_factory=set)


class ExecutorState:
    def __init__(self, executor_id: str, data_address: str, settings: Settings) -> None:
        self.executor_id = executor_id
        self.data_address = data_address
        self.settings = settings
        self.code: dict[str, StageSpec] = {}
        self.store: dict[BlockKey, list[bytes]] = {}
        self.waiting: dict[TaskKey, _PendingTask] = {}  # looking up or fetching inputs
        self.running: dict[TaskKey, TaskDescriptor] = {}  # handed to the runner
        self._requests: dict[int, TaskKey] = {}
        self._ids = itertools.count(1)
        self._started: dict[TaskKey, float] = {}
        self._released_running: set[TaskKey] = set()  # running when their job was released

    def reset(self) -> None:
        """The scheduler forgot us: drop everything we hold; our work was written off."""
        self.code.clear()
        self.store.clear()
        self.waiting.clear()
        self.running.clear()
        self._requests.clear()
        self._started.clear()
        self._released_running.clear()

    # --- from the scheduler ---------------------------------------------------------------------

    def launch(self, msg: LaunchTasks, now: float) -> list[Action]:
        self.code.update(msg.code)
        actions: list[Action] = []
        for task in msg.tasks:
            key = (task.job_id, task.stage_id, task.partition)
            spec = self.code.get(task.stage_key)
            if spec is None:
                actions += self._fail(task, Failure("code", "MissingCode", f"stage code {task.stage_key} was never sent"))
                continue
            self._started[key] = now
            if isinstance(spec.input, ShuffleRead):
                pending = _PendingTask(task, spec, deadline=now + self.settings.shuffle_lookup_timeout)
                request_id = self._track(pending, key)
                self.waiting[key] = pending
                actions.append(
                    ToShuffleMeta(
                        LookupMapOutputs(
                            request_id=request_id,
                            job_id=task.job_id,
                            shuffle_id=spec.input.shuffle_id,
                            expected=spec.input.map_partitions,
                            timeout=self.settings.shuffle_lookup_timeout,
                        )
                    )
                )
            else:
                self.running[key] = task
                actions.append(Run(task, spec, []))
        return actions

    def release_job(self, job_id: str) -> list[Action]:
        """Drop the job's blocks; its tasks still waiting for input are cancelled (and reported,
        so the scheduler frees their slots); its running tasks report without keeping output."""
        for key in [k for k in self.store if k[0] == job_id]:
            del self.store[key]
        actions: list[Action] = []
        for key in [k for k in self.waiting if k[0] == job_id]:
            pending = self.waiting[key]
            actions += self._fail_pending(pending, f"job {job_id} was released", error_type="Cancelled")
        self._released_running.update(k for k in self.running if k[0] == job_id)
        return actions

    # --- shuffle input --------------------------------------------------------------------------

    def map_outputs(self, msg: MapOutputs, now: float) -> list[Action]:
        pending = self._pending_for(msg.request_id)
        if pending is None:
            return []
        read = pending.spec.input
        assert isinstance(read, ShuffleRead)
        task = pending.task
        by_address: dict[str, list[int]] = {}
        for loc in msg.locations:
            if loc.executor_id == self.executor_id:
                blocks = self.store.get((task.job_id, read.shuffle_id, loc.map_partition))
                if blocks is None:
                    return self._fail_pending(pending, f"map output {loc.map_partition} is not in the local block store")
                pending.blocks[loc.map_partition] = blocks[task.partition]
            else:
                by_address.setdefault(loc.address, []).append(loc.map_partition)
        pending.deadline = now + self.settings.shuffle_fetch_timeout
        pending.phase = "shuffle blocks"
        actions: list[Action] = []
        for address, parts in sorted(by_address.items()):
            request_id = self._track(pending, (task.job_id, task.stage_id, task.partition))
            fetch = FetchBlocks(
                request_id=request_id,
                job_id=task.job_id,
                shuffle_id=read.shuffle_id,
                reduce_partition=task.partition,
                map_partitions=parts,
            )
            actions.append(ToPeer(address, fetch))
        return actions + self._maybe_ready(pending)

    def blocks(self, msg: Blocks, payloads: list[object]) -> list[Action]:
        pending = self._pending_for(msg.request_id)
        if pending is None:
            return []
        for part, frame in zip(msg.map_partitions, payloads, strict=True):
            pending.blocks[part] = frame
        return self._maybe_ready(pending)

    def request_failed(self, msg: ErrorReply) -> list[Action]:
        pending = self._pending_for(msg.request_id)
        if pending is None:
            return []
        return self._fail_pending(pending, msg.reason)

    def tick(self, now: float) -> list[Action]:
        actions: list[Action] = []
        for pending in [p for p in self.waiting.values() if p.deadline <= now]:
            actions += self._fail_pending(pending, f"timed out waiting for {pending.phase}")
        return actions

    # --- from peers -----------------------------------------------------------------------------

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
                f"message may carry (max_message_bytes={self.settings.max_message_bytes}); use more partitions"
            )
            return [Reply(peer, ErrorReply(reason=reason, request_id=msg.request_id))]
        return [Reply(peer, Blocks(request_id=msg.request_id, map_partitions=list(msg.map_partitions)), tuple(frames))]

    # --- from the runner ------------------------------------------------------------------------

    def task_done(self, task: TaskDescriptor, outcome: TaskOutput | Failure, now: float) -> list[Action]:
        key = (task.job_id, task.stage_id, task.partition)
        if self.running.pop(key, None) is None:
            return []  # we were reset meanwhile
        started = self._started.pop(key, now)
        if key in self._released_running:
            # The job ended while this task ran: keep nothing, but free the scheduler's slot.
            self._released_running.discard(key)
            outcome = TaskOutput(blocks=[], is_result=False)
            return [ToScheduler(self._finished(task, outcome, started, now))]
        if isinstance(outcome, Failure):
            return self._fail(task, outcome)
        if outcome.is_result and not fits(outcome.size, self.settings.max_message_bytes):
            message = (
                f"result partition {task.partition} is {outcome.size} bytes, more than a message may carry "
                f"(max_message_bytes={self.settings.max_message_bytes}, SQUALL_MAX_MESSAGE_BYTES); "
                "reduce it on the cluster or use more partitions"
            )
            return self._fail(task, Failure("task", "ResultTooLarge", message))
        spec = self.code[task.stage_key]
        actions: list[Action] = []
        if not outcome.is_result:
            shuffle_id = spec.output.shuffle_id  # type: ignore[union-attr]
            self.store[(task.job_id, shuffle_id, task.partition)] = outcome.blocks
            location = MapLocation(
                map_partition=task.partition,
                executor_id=self.executor_id,
                address=self.data_address,
                sizes=[len(b) for b in outcome.blocks],
            )
            actions.append(ToShuffleMeta(RegisterMapOutput(job_id=task.job_id, shuffle_id=shuffle_id, location=location)))
        finished = self._finished(task, outcome, started, now)
        actions.append(ToScheduler(finished, tuple(outcome.blocks) if outcome.is_result else ()))
        return actions

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
        )

    # --- helpers --------------------------------------------------------------------------------

    def _track(self, pending: _PendingTask, key: TaskKey) -> int:
        request_id = next(self._ids)
        pending.requests.add(request_id)
        self._requests[request_id] = key
        return request_id

    def _pending_for(self, request_id: int) -> _PendingTask | None:
        key = self._requests.pop(request_id, None)
        if key is None:
            return None
        pending = self.waiting.get(key)
        if pending is not None:
            pending.requests.discard(request_id)
        return pending

    def _maybe_ready(self, pending: _PendingTask) -> list[Action]:
        read = pending.spec.input
        assert isinstance(read, ShuffleRead)
        if len(pending.blocks) < read.map_partitions:
            return []
        task = pending.task
        key = (task.job_id, task.stage_id, task.partition)
        del self.waiting[key]
        self.running[key] = task
        inputs = [pending.blocks[p] for p in sorted(pending.blocks)]
        return [Run(task, pending.spec, inputs)]

    def _fail_pending(self, pending: _PendingTask, reason: str, error_type: str = "FetchFailed") -> list[Action]:
        task = pending.task
        key = (task.job_id, task.stage_id, task.partition)
        self.waiting.pop(key, None)
        self._started.pop(key, None)
        for request_id in pending.requests:
            self._requests.pop(request_id, None)
        return self._fail(task, Failure("fetch", error_type, reason))

    def _fail(self, task: TaskDescriptor, failure: Failure) -> list[Action]:
        return [
            ToScheduler(
                TaskFailed(
                    executor_id=self.executor_id,
                    job_id=task.job_id,
                    stage_id=task.stage_id,
                    partition=task.partition,
                    attempt=task.attempt,
                    kind=failure.kind,  # type: ignore[arg-type]
                    error_type=failure.error_type,
                    message=failure.message,
                    traceback=failure.traceback,
                )
            )
        ]
