"""Where every map output lives: pure logic, no sockets.

Executors register each map output (job, shuffle, map partition -> executor, address, sizes).
Reducers look up all outputs of a shuffle; a look-up that arrives before every expected output
is registered waits (the registration travels off the critical path and may be overtaken) and is
answered as soon as the set is complete, or with an error when its deadline passes.

It is also the cluster's block directory (block_directory.py): which executors hold which
partitions of persisted datasets. Look-ups there are answered at once with what is known; the
server hands them over after the other messages read with them (server.py says why).

One entry: `handle(event)` (a Received message, or a Tick that fails look-ups past their
deadline), through one dispatch table; its instructions are Sends to the asking peer.
`validate()` checks the tables agree (tests call it after every event).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from squall.common.core import Event, Received, Send, Tick
from squall.common.protocol import (
    DroppedPersisted,
    ErrorReply,
    ForgetExecutor,
    ForgetJob,
    ForgetPersisted,
    GetTracked,
    LookupMapOutputs,
    LookupPersisted,
    MapLocation,
    MapOutputs,
    Message,
    PersistedLocations,
    Ping,
    Pong,
    RegisterMapOutputs,
    RegisterPersisted,
)
from squall.common.recent_ids import RecentIds
from squall.common.tracked import tracked_reply
from squall.services.shuffle_meta.block_directory import BlockDirectory

ShuffleKey = tuple[str, int]


@dataclass
class _Waiter:
    peer: bytes
    request: LookupMapOutputs
    deadline: float


class ShuffleMetaState:
    def __init__(self) -> None:
        self.outputs: dict[ShuffleKey, dict[int, MapLocation]] = {}
        self.waiters: dict[ShuffleKey, list[_Waiter]] = {}
        # Jobs already over: a registration that overtook nothing but arrives late is ignored.
        self.forgotten = RecentIds()
        self.directory = BlockDirectory()
        # Over the service's life, for the metrics endpoint (metrics.py).
        self.outputs_registered = 0  # map outputs executors registered (each one once per registration)
        self.lookups = 0  # look-ups of a shuffle's map outputs by reducers
        self._handlers: dict[type, Callable[[Any], list[Send]]] = {
            RegisterMapOutputs: self._on_register,
            LookupMapOutputs: self._on_lookup,
            ForgetJob: self._on_forget_job,
            ForgetExecutor: self._on_forget_executor,
            RegisterPersisted: self._on_register_persisted,
            DroppedPersisted: self._on_dropped_persisted,
            LookupPersisted: self._on_lookup_persisted,
            ForgetPersisted: self._on_forget_persisted,
            Ping: self._on_ping,
            GetTracked: self._on_get_tracked,
            Tick: self._on_tick,
        }

    def handle(self, event: Event) -> list[Send]:
        key = type(event.msg) if type(event) is Received else type(event)
        return self._handlers[key](event)

    def handles(self) -> list[type[Message]]:
        """The message types handle() takes, wrapped in Received: all it handles but Tick."""
        return [t for t in self._handlers if t is not Tick]

    def validate(self) -> None:
        """Check the tables agree (AssertionError naming what does not)."""
        for (job_id, shuffle_id), locations in self.outputs.items():
            assert job_id not in self.forgotten, f"outputs of job {job_id}, which is over, are kept"
            assert all(p == loc.map_partition for p, loc in locations.items()), f"outputs of {job_id}/{shuffle_id} filed under other partitions"
        for (job_id, shuffle_id), waiting in self.waiters.items():
            assert waiting, f"an empty list of waiters for {job_id}/{shuffle_id}"
            have = len(self.outputs.get((job_id, shuffle_id), {}))
            assert all(w.request.expected > have for w in waiting), f"a look-up of {job_id}/{shuffle_id} that could be answered waits"
        self.directory.validate()

    def _on_register(self, ev: Received) -> list[Send]:
        outputs = cast(RegisterMapOutputs, ev.msg).outputs
        self.outputs_registered += len(outputs)
        return [r for o in outputs for r in self._register(o.job_id, o.shuffle_id, o.location)]

    def _on_lookup(self, ev: Received) -> list[Send]:
        self.lookups += 1
        return self._lookup(cast(bytes, ev.peer), cast(LookupMapOutputs, ev.msg), ev.now)

    def _on_forget_job(self, ev: Received) -> list[Send]:
        return [r for job_id in cast(ForgetJob, ev.msg).job_ids for r in self._forget_job(job_id)]

    def _on_forget_executor(self, ev: Received) -> list[Send]:
        executor_id = cast(ForgetExecutor, ev.msg).executor_id
        self._forget_executor(executor_id)
        self.directory.forget_executor(executor_id)
        return []

    def _on_register_persisted(self, ev: Received) -> list[Send]:
        msg = cast(RegisterPersisted, ev.msg)
        self.directory.register(msg.executor_id, msg.blocks)
        return []

    def _on_dropped_persisted(self, ev: Received) -> list[Send]:
        msg = cast(DroppedPersisted, ev.msg)
        self.directory.drop(msg.executor_id, [(b.dataset_id, b.partition) for b in msg.blocks])
        return []

    def _on_lookup_persisted(self, ev: Received) -> list[Send]:
        msg = cast(LookupPersisted, ev.msg)
        holders, partitions = self.directory.locations(msg.dataset_ids)
        return [Send(cast(bytes, ev.peer), PersistedLocations(request_id=msg.request_id, holders=holders, partitions=partitions))]

    def _on_forget_persisted(self, ev: Received) -> list[Send]:
        self.directory.forget(cast(ForgetPersisted, ev.msg).dataset_ids)
        return []

    def _on_ping(self, ev: Received) -> list[Send]:
        return [Send(cast(bytes, ev.peer), Pong(nonce=cast(Ping, ev.msg).nonce, service="shuffle_meta"))]

    def _on_get_tracked(self, ev: Received) -> list[Send]:
        return [Send(cast(bytes, ev.peer), tracked_reply("shuffle_meta", self.tracked(), cast(GetTracked, ev.msg).heap))]

    def _on_tick(self, ev: Tick) -> list[Send]:
        return self._tick(ev.now)

    def tracked(self) -> dict[str, int]:
        """Entries in each table (GetTracked): all bounded while jobs come and go."""
        return {"outputs": len(self.outputs), "waiters": len(self.waiters), "forgotten": len(self.forgotten),
                **self.directory.tracked()}

    def _register(self, job_id: str, shuffle_id: int, location: MapLocation) -> list[Send]:
        if job_id in self.forgotten:
            return []
        key = (job_id, shuffle_id)
        self.outputs.setdefault(key, {})[location.map_partition] = location
        return self._answer_complete(key)

    def _lookup(self, peer: bytes, request: LookupMapOutputs, now: float) -> list[Send]:
        key = (request.job_id, request.shuffle_id)
        known = self.outputs.get(key, {})
        if len(known) >= request.expected:
            return [Send(peer, self._outputs_reply(request, known))]
        waiter = _Waiter(peer, request, now + request.timeout)
        self.waiters.setdefault(key, []).append(waiter)
        return []

    def _tick(self, now: float) -> list[Send]:
        """Fail look-ups whose deadline has passed."""
        replies: list[Send] = []
        for key in list(self.waiters):
            keep = []
            for w in self.waiters[key]:
                if w.deadline <= now:
                    have = len(self.outputs.get(key, {}))
                    reason = (
                        f"map outputs of job {key[0]} shuffle {key[1]} incomplete after "
                        f"{w.request.timeout:g}s: {have} of {w.request.expected} registered"
                    )
                    replies.append(Send(w.peer, ErrorReply(reason=reason, request_id=w.request.request_id)))
                else:
                    keep.append(w)
            if keep:
                self.waiters[key] = keep
            else:
                del self.waiters[key]
        return replies

    def _forget_job(self, job_id: str) -> list[Send]:
        self.forgotten.add(job_id)
        replies: list[Send] = []
        for key in [k for k in self.outputs if k[0] == job_id]:
            del self.outputs[key]
        for key in [k for k in self.waiters if k[0] == job_id]:
            for w in self.waiters.pop(key):
                reason = f"job {job_id} is over"
                replies.append(Send(w.peer, ErrorReply(reason=reason, request_id=w.request.request_id)))
        return replies

    def _forget_executor(self, executor_id: str) -> None:
        for locations in self.outputs.values():
            for part in [p for p, loc in locations.items() if loc.executor_id == executor_id]:
                del locations[part]

    def _answer_complete(self, key: ShuffleKey) -> list[Send]:
        known = self.outputs.get(key, {})
        waiting = self.waiters.get(key)
        if not waiting:
            return []
        ready = [w for w in waiting if len(known) >= w.request.expected]
        if not ready:
            return []
        self.waiters[key] = [w for w in waiting if len(known) < w.request.expected]
        if not self.waiters[key]:
            del self.waiters[key]
        return [Send(w.peer, self._outputs_reply(w.request, known)) for w in ready]

    @staticmethod
    def _outputs_reply(request: LookupMapOutputs, known: dict[int, MapLocation]) -> MapOutputs:
        return MapOutputs(request_id=request.request_id, locations=[known[p] for p in sorted(known)])
