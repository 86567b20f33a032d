"""Speculative copies of late micro-batches (Drizzle mode): which jobs are late, where a copy may
go, and which attempt's answer counts. Pure; drizzle_mode.py launches and releases what it says.

A job is late when it has been ready (dispatched, and past its batch time) for more than
Settings.speculation_multiplier times the median of the recent ready-to-done times of jobs of
the same shape (the same number of stages), and at least MIN_LATE seconds. A late
job gets one copy: the whole job again as a new attempt (its own wire id, as a replay has), placed
on the executors other than the suspects (those of its executors that have not reported its group
and look slow, speeds.py; at least the slowest of them). Whichever attempt delivers every result
partition first answers the driver; the other is marked over and released, so that its late
results are ignored like a superseded replay's, and its queued tasks are dropped.

Only the jobs of runs whose results come through the scheduler are copied: where they go
straight to the driver (Settings.direct_results), the scheduler hears that a job is done only
with its group's reports, so it cannot tell a late job from a finished one; such runs adapt to a
slow executor at group boundaries (speeds.py) only. Only stateless jobs are copied: a job with keyed state applies each batch once, on the
partition's owner, and an owner moves only through recovery (keyed_state.py). Nor are jobs that
rebuild state, or read persisted blocks (planned around where blocks are, at dispatch). A whole
job rather than single tasks is copied because mappers push to pre-placed reducers: a copied
reducer would have no input, and a copied job needs nothing but the fencing replays already use.
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Container, Iterator

from squall.services.scheduler.groups import GroupRun, PlannedJob
from squall.services.scheduler.runs import SubmittedRun
from squall.services.scheduler.speeds import ExecutorSpeeds

# Recent ready-to-done times kept per (driver, job shape), and how many are needed to judge.
HISTORY = 50
MIN_SAMPLES = 5
# Never late sooner than this: a multiple of a sub-millisecond median is clock and scheduling noise.
MIN_LATE = 0.01

Shape = int  # a job's number of stages: bounded by plan depth, so the history is too


class Speculation:
    def __init__(self, enabled: bool, multiplier: float, clock_offset: float = 0.0) -> None:
        self.enabled = enabled
        self.multiplier = multiplier
        # Wall clock minus the scheduler's monotonic clock: a batch's not_before is wall clock.
        self.clock_offset = clock_offset
        self.durations: dict[Shape, deque[float]] = {}
        self.copies: dict[str, PlannedJob] = {}  # primary's wire id -> its copy, while either is in flight
        self.primaries: dict[str, PlannedJob] = {}  # copy's wire id -> the job it copies
        self.launched = 0  # copies made, for the scheduler's logs and tests

    def ready_at(self, job: PlannedJob) -> float:
        """When the job could start (scheduler clock): dispatched, and past its batch time."""
        return max(job.started, job.not_before - self.clock_offset) if job.not_before else job.started

    def threshold(self, job: PlannedJob) -> float | None:
        """Seconds after being ready at which the job is late (None: too little history)."""
        recent = self.durations.get(len(job.plan.stages))
        if recent is None or len(recent) < MIN_SAMPLES:
            return None
        return max(self.multiplier * statistics.median(recent), MIN_LATE)

    @staticmethod
    def copyable(job: PlannedJob) -> bool:
        return (not job.over and not job.replay_only and not job.speculative and job.source is None
                and all(stage.spec.state is None for stage in job.plan.stages))

    def late(self, runs: dict[str, SubmittedRun], now: float) -> Iterator[tuple[SubmittedRun, GroupRun, PlannedJob]]:
        """Jobs in flight that are late and have no copy yet."""
        if not self.enabled:
            return
        for run in runs.values():
            if run.result_to:  # results go straight to its driver: a job's end is heard of only
                continue       # with its group's reports, too late to tell a late job from a done one
            for group in run.groups:
                for job in group.jobs:
                    if job.wire_id in self.copies or not self.copyable(job):
                        continue
                    threshold = self.threshold(job)
                    if threshold is not None and now - self.ready_at(job) > threshold:
                        yield run, group, job

    @staticmethod
    def suspects(job: PlannedJob, group: GroupRun, speeds: ExecutorSpeeds) -> set[str]:
        """Executors a copy of the job avoids: of those holding its tasks that have not reported
        its group, the slow ones, or else the slowest (the one most likely holding it back)."""
        holding = sorted(e for e in job.placed if e in group.waiting)
        if not holding:
            return set()
        return speeds.slow(holding) or {max(holding, key=speeds.slowness)}

    def pair(self, job: PlannedJob, copy: PlannedJob) -> None:
        self.copies[job.wire_id] = copy
        self.primaries[copy.wire_id] = job
        self.launched += 1

    def sibling(self, job: PlannedJob) -> PlannedJob | None:
        """The other attempt of a copied job, or None."""
        return self.primaries.get(job.wire_id) if job.speculative else self.copies.get(job.wire_id)

    def answered(self, job: PlannedJob) -> bool:
        """The job's other attempt already answered the driver (a copy's result, or the job's
        failure): this one's results are the loser's, to be ignored. A copy that failed answers
        nothing: the job's first attempt goes on as if it had never been copied."""
        other = self.sibling(job)
        if other is None:
            return False
        return other.over if job.speculative else other.done

    def finished(self, job: PlannedJob, now: float) -> PlannedJob | None:
        """An attempt delivered the job's last result partition: its ready-to-done time joins
        the history (from the first attempt's readiness), and the losing attempt, if any, is
        marked over and returned (to be released)."""
        other = self.sibling(job)
        first = other if job.speculative and other is not None else job
        self.durations.setdefault(len(job.plan.stages), deque(maxlen=HISTORY)).append(max(0.0, now - self.ready_at(first)))
        if other is None or other.over:
            return None
        other.done = True
        return other

    def prune(self, in_flight: Container[str]) -> None:
        """Drop the pairings of attempts no longer in flight (their groups are over, or their
        run was replayed or cancelled). A job keeps its entry while it is in flight, so that it
        is copied at most once, even when its copy failed."""
        for wire_id in [w for w in self.primaries if w not in in_flight]:
            del self.primaries[wire_id]
        for wire_id in [w for w in self.copies if w not in in_flight]:
            del self.copies[wire_id]
