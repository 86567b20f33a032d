"""What one executor holds of the plans it was sent: stage specs and the code they use.

The scheduler sends an executor only the stage specs and code it lacks, so it must know what the
executor holds, and the executor must not hold everything forever: a stream whose stages change
with every batch (a source stage names its batch) would add a spec per batch, for weeks. So the
scheduler keeps the specs it sent in least-recently-used order and, past `capacity`, tells the
executor with its next launch to forget the oldest ones that no job in flight uses, along with
code no remaining spec uses. The scheduler decides and the executor follows, in message order on
one connection, so both always agree: an evicted stage that comes back is sent again (a miss is
slower, never wrong). Pure: no sockets.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass

from squall.common.plan import StageSpec


@dataclass(frozen=True)
class Shipment:
    """What a launch carries of the plan: specs and code the executor lacks, and what to forget."""

    stages: dict[str, StageSpec]
    code: dict[str, bytes]
    forget_stages: list[str]
    forget_code: list[str]


class ShippedPlan:
    def __init__(self) -> None:
        self.stages: OrderedDict[str, tuple[str, ...]] = OrderedDict()  # stage key -> its code keys, oldest use first
        self.code_uses: Counter[str] = Counter()  # code key -> how many held stages use it

    def __len__(self) -> int:
        return len(self.stages)

    def ship(self, stage_keys: Set[str], specs: Mapping[str, StageSpec],
             code_store: Mapping[str, bytes]) -> tuple[dict[str, StageSpec], dict[str, bytes]]:
        """The specs and code the executor needs for `stage_keys` and lacks; all of them count as
        used now."""
        stages: dict[str, StageSpec] = {}
        code: dict[str, bytes] = {}
        for key in sorted(stage_keys):
            if key in self.stages:
                self.stages.move_to_end(key)
                continue
            stages[key] = specs[key]
            code_keys = tuple(dict.fromkeys(specs[key].code_keys()))
            for code_key in code_keys:
                if self.code_uses[code_key] == 0:
                    code[code_key] = code_store[code_key]
                self.code_uses[code_key] += 1
            self.stages[key] = code_keys
        return stages, code

    def evict(self, capacity: int, in_use: Set[str]) -> tuple[list[str], list[str]]:
        """Forget the least recently used specs past `capacity` that are not `in_use`; returns the
        stage keys and code keys the executor must forget."""
        excess = len(self.stages) - capacity
        if excess <= 0:
            return [], []
        stages = [key for key in self.stages if key not in in_use][:excess]
        code: list[str] = []
        for key in stages:
            for code_key in self.stages.pop(key):
                self.code_uses[code_key] -= 1
                if self.code_uses[code_key] == 0:
                    del self.code_uses[code_key]
                    code.append(code_key)
        return stages, code


# What the scheduler lends each mode to fill a launch: (what the executor holds, the stage keys
# it is to run, their specs) -> what to send it, and what it is to forget.
Ship = Callable[[ShippedPlan, set[str], dict[str, StageSpec]], Shipment]
