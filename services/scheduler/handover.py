"""Moving keyed state partitions between live executors at a group boundary: pure, no sockets.

A partition moves without replaying anything: its old owner checkpoints it as it is after batch
b, the last batch it was given (HandOverStates), and the first group after b restores exactly
that checkpoint on the new owner (a StateRestore up to b), which applies b + 1 on. The old owner
drops its copy (HandedOver) once the new one has it.

The next group of a run using the state is held back until the handover is safe:
  - the checkpoint after b is written (StateCheckpointed), and
  - no job up to b that uses the state is unfinished: a job that would be replayed after a
    failure elsewhere must still find the partition, and the outputs it kept, on its old owner.
With more than one group in flight (drizzle_mode.GROUPS_IN_FLIGHT) the held group simply goes
out once the group before it is over; a stream (a run per group) waits only for the checkpoint.

Moves are decided when a run's next group is about to go out (rebalance.py picks them, from
the executors taking work then); a state has one set of moves in flight at a time. A handover
whose old or new owner is lost is dropped (recovery takes over the partition, or it stays), and
so is one not done within handover_timeout, or one whose run went back to replay batches.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from squall.common.core import Log, Send
from squall.common.protocol import HandedOver, HandOverStates
from squall.services.scheduler.events import Instruction
from squall.services.scheduler.groups import PlannedJob
from squall.services.scheduler.keyed_state import StateBook
from squall.services.scheduler.membership import Membership
from squall.services.scheduler.rebalance import balanced_moves
from squall.services.scheduler.runs import SubmittedRun


@dataclass(frozen=True)
class Handover:
    partition: int
    old: str
    new: str
    batch: int  # the old owner's last batch of the partition: the new owner applies batch + 1 on
    since: float  # when it was decided


class Handovers:
    def __init__(self, book: StateBook, members: Membership, in_flight: Mapping[str, tuple[SubmittedRun, PlannedJob]],
                 balance: bool, timeout: float) -> None:
        self.book = book
        self.members = members
        self.in_flight = in_flight  # Drizzle's jobs in flight (attempt id -> run, job): read only
        self.balance = balance  # spread partitions evenly (else only a leaving executor's move)
        self.timeout = timeout
        self.pending: dict[str, list[Handover]] = {}  # state id -> its moves in progress
        self.held: set[str] = set()  # runs whose next group waits for a handover
        self.quiet_until: dict[str, float] = {}  # state id -> no new moves before then (one timed out)

    def before_group(self, run: SubmittedRun, job: PlannedJob, now: float) -> tuple[bool, list[Instruction]]:
        """The run's next group, starting with `job`, is about to go out: decide the moves of its
        states, finish those that are safe now (the group restores them), and say whether the
        group must wait for the rest."""
        out: list[Instruction] = []
        hold = False
        for state_id in sorted(self.book.state_ids(job)):
            moves = self.pending.get(state_id)
            if moves and moves[0].batch != job.batch - 1:  # the run went back to replay batches
                out.append(self._abandon(state_id, f"the run goes on from batch {job.batch}, not {moves[0].batch + 1}"))
                moves = None
            if not moves and not self.book.states[state_id].restoring and now >= self.quiet_until.get(state_id, now):
                out += self._decide(state_id, job.batch - 1, now)  # (partitions being rebuilt first)
            if state_id not in self.pending:
                continue
            if self._safe(state_id):
                out += self._switch(state_id, now)
            else:
                hold = True
        if hold:
            self.held.add(run.run_id)
        else:
            self.held.discard(run.run_id)
        return hold, out

    def _decide(self, state_id: str, batch: int, now: float) -> list[Instruction]:
        """Moves that spread the state evenly; the old owners are asked for their checkpoints."""
        state = self.book.states[state_id]
        targets = [r.executor_id for r in self.members.placeable()]
        leaving = {r.executor_id for r in self.members.live() if r.leaving}
        load: dict[str, int] = {}
        for other in self.book.states.values():
            for owner in other.owners.values():
                load[owner] = load.get(owner, 0) + 1
        moves = balanced_moves(state.owners, targets, leaving, self.balance, load)
        if not moves:
            return []
        self.pending[state_id] = [Handover(p, old, new, batch, now) for p, old, new in moves]
        asks: dict[str, list[tuple[str, int, int]]] = {}
        for p, old, _ in moves:
            if state.checkpoint_of(p) < batch:
                asks.setdefault(old, []).append((state_id, p, batch))
        log = Log("info", "state_rebalancing", {"state": state_id, "after_batch": batch,
                                                 "moves": [f"{p}:{old}->{new}" for p, old, new in moves]})
        return [log, *(Send(self.members.executors[old].peer, HandOverStates(partitions=asked)) for old, asked in sorted(asks.items()))]

    def _safe(self, state_id: str) -> bool:
        moves = self.pending[state_id]
        state = self.book.states[state_id]
        batch = moves[0].batch
        if any(state.checkpoint_of(m.partition) < batch for m in moves):
            return False
        return not any(
            not job.over and job.batch <= batch and state_id in self.book.state_ids(job) for _, job in self.in_flight.values()
        )

    def _switch(self, state_id: str, now: float) -> list[Instruction]:
        """The new owners take over: the group going out restores each partition from the
        checkpoint after the handover batch (keyed_state.pending_restores: nothing to replay)."""
        state = self.book.states[state_id]
        dropped: dict[str, list[tuple[str, int]]] = {}
        moves = self.pending.pop(state_id)
        for m in moves:
            state.owners[m.partition] = m.new
            state.restoring.add(m.partition)
            dropped.setdefault(m.old, []).append((state_id, m.partition))
        sends: list[Instruction] = [Log("info", "state_handed_over", {
            "state": state_id, "after_batch": moves[0].batch, "partitions": len(moves), "seconds": round(now - moves[0].since, 4)})]
        for old, partitions in sorted(dropped.items()):
            record = self.members.get(old)
            if record is not None:
                sends.append(Send(record.peer, HandedOver(partitions=partitions)))
        return sends

    def _abandon(self, state_id: str, why: str) -> Log:
        moves = self.pending.pop(state_id)
        return Log("warning", "state_handover_abandoned", {"state": state_id, "partitions": [m.partition for m in moves], "reason": why})

    # --- what else happens ------------------------------------------------------------------

    def executor_lost(self, executor_id: str) -> list[Instruction]:
        """Moves from or to a lost executor are off: recovery rebuilds what it owned, and what it
        was to take stays with its owner (the next group decides again)."""
        return [self._abandon(sid, f"executor {executor_id} was lost") for sid, moves in list(self.pending.items())
                if any(executor_id in (m.old, m.new) for m in moves)]

    def leaving(self, executor_id: str) -> list[Instruction]:
        """Moves to an executor now leaving are off (its own partitions move at the next group)."""
        return [self._abandon(sid, f"executor {executor_id} is leaving") for sid, moves in list(self.pending.items())
                if any(m.new == executor_id for m in moves)]

    def expired(self, now: float) -> list[Instruction]:
        """Handovers not done within the timeout (a checkpoint that was never written) are
        abandoned, and their runs go on."""
        late = [sid for sid, moves in self.pending.items() if now - moves[0].since > self.timeout]
        for state_id in late:  # not asked again at once: a checkpoint that failed would hold every group
            self.quiet_until[state_id] = now + self.timeout
        return [self._abandon(sid, f"not done within {self.timeout:g}s (handover_timeout)") for sid in late]

    def forget(self, state_ids: list[str]) -> None:
        for state_id in state_ids:
            self.pending.pop(state_id, None)
            self.quiet_until.pop(state_id, None)

    def waiting_runs(self) -> list[str]:
        return sorted(self.held)
