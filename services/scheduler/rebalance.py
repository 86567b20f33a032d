"""Where keyed state partitions should live as executors come and go: pure decisions, no state.

A stateful stage's partitions are spread evenly over the executors that take work: each owns
the same number, give or take one. When executors join, the most loaded hand partitions to the
newcomers; when one leaves (decommission.py), its partitions go to the least loaded. Moves are
as few as that takes: an executor keeps its lowest-numbered partitions up to its quota, and the
quotas one above the floor go to the executors holding the most already (then to those owning
the fewest partitions of all states, so that several states do not pile onto the same ones).
"""

from __future__ import annotations

from collections.abc import Mapping

Move = tuple[int, str, str]  # (partition, old owner, new owner)


def balanced_moves(owners: Mapping[int, str], targets: list[str], leaving: set[str], balance: bool = True,
                   load: Mapping[str, int] | None = None) -> list[Move]:
    """The moves that leave the partitions in `owners` (partition -> executor) evenly spread over
    `targets`, the executors taking work. Every partition owned by a `leaving` executor moves;
    with `balance` off, only those do (each to the target owning fewest). Partitions owned by
    neither (an executor gone: recovery's business) stay out of it. `load`: partitions each
    executor owns over all states, which breaks ties. Sorted by partition."""
    if not targets:
        return []
    load = load or {}
    held: dict[str, list[int]] = {t: sorted(p for p, o in owners.items() if o == t) for t in sorted(targets)}
    pool = sorted(p for p, o in owners.items() if o in leaving and o not in held)
    if balance:
        quotas = _quotas(held, sum(map(len, held.values())) + len(pool), load)
        for target, partitions in held.items():
            pool += partitions[quotas[target]:]
            del partitions[quotas[target]:]
    else:
        quotas = {}
    moves: list[Move] = []
    for partition in sorted(pool):
        room = [t for t in held if len(held[t]) < quotas.get(t, len(owners))]
        target = min(room, key=lambda t: (len(held[t]), load.get(t, 0), t))
        held[target].append(partition)
        moves.append((partition, owners[partition], target))
    return moves


def _quotas(held: dict[str, list[int]], partitions: int, load: Mapping[str, int]) -> dict[str, int]:
    """How many partitions each target ends with: the floor, plus one for as many as the
    remainder, given to those holding the most now (fewest moves), then the least loaded."""
    floor, extra = divmod(partitions, len(held))
    ranked = sorted(held, key=lambda t: (-len(held[t]), load.get(t, 0), t))
    return {t: floor + (1 if i < extra else 0) for i, t in enumerate(ranked)}
