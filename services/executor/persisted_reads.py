"""Reading persisted blocks: a task's, from this executor's store or fetched from their holder, and
peers' fetches of the blocks held here.

The scheduler tells a task which persisted partitions it reads as blocks, and where each is held
(TaskDescriptor.persisted): at this executor's own data address, the block is taken from the
store at once; elsewhere it is fetched (FetchPersisted), with the shuffle fetch deadline. The
task runs once every block it reads is in (and its shuffle inputs, shuffle_inputs.py). A block
that is not where the scheduler said (evicted since, its holder gone, no answer in time) fails
the task with kind "block": the scheduler plans the job again, from what is held then. Pure
bookkeeping, like shuffle_inputs.py: each step returns what it found out (`Arrivals`, whose
`lost` lists such tasks).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from squall.common.core import Send
from squall.common.plan import PersistedInput
from squall.common.protocol import ErrorReply, FetchPersisted, PersistedData, fits
from squall.common.settings import Settings
from squall.services.executor.instructions import ToPeer
from squall.services.executor.persisted import PersistedStore
from squall.services.executor.shuffle_inputs import Arrivals
from squall.services.executor.task_states import TaskKey

Blocks = dict[str, object]  # dataset id -> the block of it a task reads


@dataclass
class _Fetch:
    task_key: TaskKey
    dataset_id: str
    partition: int
    holder: str  # its data address
    deadline: float


class PersistedReads:
    def __init__(self, settings: Settings, store: PersistedStore, own_address: str, request_ids: Callable[[], int]) -> None:
        self.settings = settings
        self.store = store
        self.own_address = own_address
        self._request_ids = request_ids  # shared with the shuffle inputs': an ErrorReply names one of either
        self.waiting: dict[TaskKey, Blocks] = {}  # tasks with a fetch outstanding -> their blocks (the task's dict: it fills up)
        self._fetches: dict[int, _Fetch] = {}  # by request id

    def tracked(self) -> dict[str, int]:
        return {"persisted_waiting": len(self.waiting), "persisted_fetches": len(self._fetches)}

    def validate(self) -> None:
        outstanding = {f.task_key for f in self._fetches.values()}
        assert outstanding == self.waiting.keys(), f"tasks waiting for blocks {set(self.waiting)}, fetches for {outstanding}"

    # --- a task's blocks ------------------------------------------------------------------------

    def gather(self, task_key: TaskKey, reads: list[tuple[PersistedInput, int]], holders: dict[str, str], blocks: Blocks,
               now: float) -> Arrivals:
        """Put the blocks of `reads` held here into `blocks`, and fetch the others into it (the
        task waits until they are in). A block missing here fails the task at once (`lost`), and
        nothing is fetched."""
        remote: list[tuple[str, int, str]] = []
        out = Arrivals()
        for read, partition in reads:
            dataset_id, holder = read.dataset_id, holders[read.dataset_id]
            if holder != self.own_address:
                remote.append((dataset_id, partition, holder))
                continue
            block = self.store.get(dataset_id, partition)
            if block is None:
                out.lost.append((task_key, f"partition {partition} of persisted dataset {dataset_id} is no longer held "
                                           f"by this executor ({holder}): dropped to make room, or unpersisted"))
                return out
            blocks[dataset_id] = block
        if remote:
            self.waiting[task_key] = blocks
            deadline = now + self.settings.shuffle_fetch_timeout
            for dataset_id, partition, holder in remote:
                request_id = self._request_ids()
                self._fetches[request_id] = _Fetch(task_key, dataset_id, partition, holder, deadline)
                out.sends.append(ToPeer(holder, FetchPersisted(request_id=request_id, dataset_id=dataset_id, partition=partition)))
        return out

    def waits(self, task_key: TaskKey) -> bool:
        """Whether a block the task reads is still on its way."""
        return task_key in self.waiting

    def answered(self, msg: PersistedData, payloads: list[object]) -> Arrivals:
        out = Arrivals()
        fetch = self._fetches.pop(msg.request_id, None)
        if fetch is not None:
            self.waiting[fetch.task_key][fetch.dataset_id] = payloads[0]
            if not self._outstanding(fetch.task_key):
                del self.waiting[fetch.task_key]
                out.complete.append(fetch.task_key)
        return out

    def refused(self, msg: ErrorReply) -> Arrivals | None:
        """The holder does not have the block (None: the reply is about no fetch of ours)."""
        fetch = self._fetches.get(msg.request_id)
        if fetch is None:
            return None
        out = Arrivals()
        self._lose(fetch, f"it was asked of {fetch.holder}, which answered: {msg.reason}", out)
        return out

    def expire(self, now: float) -> Arrivals:
        out = Arrivals()
        for fetch in [f for f in self._fetches.values() if f.deadline <= now]:
            if fetch.task_key in self.waiting:  # not lost already with another of its blocks
                self._lose(fetch, f"{fetch.holder} did not send it within {self.settings.shuffle_fetch_timeout:g}s", out)
        return out

    def drop(self, task_key: TaskKey) -> None:
        """The task no longer waits (it failed otherwise, or its job is over)."""
        if self.waiting.pop(task_key, None) is not None:
            self._fetches = {i: f for i, f in self._fetches.items() if f.task_key != task_key}

    def release(self, jobs: set[str]) -> None:
        for task_key in [k for k in self.waiting if k[0] in jobs]:
            self.drop(task_key)

    def _outstanding(self, task_key: TaskKey) -> bool:
        return any(f.task_key == task_key for f in self._fetches.values())

    def _lose(self, fetch: _Fetch, why: str, out: Arrivals) -> None:
        self.drop(fetch.task_key)
        out.lost.append((fetch.task_key, f"partition {fetch.partition} of persisted dataset {fetch.dataset_id} could not be "
                                         f"read: {why}"))

    # --- peers' fetches -------------------------------------------------------------------------

    def serve(self, peer: bytes, msg: FetchPersisted) -> Send:
        block = self.store.get(msg.dataset_id, msg.partition)
        if block is None:
            reason = f"partition {msg.partition} of persisted dataset {msg.dataset_id} is not held at {self.own_address}"
            return Send(peer, ErrorReply(reason=reason, request_id=msg.request_id))
        if not fits(len(block), self.settings.max_message_bytes):
            reason = (f"partition {msg.partition} of persisted dataset {msg.dataset_id} is {len(block)} bytes, more than a "
                      f"message may carry (max_message_bytes={self.settings.max_message_bytes}, SQUALL_MAX_MESSAGE_BYTES)")
            return Send(peer, ErrorReply(reason=reason, request_id=msg.request_id))
        return Send(peer, PersistedData(request_id=msg.request_id), (block,))
