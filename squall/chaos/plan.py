"""Seeded fault plans: which faults a trial injects, when, and where. Pure: the same seed always
gives the same plan, so a failing trial can be run again exactly."""

from __future__ import annotations

import random
from dataclasses import dataclass

# kill_executor: SIGKILL an executor at a random moment. kill_at_dispatch: right as a group
# ends, while the next one is dispatched. kill_mid_shuffle: half a batch interval into a batch,
# while mappers push. kill_mid_checkpoint: while a checkpoint file is half written (the writer).
# stop_executor: SIGSTOP long enough to be declared dead, then SIGCONT (it comes back as new).
# straggler: SIGSTOP for less than the death budget (a slow machine; nothing should be replayed).
# slow_executor: slowed SLOW_FACTOR times for slow_for seconds (stopped most of every 50 ms:
# slow.py); its late micro-batches are copied onto the others (speculation).
# kill_shuffle_meta / kill_scheduler: SIGKILL the service, then start it again.
# scale: an executor added ("out"), or one decommissioned by SIGTERM ("in": it must exit 0 with
# nothing of it replayed).
EXECUTOR_FAULTS = ("kill_executor", "kill_at_dispatch", "kill_mid_shuffle", "kill_mid_checkpoint", "stop_executor", "straggler",
                   "slow_executor")
SERVICE_FAULTS = ("kill_shuffle_meta", "kill_scheduler")
SCALE_FAULTS = ("scale",)
SLOW_FACTOR = 5.0
FAULT_KINDS = EXECUTOR_FAULTS + SERVICE_FAULTS + SCALE_FAULTS


@dataclass(frozen=True)
class Fault:
    kind: str
    at: float  # seconds after the stream's first batch
    executor: int = -1  # which executor (index into the live ones, sorted by name), for executor faults
    duration: float = 0.0  # SIGSTOP faults: seconds before SIGCONT; slow_executor: seconds slowed
    direction: str = ""  # scale: "out" (an executor added) or "in" (one decommissioned)


def plan_faults(seed: int, kinds: tuple[str, ...] = ("kill_executor",), count: int = 1, start: float = 1.5,
                spacing: float = 2.5, death_budget: float = 0.4, slow_for: float = 20.0) -> list[Fault]:
    """`count` faults drawn from `kinds`, the first `start` seconds into the stream and the next
    ones `spacing` seconds apart (with jitter), so each has time to be recovered from (after a
    slow_executor fault, `spacing` after its `slow_for` seconds are over)."""
    unknown = set(kinds) - set(FAULT_KINDS)
    if unknown:
        raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {', '.join(FAULT_KINDS)}")
    if not kinds or count < 1:
        raise ValueError("a plan needs at least one fault kind and one fault")
    rng = random.Random(seed)
    faults = []
    at_least = start
    for _ in range(count):
        kind = rng.choice(kinds)
        at = at_least + rng.uniform(0, spacing / 4)
        duration, direction = 0.0, ""
        if kind == "scale":
            direction = rng.choice(("out", "in"))
        elif kind == "stop_executor":
            duration = death_budget * rng.uniform(3, 5)
        elif kind == "straggler":
            duration = death_budget * rng.uniform(0.2, 0.5)
        elif kind == "slow_executor":
            duration = slow_for
        faults.append(Fault(kind, round(at, 3), rng.randrange(1 << 16), round(duration, 3), direction))
        at_least = start + len(faults) * spacing + (sum(f.duration for f in faults if f.kind == "slow_executor"))
    return faults
