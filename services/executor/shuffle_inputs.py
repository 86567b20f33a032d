"""Gathering a reducer's shuffle inputs: blocks pushed to us, looked up (BSP) and fetched.

Each reducer waiting for input is a reader of one inbox key (job, shuffle, reduce partition) per
shuffle it reads (a cogroup's task reads several, and runs once all are complete); the blocks
land in the inbox, possibly before the reducer's own launch (a mapper elsewhere can be faster
than our copy of the group). Look-ups and fetches are requests with deadlines, so a dead
peer fails a reducer, never hangs it; an input failing before its reducer arrived fails the
reducer the moment it does. Pure bookkeeping: each step returns what it found out (`Arrivals`),
and the core decides what becomes of the tasks.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from squall.common.core import ToShuffleMeta
from squall.common.protocol import Blocks, BlocksReady, ErrorReply, FetchBlocks, LookupMapOutputs, MapOutputs, PushBlocks
from squall.common.recent_ids import RecentIds
from squall.common.settings import Settings
from squall.services.executor.inbox import InboxKey, ShuffleInbox
from squall.services.executor.instructions import ToPeer
from squall.services.executor.task_states import TaskKey

BlockKey = tuple[str, int, int]  # (job_id, shuffle_id, map_partition)


@dataclass
class Arrivals:
    """What a step found out: messages to send, readers whose inputs are all in, readers whose
    input failed (task, error type, reason), and (persisted_reads.py) tasks whose persisted block
    is not where the scheduler said (task, reason)."""

    sends: list[ToPeer | ToShuffleMeta] = field(default_factory=list)
    complete: list[TaskKey] = field(default_factory=list)
    failed: list[tuple[TaskKey, str, str]] = field(default_factory=list)
    lost: list[tuple[TaskKey, str]] = field(default_factory=list)

    def __iadd__(self, other: Arrivals) -> Arrivals:
        self.sends += other.sends
        self.complete += other.complete
        self.failed += other.failed
        self.lost += other.lost
        return self


@dataclass
class _Reader:
    task_key: TaskKey
    expected: int  # map partitions to wait for
    blocks: dict[int, object]  # map partition -> block (the inbox's dict: it keeps filling up)


@dataclass
class _Request:
    """An outstanding look-up (BSP) or fetch, with the reducer input it serves."""

    inbox_key: InboxKey
    what: str
    deadline: float
    lookup: LookupMapOutputs | None = None  # kept, to ask a restarted shuffle_meta again


class ShuffleInputs:
    def __init__(self, settings: Settings, request_ids: Callable[[], int] | None = None) -> None:
        self.settings = settings
        self.inbox = ShuffleInbox()
        self.readers: dict[InboxKey, _Reader] = {}
        self._requests: dict[int, _Request] = {}
        self._failed: dict[InboxKey, tuple[str, str]] = {}  # failed before their reducer arrived
        self._released = RecentIds()  # jobs over: their late blocks are dropped
        self._request_ids = request_ids or itertools.count(1).__next__  # the executor's, shared with persisted_reads.py

    def tracked(self) -> dict[str, int]:
        return {
            "readers": len(self.readers),
            "requests": len(self._requests),
            "failed_inputs": len(self._failed),
            "released": len(self._released),
            **{f"inbox.{k}": v for k, v in self.inbox.tracked().items()},
        }

    # --- readers --------------------------------------------------------------------------------

    def read(self, inbox_key: InboxKey, task_key: TaskKey, expected: int) -> tuple[dict[int, object], Arrivals]:
        """A reducer arrived: the blocks it has so far (the dict keeps filling), and its failure
        if an input of it failed already."""
        blocks = self.inbox.claim(inbox_key)
        self.readers[inbox_key] = _Reader(task_key, expected, blocks)
        out = Arrivals()
        if inbox_key in self._failed:
            error_type, reason = self._failed.pop(inbox_key)
            self._fail(inbox_key, reason, error_type, out)
        return blocks, out

    def take_if_complete(self, inbox_keys: list[InboxKey]) -> bool:
        """True, and the readers are done with, when all blocks of all of a task's inputs are in."""
        for inbox_key in inbox_keys:
            reader = self.readers.get(inbox_key)
            if reader is None or len(reader.blocks) < reader.expected:
                return False
        self.drop_readers(inbox_keys)
        return True

    def drop_readers(self, inbox_keys: list[InboxKey]) -> None:
        """A task's inputs are no longer wanted (complete, failed, or already applied)."""
        for inbox_key in inbox_keys:
            self.readers.pop(inbox_key, None)
            self.inbox.discard(inbox_key)
        if self._requests:
            keys = set(inbox_keys)
            for request_id in [i for i, r in self._requests.items() if r.inbox_key in keys]:
                del self._requests[request_id]

    def look_up(self, inbox_key: InboxKey, expected: int, now: float) -> ToShuffleMeta:
        """BSP: ask shuffle_meta where a reducer's inputs live."""
        job_id, shuffle_id, _ = inbox_key
        timeout = self.settings.shuffle_lookup_timeout
        request_id = self._request(inbox_key, "map output locations", now + timeout)
        lookup = LookupMapOutputs(request_id=request_id, job_id=job_id, shuffle_id=shuffle_id, expected=expected, timeout=timeout)
        self._requests[request_id].lookup = lookup
        return ToShuffleMeta(lookup)

    def pending_lookups(self) -> list[ToShuffleMeta]:
        """The look-ups not answered yet (to ask a restarted shuffle_meta again)."""
        return [ToShuffleMeta(r.lookup) for r in self._requests.values() if r.lookup is not None]

    # --- arrivals -------------------------------------------------------------------------------

    def located(self, msg: MapOutputs, executor_id: str, store: dict[BlockKey, list[bytes]], now: float) -> Arrivals:
        """BSP: where a reducer's inputs live. Local ones are taken, remote ones fetched."""
        out = Arrivals()
        request = self._requests.pop(msg.request_id, None)
        if request is None:
            return out
        job_id, shuffle_id, reduce_partition = request.inbox_key
        by_address: dict[str, list[int]] = {}
        for loc in msg.locations:
            if loc.executor_id == executor_id:
                blocks = store.get((job_id, shuffle_id, loc.map_partition))
                if blocks is None:
                    out.sends.clear()
                    reason = f"map output {loc.map_partition} is not in the local block store"
                    self._fail(request.inbox_key, reason, "FetchFailed", out)
                    return out
                self.arrive(request.inbox_key, loc.map_partition, blocks[reduce_partition], out)
            else:
                by_address.setdefault(loc.address, []).append(loc.map_partition)
        for address, parts in sorted(by_address.items()):
            out.sends.append(ToPeer(address, self._fetch(request.inbox_key, parts, now)))
        return out

    def pushed(self, msg: PushBlocks, payloads: list[object]) -> Arrivals:
        out = Arrivals()
        if msg.job_id in self._released:
            return out  # a late push for a job that is over (or an attempt replaced by a replay)
        for reduce_partition, frame in zip(msg.reduce_partitions, payloads, strict=True):
            self.arrive((msg.job_id, msg.shuffle_id, reduce_partition), msg.map_partition, frame, out)
        return out

    def blocks_ready(self, msg: BlocksReady, now: float) -> Arrivals:
        """Drizzle: a mapper's blocks were too large to push; fetch each reduce partition's."""
        out = Arrivals()
        if msg.job_id not in self._released:
            for r in msg.reduce_partitions:
                out.sends.append(ToPeer(msg.address, self._fetch((msg.job_id, msg.shuffle_id, r), [msg.map_partition], now)))
        return out

    def fetched(self, msg: Blocks, payloads: list[object]) -> Arrivals:
        out = Arrivals()
        request = self._requests.pop(msg.request_id, None)
        if request is not None:
            for map_partition, frame in zip(msg.map_partitions, payloads, strict=True):
                self.arrive(request.inbox_key, map_partition, frame, out)
        return out

    def refused(self, msg: ErrorReply) -> Arrivals:
        out = Arrivals()
        request = self._requests.pop(msg.request_id, None)
        if request is not None:
            self._fail(request.inbox_key, msg.reason, "FetchFailed", out)
        return out

    def expire(self, now: float) -> Arrivals:
        out = Arrivals()
        for request_id, request in list(self._requests.items()):
            if request.deadline <= now and self._requests.pop(request_id, None) is not None:
                self._fail(request.inbox_key, f"timed out waiting for {request.what}", "FetchFailed", out)
        return out

    def arrive(self, inbox_key: InboxKey, map_partition: int, block: object, out: Arrivals) -> None:
        if not self.inbox.add(inbox_key, map_partition, block):
            return
        reader = self.readers.get(inbox_key)
        if reader is not None and len(reader.blocks) >= reader.expected:  # else early, or more to come
            out.complete.append(reader.task_key)

    # --- releasing ------------------------------------------------------------------------------

    def release(self, jobs: set[str]) -> None:
        for job_id in jobs:
            self._released.add(job_id)
        self.inbox.release(jobs)
        self.readers = {k: v for k, v in self.readers.items() if k[0] not in jobs}
        self._requests = {i: r for i, r in self._requests.items() if r.inbox_key[0] not in jobs}
        self._failed = {k: v for k, v in self._failed.items() if k[0] not in jobs}

    # --- requests -------------------------------------------------------------------------------

    def _fetch(self, inbox_key: InboxKey, map_partitions: list[int], now: float) -> FetchBlocks:
        job_id, shuffle_id, reduce_partition = inbox_key
        request_id = self._request(inbox_key, "shuffle blocks", now + self.settings.shuffle_fetch_timeout)
        return FetchBlocks(request_id=request_id, job_id=job_id, shuffle_id=shuffle_id, reduce_partition=reduce_partition,
                           map_partitions=map_partitions)

    def _request(self, inbox_key: InboxKey, what: str, deadline: float) -> int:
        request_id = self._request_ids()
        self._requests[request_id] = _Request(inbox_key, what, deadline)
        return request_id

    def _fail(self, inbox_key: InboxKey, reason: str, error_type: str, out: Arrivals) -> None:
        reader = self.readers.pop(inbox_key, None)
        self.inbox.discard(inbox_key)
        if reader is None:
            self._failed[inbox_key] = (error_type, reason)  # the reducer's launch has not arrived yet
        else:
            out.failed.append((reader.task_key, error_type, reason))
