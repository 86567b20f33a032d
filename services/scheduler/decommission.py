"""Executors leaving gracefully (scale-in): pure, no sockets.

An executor asked to leave (Decommission: from itself on SIGTERM, or from `squall decommission`)
is marked leaving at once: placement passes it over from then on (Membership.placeable), and
the next group of each stream using its keyed state hands those partitions to the others
(handover.py). It finishes the work it has. Once it owns no partition and no group, BSP task or
BSP job in flight still needs it, the block directory forgets it (its persisted blocks are
recomputed from lineage when next read), it leaves membership, and it is told to go (Leave):
nothing of it is replayed. Leaving is refused for the last executor that takes work.
"""

from __future__ import annotations

from collections.abc import Mapping

from squall.common.core import Log, Send, ToShuffleMeta
from squall.common.protocol import Decommission, DecommissionAnswer, ForgetExecutor, Leave
from squall.services.scheduler.bsp_mode import BspMode
from squall.services.scheduler.events import Instruction
from squall.services.scheduler.keyed_state import StateBook
from squall.services.scheduler.membership import Membership
from squall.services.scheduler.runs import SubmittedRun


class Departures:
    def __init__(self, members: Membership, book: StateBook, runs: Mapping[str, SubmittedRun], bsp: BspMode) -> None:
        self.members = members
        self.book = book
        self.runs = runs  # read only: groups in flight
        self.bsp = bsp
        self.asked: dict[str, float] = {}  # leaving executor -> when it was asked to leave

    def request(self, msg: Decommission, peer: bytes, now: float) -> list[Instruction]:
        """Someone asks `msg.executor_id` to leave: mark it leaving, and answer."""
        executor_id = msg.executor_id
        record = self.members.get(executor_id)
        if record is None:
            return [Send(peer, DecommissionAnswer(executor_id=executor_id, accepted=False,
                                                  reason=f"no executor {executor_id!r} is registered with the scheduler"))]
        owned = self.owned(executor_id)
        if not record.leaving and [r.executor_id for r in self.members.placeable()] == [executor_id]:
            reason = f"executor {executor_id} is the last one taking work: start another before it leaves"
            return [Send(peer, DecommissionAnswer(executor_id=executor_id, accepted=False, reason=reason))]
        answer = Send(peer, DecommissionAnswer(executor_id=executor_id, accepted=True, partitions=owned))
        if record.leaving:
            return [answer]  # asked again: already on its way
        record.leaving = True
        self.asked[executor_id] = now
        return [answer, Log("info", "executor_leaving", {"executor": executor_id, "state_partitions": owned})]

    def owned(self, executor_id: str) -> int:
        return sum(1 for state in self.book.states.values() for owner in state.owners.values() if owner == executor_id)

    def busy(self, executor_id: str) -> bool:
        """Whether anything in flight still needs the executor: a group waiting for its report
        (its map outputs are pushed within the group), a BSP task there, or a BSP job that ran
        tasks there (later stages look their map outputs up)."""
        record = self.members.executors[executor_id]
        return (
            any(executor_id in group.waiting for run in self.runs.values() for group in run.groups)
            or bool(record.running)
            or any(executor_id in job.touched for _, job in self.bsp.jobs.values())
        )

    def ready_to_go(self, now: float) -> list[Instruction]:
        """Leaving executors with nothing left here go: out of membership, told to leave."""
        out: list[Instruction] = []
        for executor_id in sorted(self.asked):
            record = self.members.get(executor_id)
            if record is None or not record.leaving:  # lost meanwhile (or restarted): handled as any loss
                del self.asked[executor_id]
                continue
            if self.owned(executor_id) or self.busy(executor_id):
                continue
            asked = self.asked.pop(executor_id)
            self.members.remove(executor_id)
            details = {"executor": executor_id, "seconds": round(now - asked, 3)}
            out += [
                Log("info", "executor_decommissioned", details),
                ToShuffleMeta(ForgetExecutor(executor_id=executor_id)),
                Send(record.peer, Leave(executor_id=executor_id)),
            ]
        return out

    def stay(self) -> list[Instruction]:
        """No executor taking work is left (the last one was lost): those leaving stay, and take
        work again; whoever asked them to leave may ask again."""
        if self.members.placeable() or not self.asked:
            return []
        staying = sorted(self.asked)
        for executor_id in staying:
            record = self.members.get(executor_id)
            if record is not None:
                record.leaving = False
        self.asked.clear()
        return [Log("warning", "executors_staying", {"executors": staying, "reason": "no other executor is left to take their work"})]
