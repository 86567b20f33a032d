"""Which executors are alive, and which look hung.

Liveness must not depend on the executor's GIL: a task may hold it for seconds (a big sort, a
numpy call), which stops the executor's Python threads, heartbeat thread included, yet its
process is alive and working. So death is decided by the scheduler's watch connection to the
executor (watch.py): ZeroMQ's own heartbeats on it are answered by libzmq's I/O thread, without
the GIL, and it drops when the process dies, stops (SIGSTOP) or is cut off. Until that
connection is up (just after registration), missing application heartbeats still mean death,
after `join_timeout` rather than the death timeout: a machine starting many executors at once
is slow to finish their handshakes and to run their heartbeat threads, and an executor declared
dead then only registers again, over and over, while its first work waits.

Once it is up, silence only makes the executor *hung* after `hung_timeout`: its heartbeats have
stopped, or they say that its loop has not gone round since (stuck while the heartbeat thread
runs). It is reported (what it was running, for how long) while its work goes on, and the report
is cleared once its beats say that it is going again.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass, field

from squall.common.protocol import ClusterStatus, ExecutorInfo, Heartbeat, Priority, RegisterExecutor
from squall.services.scheduler.shipped import ShippedPlan

TaskKey = tuple[str, int, int]  # (job_id, stage_id, partition)


# ExecutorRecord.stall is the median lateness of its last this-many beats: an executor stopped
# for most of every moment has most of them late, one that hiccuped once (starting up, say) not.
STALL_BEATS = 5


@dataclass
class ExecutorRecord:
    executor_id: str
    incarnation: str
    peer: bytes
    data_address: str
    slots: int
    pid: int
    last_seen: float  # its last heartbeat (or registration)
    loop_seen: float = math.nan  # when its loop last went round, as its heartbeats tell (nan: last_seen)
    joined: int = 0  # membership's count of admissions when it joined: tells its watch connection from a predecessor's
    connected: bool = False  # the watch connection is up: ZeroMQ heartbeats vouch for its process from now on
    hung: str = ""  # what it was running when it was reported hung ("" while it is not)
    leaving: bool = False  # decommissioned: takes no new work, hands its state over, then goes (decommission.py)
    running: set[TaskKey] = field(default_factory=set)  # BSP tasks in flight
    # Its tasks by priority as its last heartbeat told (launched and not over; suspended: of the
    # batch ones), and the tasks placed there since that beat, which it could not count yet.
    latency_tasks: int = 0
    batch_tasks: int = 0
    suspended_tasks: int = 0
    placed_latency: int = 0
    placed_batch: int = 0
    # How late its recent heartbeats came (seconds): a process stopped or starved for part of
    # every moment; stateless work avoids it while it lasts (speeds.py).
    late_beats: deque[float] = field(default_factory=lambda: deque(maxlen=STALL_BEATS))
    shipped: ShippedPlan = field(default_factory=ShippedPlan)  # the stage specs and code it holds
    # What its heartbeats and registration tell, for the dashboard and `squall status`.
    metrics_address: str = ""
    memory_bytes: int = 0
    persisted: dict[str, int] = field(default_factory=dict)  # dataset id -> bytes held
    batch_done: dict[str, int] = field(default_factory=dict)  # "job wire id:stage" -> batch tasks finished

    def __post_init__(self) -> None:
        if math.isnan(self.loop_seen):
            self.loop_seen = self.last_seen

    @property
    def stall(self) -> float:
        """The median lateness of its last STALL_BEATS beats (seconds; 0 until it has sent that many)."""
        return statistics.median(self.late_beats) if len(self.late_beats) == STALL_BEATS else 0.0

    @property
    def free_slots(self) -> int:
        return self.slots - len(self.running)

    @property
    def latency_load(self) -> int:
        """Latency tasks it runs, as far as the scheduler knows: what batch tasks avoid."""
        return self.latency_tasks + self.placed_latency

    @property
    def batch_load(self) -> int:
        """Batch tasks it runs, as far as the scheduler knows: what latency tasks avoid."""
        return self.batch_tasks + self.placed_batch

    def count_placed(self, priority: Priority, tasks: int) -> None:
        """`tasks` tasks of that priority were placed here (counted until its next heartbeat)."""
        if priority == "latency":
            self.placed_latency += tasks
        else:
            self.placed_batch += tasks

    def silent_for(self, now: float) -> float:
        """Seconds since its heartbeat thread or its loop (whichever is quieter) was last heard of."""
        return max(0.0, now - min(self.last_seen, self.loop_seen))


class Membership:
    def __init__(self, death_timeout: float, hung_timeout: float = float("inf"), join_timeout: float = 0.0) -> None:
        self.death_timeout = death_timeout
        self.join_timeout = max(death_timeout, join_timeout)  # the silence that is death before the watch connection is up
        self.hung_timeout = hung_timeout
        self.executors: dict[str, ExecutorRecord] = {}
        self.version = 0  # moves on at every add and remove: who watches membership compares it
        self._live: list[ExecutorRecord] = []  # live() as of _live_key (version, executors)
        self._live_key = (-1, 0)

    def get(self, executor_id: str) -> ExecutorRecord | None:
        return self.executors.get(executor_id)

    def live(self) -> list[ExecutorRecord]:
        """Live executors in a stable order (by id)."""
        # Sorted once per membership change, not at each call (every tick makes one).
        key = (self.version, len(self.executors))
        if key != self._live_key:
            self._live, self._live_key = [self.executors[k] for k in sorted(self.executors)], key
        return list(self._live)

    def placeable(self) -> list[ExecutorRecord]:
        """Live executors that take new work (not leaving), by id."""
        return [record for record in self.live() if not record.leaving]

    def is_retry(self, msg: RegisterExecutor) -> bool:
        """A repeated registration of the same process (same incarnation and block address)."""
        known = self.executors.get(msg.executor_id)
        return known is not None and known.incarnation == msg.incarnation and known.data_address == msg.data_address

    def add(self, peer: bytes, msg: RegisterExecutor, now: float) -> ExecutorRecord:
        self.version += 1
        record = ExecutorRecord(
            executor_id=msg.executor_id,
            incarnation=msg.incarnation,
            peer=peer,
            data_address=msg.data_address,
            slots=msg.slots,
            pid=msg.pid,
            metrics_address=msg.metrics_address,
            last_seen=now,
            joined=self.version,
        )
        self.executors[msg.executor_id] = record
        return record

    def watched(self) -> dict[str, tuple[str, int]]:
        """What the watch must be connected to: executor id -> (block address, joined)."""
        return {k: (r.data_address, r.joined) for k, r in self.executors.items()}

    def connected(self, executor_id: str, joined: int) -> None:
        """The watch connection of this admission of the executor is up."""
        record = self.executors.get(executor_id)
        if record is not None and record.joined == joined:
            record.connected = True

    def beat(self, msg: Heartbeat, now: float) -> ExecutorRecord | None:
        """Record a heartbeat (which says for how long the executor's loop has been silent, and
        the tasks it holds by priority); the executor's record, or None if the sender is not a
        live executor we know."""
        record = self.executors.get(msg.executor_id)
        if record is None or record.incarnation != msg.incarnation:
            return None
        record.last_seen = now
        record.loop_seen = now - msg.loop_silent
        record.latency_tasks, record.batch_tasks, record.suspended_tasks = msg.latency_tasks, msg.batch_tasks, msg.suspended_tasks
        record.late_beats.append(msg.stalled)
        record.memory_bytes, record.persisted, record.batch_done = msg.memory_bytes, msg.persisted, msg.batch_done
        # Tasks placed before this beat are in its counts, or over; a launch the executor had not
        # received yet goes uncounted until its next beat: an estimate, cheap and soon corrected.
        record.placed_latency = record.placed_batch = 0
        return record

    def is_hung(self, record: ExecutorRecord, now: float) -> bool:
        return record.silent_for(now) > self.hung_timeout

    def expired(self, now: float) -> list[tuple[str, float]]:
        """(executor_id, seconds silent) of executors without a watch connection yet, silent
        past the join timeout."""
        return [
            (r.executor_id, now - r.last_seen)
            for r in self.executors.values()
            if not r.connected and now - r.last_seen > self.join_timeout
        ]

    def newly_hung(self, now: float) -> list[tuple[ExecutorRecord, float]]:
        """(record, seconds silent) of executors whose process answers but whose heartbeats or
        loop have been silent past the hung timeout, not reported yet (the caller sets `hung`)."""
        # One comparison per executor (is_hung's, inlined: hung_timeout is not negative): every
        # tick asks this of every executor, and at a thousand the calls were most of a tick.
        hung_timeout = self.hung_timeout
        return [(r, r.silent_for(now)) for r in self.live()
                if r.connected and not r.hung and now - min(r.last_seen, r.loop_seen) > hung_timeout]

    def remove(self, executor_id: str) -> ExecutorRecord | None:
        self.version += 1
        return self.executors.pop(executor_id, None)

    def status(self, running_jobs: int, now: float) -> ClusterStatus:
        return ClusterStatus(
            executors=[
                ExecutorInfo(
                    executor_id=r.executor_id,
                    data_address=r.data_address,
                    slots=r.slots,
                    running=len(r.running),
                    pid=r.pid,
                    silent_for=round(r.silent_for(now), 3),
                    hung=r.hung,
                    latency_tasks=r.latency_tasks,
                    batch_tasks=r.batch_tasks,
                    suspended_tasks=r.suspended_tasks,
                    leaving=r.leaving,
                )
                for r in self.live()
            ],
            running_jobs=running_jobs,
        )
