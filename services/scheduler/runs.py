"""A driver's run as the scheduler holds it: the micro-batches a SubmitJobs asked for, queued,
and those in flight (groups in Drizzle mode, one job in BSP mode)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from squall.common.protocol import GroupStats, Priority
from squall.services.scheduler.bsp_jobs import BspJob
from squall.services.scheduler.groups import GroupRun, PlannedJob


@dataclass
class SubmittedRun:
    run_id: str
    driver: bytes
    queue: deque[PlannedJob]
    group_size: int
    preschedule: bool
    barrier: bool
    priority: Priority = "latency"  # every task of it carries this to the executors (Settings.preemption)
    groups: list[GroupRun] = field(default_factory=list)  # Drizzle: groups in flight, oldest first
    bsp: BspJob | None = None  # BSP: the job in flight
    stats: list[GroupStats] = field(default_factory=list)
    skipped: int = 0  # bad records skipped over the run
    state_ids: set[str] = field(default_factory=set)  # the keyed states its jobs use
    result_to: str = ""  # the driver's result socket (Drizzle results go there, not through us); "": none
    direct: list[str] = field(default_factory=list)  # jobs whose results all went there (RunDone tells the driver)

    @property
    def groups_in_flight(self) -> int:
        """Drizzle groups in flight, not counting speculative copies of late jobs."""
        return sum(1 for group in self.groups if not group.speculative)
