"""Which executors are alive: registration, heartbeats, and death after a budget of missed beats."""

from __future__ import annotations

from dataclasses import dataclass, field

from squall.common.protocol import ClusterStatus, ExecutorInfo, RegisterExecutor

TaskKey = tuple[str, int, int]  # (job_id, stage_id, partition)


@dataclass
class ExecutorRecord:
    executor_id: str
    incarnation: str
    peer: bytes
    data_address: str
    slots: int
    pid: int
    last_seen: float
    running: set[TaskKey] = field(default_factory=set)  # BSP tasks in flight
    stages: set[str] = field(default_factory=set)  # stage specs it has been sent
    code: set[str] = field(default_factory=set)  # code keys it has been sent

    @property
    def free_slots(self) -> int:
        return self.slots - len(self.running)


class Membership:
    def __init__(self, death_timeout: float) -> None:
        self.death_timeout = death_timeout
        self.executors: dict[str, ExecutorRecord] = {}
        self.version = 0  # moves on at every add and remove: who watches membership compares it

    def get(self, executor_id: str) -> ExecutorRecord | None:
        return self.executors.get(executor_id)

    def live(self) -> list[ExecutorRecord]:
        """Live executors in a stable order (by id)."""
        return [self.executors[k] for k in sorted(self.executors)]

    def is_retry(self, msg: RegisterExecutor) -> bool:
        """A repeated registration of the same process (same incarnation and block address)."""
        known = self.executors.get(msg.executor_id)
        return known is not None and known.incarnation == msg.incarnation and known.data_address == msg.data_address

    def add(self, peer: bytes, msg: RegisterExecutor, now: float) -> ExecutorRecord:
        record = ExecutorRecord(
            executor_id=msg.executor_id,
            incarnation=msg.incarnation,
            peer=peer,
            data_address=msg.data_address,
            slots=msg.slots,
            pid=msg.pid,
            last_seen=now,
        )
        self.executors[msg.executor_id] = record
        self.version += 1
        return record

    def beat(self, executor_id: str, incarnation: str, now: float) -> bool:
        """Record a heartbeat; False if the sender is not a live executor we know."""
        record = self.executors.get(executor_id)
        if record is None or record.incarnation != incarnation:
            return False
        record.last_seen = now
        return True

    def expired(self, now: float) -> list[tuple[str, float]]:
        """(executor_id, seconds silent) of executors past the death timeout."""
        return [
            (r.executor_id, now - r.last_seen)
            for r in self.executors.values()
            if now - r.last_seen > self.death_timeout
        ]

    def remove(self, executor_id: str) -> ExecutorRecord | None:
        self.version += 1
        return self.executors.pop(executor_id, None)

    def status(self, running_jobs: int) -> ClusterStatus:
        return ClusterStatus(
            executors=[
                ExecutorInfo(
                    executor_id=r.executor_id,
                    data_address=r.data_address,
                    slots=r.slots,
                    running=len(r.running),
                    pid=r.pid,
                )
                for r in self.live()
            ],
            running_jobs=running_jobs,
        )
