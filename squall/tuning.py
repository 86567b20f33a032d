"""Group-size tuning: how many micro-batches to dispatch together (Drizzle, SOSP 2017, section 4.4).

A stream runs its micro-batches in groups of G. Between two groups the scheduler and the driver
coordinate (dispatching the group, collecting the executors' reports); that coordination is pure
overhead, paid once per group. A bigger group spreads it over more batches, but it also makes the
system slower to react: a failure or a new executor is only acted upon at a group boundary.

The tuner balances the two in the AIMD style of Drizzle. After each group it looks at the share of
the group's wall time that went to coordination:
  - above `upper`: coordination costs too much, so the group grows multiplicatively (fast);
  - below `lower`: there is room to react sooner, so the group shrinks additively (slowly);
  - in between: the group size is kept.
Whatever the overhead says, a group never lasts longer than `max_group_seconds`
(G * batch_interval <= max_group_seconds, which bounds how late the system reacts to failures and
new executors) and never holds more than `max_size` batches.

What holds (tested in tests/unit/test_tuning.py): when the overhead falls as G grows (the usual
case, fixed per-group cost spread over more batches), the size settles on a fixed point and stays
there, provided some size within the caps has an overhead inside [lower, upper] or the overhead is
still above `upper` at the cap (the tuner then sits at the cap) or already below `lower` at
`min_size`. If the band is so narrow that no whole size lands in it, the size cycles (grow past
the band, shrink back one step at a time, grow again); widen the band if that happens.

Everything here is pure: no clock reads, no logging, no I/O. The caller measures, the tuner decides.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

HISTORY = 1_000

# Slack for the duration cap, so that 2.0 / 0.1 style divisions that land a hair under a whole
# number (0.3 / 0.1 == 2.9999999999999996) still give that whole number.
_CAP_EPSILON = 1e-9


@dataclass(frozen=True)
class TunerBounds:
    """The tuner's thresholds and limits.

    lower, upper: the overhead band (fractions of a group's wall time) in which the size is kept.
    growth: the factor the size is multiplied by when the overhead is above `upper`.
    shrink_step: how many batches the size loses when the overhead is below `lower`.
    min_size, max_size: hard limits on the group size.
    max_group_seconds: the longest a group may last (size * batch_interval); bounds reaction time.
    """

    lower: float = 0.05
    upper: float = 0.10
    growth: float = 2.0
    shrink_step: int = 1
    min_size: int = 1
    max_size: int = 1000
    max_group_seconds: float = 2.0

    def __post_init__(self) -> None:
        # Written as `not (...)` so that NaN fails every check.
        if not (0.0 <= self.lower < self.upper <= 1.0):
            raise ValueError(f"lower and upper must satisfy 0 <= lower < upper <= 1 (got lower={self.lower!r}, upper={self.upper!r})")
        if not (self.growth > 1.0) or math.isinf(self.growth):
            raise ValueError(f"growth must be a finite number above 1 (got {self.growth!r})")
        if not (isinstance(self.shrink_step, int) and self.shrink_step >= 1):
            raise ValueError(f"shrink_step must be an integer of at least 1 (got {self.shrink_step!r})")
        if not (isinstance(self.min_size, int) and self.min_size >= 1):
            raise ValueError(f"min_size must be an integer of at least 1 (got {self.min_size!r})")
        if not (isinstance(self.max_size, int) and self.max_size >= self.min_size):
            raise ValueError(f"max_size must be an integer of at least min_size={self.min_size} (got {self.max_size!r})")
        if not (self.max_group_seconds > 0.0):
            raise ValueError(f"max_group_seconds must be above 0 (got {self.max_group_seconds!r})")


def coordination_overhead(group_seconds: float, busy_seconds: float) -> float:
    """The fraction of a group's wall time that was not spent running its tasks, in [0, 1].

    group_seconds is the group's wall time (dispatch to last report); busy_seconds is the time the
    busiest executor spent running the group's tasks, so everything else is coordination.
    Measurements that make no sense give 0.0, never 1.0, so that a bad reading cannot make the
    tuner grow the group: a group that took no time (group_seconds <= 0), NaN inputs, or a negative
    busy time. Busy time above the wall time (clocks on different machines) also gives 0.0.
    """
    if not (group_seconds > 0.0) or not (busy_seconds >= 0.0):  # also catches NaN
        return 0.0
    overhead = 1.0 - busy_seconds / group_seconds
    if math.isnan(overhead):  # inf / inf
        return 0.0
    return min(max(overhead, 0.0), 1.0)


def size_cap(batch_interval: float, bounds: TunerBounds) -> int:
    """The largest group size allowed: as many batches as fit in max_group_seconds, within max_size.

    Never below min_size, even when a single batch interval is longer than max_group_seconds
    (the hard minimum wins over the duration limit).
    """
    if not (batch_interval > 0.0):
        raise ValueError(f"batch_interval must be above 0 seconds (got {batch_interval!r})")
    fits = math.floor(bounds.max_group_seconds / batch_interval + _CAP_EPSILON)
    return min(max(bounds.min_size, fits), bounds.max_size)


def next_group_size(current: int, overhead: float, batch_interval: float, bounds: TunerBounds) -> int:
    """The size of the next group, given the size and coordination overhead of the last one.

    Overhead above bounds.upper: multiply the size by bounds.growth (at least +1), because
    coordination is eating too much of each group. Below bounds.lower: subtract
    bounds.shrink_step, because a smaller group reacts sooner to failures and new executors and
    coordination is cheap enough to pay more often. In between: keep the size.
    The result is then clamped into [min_size, cap], where cap = max(min_size,
    floor(max_group_seconds / batch_interval)) limited to max_size, so a group never outlasts
    max_group_seconds. A NaN or negative overhead is a measurement error and counts as 0, which
    can only shrink the group; an overhead above 1 counts as 1.
    Raises ValueError if current < 1 or batch_interval is not above 0.
    """
    if current < 1:
        raise ValueError(f"current group size must be at least 1 (got {current!r})")
    cap = size_cap(batch_interval, bounds)
    if not (overhead >= 0.0):  # negative or NaN
        overhead = 0.0
    if overhead > bounds.upper:
        grown = current * bounds.growth
        proposed = cap if grown >= cap else max(current + 1, math.ceil(grown))
    elif overhead < bounds.lower:
        proposed = current - bounds.shrink_step
    else:
        proposed = current
    return min(max(proposed, bounds.min_size), cap)


@dataclass(kw_only=True)
class GroupSizeTuner:
    """The tuner of one stream: feed it each group's timings, read the next group's size.

    batch_interval: seconds per micro-batch, used for the duration cap.
    initial_size: the first group's size, clamped into [min_size, cap] like every later size.
    history: one (size, overhead, new_size) entry per observed group, oldest first.
    changes: how many observations changed the size.
    """

    batch_interval: float
    initial_size: int = 1
    bounds: TunerBounds = field(default_factory=TunerBounds)
    # (size, overhead measured, size chosen) per group: the most recent HISTORY groups only, since
    # a stream tunes for weeks.
    history: deque[tuple[int, float, int]] = field(default_factory=lambda: deque(maxlen=HISTORY), init=False)
    changes: int = field(default=0, init=False)
    _size: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.initial_size < 1:
            raise ValueError(f"initial_size must be at least 1 (got {self.initial_size!r})")
        cap = size_cap(self.batch_interval, self.bounds)  # also validates batch_interval
        self._size = min(max(self.initial_size, self.bounds.min_size), cap)

    @property
    def size(self) -> int:
        """The size to use for the next group."""
        return self._size

    def observe(self, group_seconds: float, busy_seconds: float) -> int:
        """Record one finished group (of the current size) and return the next group's size.

        group_seconds is the group's wall time, busy_seconds the busiest executor's time running
        its tasks; see coordination_overhead.
        """
        return self.observe_overhead(coordination_overhead(group_seconds, busy_seconds))

    def observe_overhead(self, overhead: float) -> int:
        """Record one finished group whose coordination overhead (a fraction of its time) was
        measured by the caller, and return the next group's size."""
        new_size = next_group_size(self._size, overhead, self.batch_interval, self.bounds)
        self.history.append((self._size, overhead, new_size))
        if new_size != self._size:
            self.changes += 1
        self._size = new_size
        return new_size
