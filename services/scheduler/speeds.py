"""How fast each executor has been lately, and the share of a group's stateless tasks that follows
from it (Drizzle adapts placement at group boundaries): pure.

Every GroupDone says how long the executor spent running its tasks of the group (wall clock: a
process starved of CPU, stopped, or waiting on a slow disk takes longer). Its seconds per task,
smoothed over recent groups, divided by the median of all executors' is its *slowness*: 1 for a
typical executor, 5 for one taking five times as long. An executor slowness SLOW or more gets a
share of the next group's stateless tasks in proportion to 1 / slowness (never none, so that its
next report says whether it is still slow); when no executor is that slow, the placement order is
left exactly as the placement policy gave it. A process stopped or starved for part of every
moment waits between its tasks more than in them, so its busy time hardly shows it; its
heartbeats do, coming late: while they do, it takes no stateless task at all. Keyed-state partitions are not placed by it: they
stay with their owners (keyed_state.py).
"""

from __future__ import annotations

import statistics

from squall.services.scheduler.membership import ExecutorRecord

# The weight of a group's report against the executor's past ones: the estimate follows a change
# within two or three groups, and one noisy group moves it only halfway.
SMOOTHING = 0.5
# Slowness from which an executor's share shrinks: below it, timing noise on a shared machine.
SLOW = 1.5
# Heartbeats this late (each says the longest its thread woke late since the one before; the
# median of its last few: membership.py), and this many times the median executor's, mark an
# executor stalled (stopped or starved for part of every moment): it takes no stateless task
# while it lasts. Its beats keep coming without tasks, so it is taken back as soon as they are on
# time again. A busy machine wakes every process late by a few to 15 ms now and then; a process
# stopped for tens of milliseconds of every moment is late by that much in every beat.
STALLED_SECONDS = 0.02
STALLED_RATIO = 3.0
# Slots a typical executor takes in one cycle of the weighted order: a slow one takes
# SLOTS / slowness of them (at least one), so shares are resolved to about a quarter.
SLOTS = 4


class ExecutorSpeeds:
    def __init__(self) -> None:
        self.per_task: dict[str, float] = {}  # executor id -> smoothed busy seconds per task

    def observe(self, executor_id: str, tasks: int, busy: float) -> None:
        """An executor reported a group: `tasks` tasks taking `busy` seconds in all. Reports
        with nothing run (every task released before it started) say nothing of its speed."""
        if tasks <= 0 or busy <= 0:
            return
        seconds = busy / tasks
        previous = self.per_task.get(executor_id)
        self.per_task[executor_id] = seconds if previous is None else SMOOTHING * seconds + (1 - SMOOTHING) * previous

    def forget(self, executor_id: str) -> None:
        self.per_task.pop(executor_id, None)

    def slowness(self, executor_id: str) -> float:
        """Its seconds per task over the median executor's (1.0: unknown, or typical)."""
        mine = self.per_task.get(executor_id)
        if mine is None or len(self.per_task) < 2:
            return 1.0
        median = statistics.median(self.per_task.values())
        return mine / median if median > 0 else 1.0

    def slow(self, executor_ids: list[str]) -> set[str]:
        """Those of `executor_ids` slow enough to get a smaller share."""
        return {e for e in executor_ids if self.slowness(e) >= SLOW}

    @staticmethod
    def without_stalled(order: list[ExecutorRecord]) -> list[ExecutorRecord]:
        """`order` less the executors whose heartbeats come late (STALLED_SECONDS, and
        STALLED_RATIO times the median's); all of it when that would leave none."""
        median = statistics.median(r.stall for r in order) if order else 0.0
        kept = [r for r in order if not (r.stall >= STALLED_SECONDS and r.stall >= STALLED_RATIO * median)]
        return kept or order

    def weighted(self, order: list[ExecutorRecord]) -> list[ExecutorRecord]:
        """`order` (the placement policy's) as a cycle in which each executor appears in
        proportion to its speed: partition p of a stage goes to entry p mod len(cycle). Unchanged
        while no executor is slow. The entries are interleaved (smooth weighted round robin), so
        that a stage with few partitions still spreads over the fast executors first."""
        slowness = [self.slowness(r.executor_id) for r in order]
        if all(s < SLOW for s in slowness):
            return order
        weights = [SLOTS if s < SLOW else max(1, round(SLOTS / s)) for s in slowness]
        current = [0] * len(order)
        cycle: list[ExecutorRecord] = []
        for _ in range(sum(weights)):
            for i, w in enumerate(weights):
                current[i] += w
            best = max(range(len(order)), key=lambda i: current[i])  # ties: the policy's order
            current[best] -= sum(weights)
            cycle.append(order[best])
        return cycle
