"""An executor leaving gracefully (scale-in): what it says and does, pure.

SIGTERM (as Kubernetes sends on scale-down) asks the scheduler to let it leave (Decommission);
the executor goes on with the work it has meanwhile, while the scheduler hands its keyed state
partitions to the others and waits for its groups in flight. Told to go (Leave), it exits 0:
nothing of it is replayed. `squall decommission` asks the scheduler directly; Leave comes the
same way. It exits at once when it has nothing to hand over (not registered yet), when the
scheduler refuses (it is the last executor taking work) or does not answer (it is stopping too),
on a second SIGTERM, and when the scheduler it leaves has forgotten it (restarted). If it is not let go within
decommission_timeout it exits 1: then it is an ordinary loss, and its work is replayed.
"""

from __future__ import annotations

from squall.common.core import Log
from squall.common.protocol import Decommission, DecommissionAnswer
from squall.services.executor.instructions import Exit, Instruction, ToScheduler

# How long an executor leaving waits for the scheduler to answer before exiting at once: an
# unanswered request means the scheduler is stopping too, or unreachable.
ANSWER_TIMEOUT = 2.0


class Departure:
    def __init__(self, executor_id: str) -> None:
        self.executor_id = executor_id
        self.leaving = False  # it asked the scheduler to let it go
        self.accepted = False  # and the scheduler said yes

    def requested(self, registered: bool) -> list[Instruction]:
        """SIGTERM: ask to leave (the first time), or exit now (the second)."""
        if self.leaving:
            return [Log("warning", "leaving_now", {"reason": "terminated again while leaving"}), Exit(0)]
        if not registered:
            return [Log("info", "leaving_now", {"reason": "terminated before registering: nothing to hand over"}), Exit(0)]
        self.leaving = True
        return [Log("info", "leaving", {}), ToScheduler(Decommission(executor_id=self.executor_id))]

    def answered(self, msg: DecommissionAnswer) -> list[Instruction]:
        if msg.accepted:
            self.accepted = True
            return [Log("info", "leaving_accepted", {"state_partitions": msg.partitions})]
        return [Log("warning", "leaving_now", {"reason": f"the scheduler refused: {msg.reason}"}), Exit(0)]

    def told_to_go(self) -> list[Instruction]:
        return [Log("info", "decommissioned", {}), Exit(0)]

    def forgotten(self) -> list[Instruction] | None:
        """The scheduler forgot us while we were leaving: nothing there waits for us. None when
        not leaving (register again)."""
        if not self.leaving:
            return None
        return [Log("warning", "leaving_now", {"reason": "the scheduler forgot this executor"}), Exit(0)]

    def answer_overdue(self) -> list[Instruction]:
        """ANSWER_TIMEOUT passed since SIGTERM: without an answer, nothing waits for us."""
        if not self.leaving or self.accepted:
            return []
        return [Log("warning", "leaving_now", {"reason": f"the scheduler did not answer within {ANSWER_TIMEOUT:g}s"}), Exit(0)]

    def grace_over(self) -> list[Instruction]:
        """decommission_timeout passed since SIGTERM, and the scheduler has not let us go."""
        if not self.leaving:
            return []
        return [Log("warning", "decommission_timed_out", {"note": "exiting as a lost executor: its work is replayed"}), Exit(1)]
