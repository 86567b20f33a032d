"""squall.services.scheduler.shipped: what an executor holds of the plans, bounded, evicting the
least recently used specs that no job in flight uses, and code only once no held spec uses it."""

from __future__ import annotations

from squall.common.plan import RangeSource, ResultWrite, StageSpec
from squall.services.scheduler.shipped import ShippedPlan

CODE = {"f": b"f-code", "g": b"g-code", "h": b"h-code"}


def spec(start: int, *code: str) -> StageSpec:
    return StageSpec(partitions=1, input=RangeSource(start, start + 10, 1, 1), ops=list(code), output=ResultWrite())


def specs(*items: StageSpec) -> dict[str, StageSpec]:
    return {s.key(): s for s in items}


def test_only_what_the_executor_lacks_is_shipped() -> None:
    held = ShippedPlan()
    a, b = spec(0, "f"), spec(10, "f", "g")
    stages, code = held.ship({a.key()}, specs(a), CODE)
    assert stages == {a.key(): a} and code == {"f": b"f-code"}
    stages, code = held.ship({a.key(), b.key()}, specs(a, b), CODE)
    assert stages == {b.key(): b} and code == {"g": b"g-code"}  # f is there already
    assert held.ship({a.key(), b.key()}, specs(a, b), CODE) == ({}, {})


def test_past_capacity_the_least_recently_used_specs_not_in_use_are_forgotten_with_their_code() -> None:
    held = ShippedPlan()
    batches = [spec(10 * b, "f", "g") for b in range(6)]
    held.ship({batches[0].key()}, specs(batches[0]), CODE)
    held.ship({batches[1].key()}, specs(batches[1]), CODE)
    held.ship({batches[0].key()}, specs(batches[0]), CODE)  # batch 0 used again: now the newest
    for s in batches[2:]:
        held.ship({s.key()}, specs(s), CODE)
    in_use = {batches[2].key()}  # a job in flight still uses batch 2's spec
    stages, code = held.evict(capacity=2, in_use=in_use)
    assert stages == [batches[1].key(), batches[0].key(), batches[3].key(), batches[4].key()]  # oldest use first
    assert list(held.stages) == [batches[2].key(), batches[5].key()]
    assert code == []  # f and g are still used by the specs held


def test_code_is_forgotten_once_no_held_spec_uses_it_and_shipped_again_when_needed() -> None:
    held = ShippedPlan()
    old, new = spec(0, "h"), spec(10, "f")
    held.ship({old.key()}, specs(old), CODE)
    held.ship({new.key()}, specs(new), CODE)
    assert held.evict(capacity=1, in_use=set()) == ([old.key()], ["h"])
    assert held.evict(capacity=1, in_use=set()) == ([], [])  # within capacity
    stages, code = held.ship({old.key()}, specs(old), CODE)  # a miss is slower, never wrong
    assert stages == {old.key(): old} and code == {"h": b"h-code"}


def test_specs_in_use_are_kept_even_past_capacity() -> None:
    held = ShippedPlan()
    batches = [spec(10 * b, "f") for b in range(3)]
    for s in batches:
        held.ship({s.key()}, specs(s), CODE)
    stages, code = held.evict(capacity=1, in_use={s.key() for s in batches})
    assert (stages, code) == ([], []) and len(held) == 3
