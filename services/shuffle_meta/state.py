"""Where every map output lives: pure logic, no sockets.

Executors register each map output (job, shuffle, map partition -> executor, address, sizes).
Reducers look up all outputs of a shuffle; a look-up that arrives before every expected output
is registered waits (the registration travels off the critical path and may be overtaken) and is
answered as soon as the set is complete, or with an error when its deadline passes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from squall.common.protocol import ErrorReply, LookupMapOutputs, MapLocation, MapOutputs, Message
from squall.common.recent_ids import RecentIds

ShuffleKey = tuple[str, int]


@dataclass(frozen=True)
class Reply:
    """Send `msg` to the peer with routing identity `peer`."""

    peer: bytes
    msg: Message


@dataclass
class _Waiter:
    peer: bytes
    request: LookupMapOutputs
    deadline: float


@dataclass
class ShuffleMetaState:
    outputs: dict[ShuffleKey, dict[int, MapLocation]] = field(default_factory=dict)
    waiters: dict[ShuffleKey, list[_Waiter]] = field(default_factory=dict)
    # Jobs already over: a registration that overtook nothing but arrives late is ignored.
    forgotten: RecentIds = field(default_factory=RecentIds)

    def tracked(self) -> dict[str, int]:
        """Entries in each table (GetTracked): all bounded while jobs come and go."""
        return {"outputs": len(self.outputs), "waiters": len(self.waiters), "forgotten": len(self.forgotten)}

    def register(self, job_id: str, shuffle_id: int, location: MapLocation) -> list[Reply]:
        if job_id in self.forgotten:
            return []
        key = (job_id, shuffle_id)
        self.outputs.setdefault(key, {})[location.map_partition] = location
        return self._answer_complete(key)

    def lookup(self, peer: bytes, request: LookupMapOutputs, now: float) -> list[Reply]:
        key = (request.job_id, request.shuffle_id)
        known = self.outputs.get(key, {})
        if len(known) >= request.expected:
            return [Reply(peer, self._outputs_reply(request, known))]
        waiter = _Waiter(peer, request, now + request.timeout)
        self.waiters.setdefault(key, []).append(waiter)
        return []

    def tick(self, now: float) -> list[Reply]:
        """Fail look-ups whose deadline has passed."""
        replies = []
        for key in list(self.waiters):
            keep = []
            for w in self.waiters[key]:
                if w.deadline <= now:
                    have = len(self.outputs.get(key, {}))
                    reason = (
                        f"map outputs of job {key[0]} shuffle {key[1]} incomplete after "
                        f"{w.request.timeout:g}s: {have} of {w.request.expected} registered"
                    )
                    replies.append(Reply(w.peer, ErrorReply(reason=reason, request_id=w.request.request_id)))
                else:
                    keep.append(w)
            if keep:
                self.waiters[key] = keep
            else:
                del self.waiters[key]
        return replies

    def forget_job(self, job_id: str) -> list[Reply]:
        self.forgotten.add(job_id)
        replies = []
        for key in [k for k in self.outputs if k[0] == job_id]:
            del self.outputs[key]
        for key in [k for k in self.waiters if k[0] == job_id]:
            for w in self.waiters.pop(key):
                reason = f"job {job_id} is over"
                replies.append(Reply(w.peer, ErrorReply(reason=reason, request_id=w.request.request_id)))
        return replies

    def forget_executor(self, executor_id: str) -> None:
        for locations in self.outputs.values():
            for part in [p for p, loc in locations.items() if loc.executor_id == executor_id]:
                del locations[part]

    def _answer_complete(self, key: ShuffleKey) -> list[Reply]:
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
        return [Reply(w.peer, self._outputs_reply(w.request, known)) for w in ready]

    @staticmethod
    def _outputs_reply(request: LookupMapOutputs, known: dict[int, MapLocation]) -> MapOutputs:
        return MapOutputs(request_id=request.request_id, locations=[known[p] for p in sorted(known)])
