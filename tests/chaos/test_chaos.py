"""The failure-injection harness, a short plan (CI): real processes killed and stopped while a
stateful stream runs; the output must equal plain Python exactly, with no hang. `squall chaos`
runs long soaks of the same trials."""

from __future__ import annotations

import pytest

from squall.chaos import FAULT_KINDS, plan_faults, run_trial
from squall.chaos.report import summary

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]


@pytest.mark.parametrize(
    "seed,kinds,faults",
    [
        (101, ("kill_executor",), 1),
        (102, ("kill_at_dispatch", "kill_mid_shuffle"), 2),
        (103, ("kill_mid_checkpoint",), 1),
        (104, ("stop_executor", "straggler"), 2),
        (105, ("kill_shuffle_meta",), 1),
        (106, ("kill_scheduler",), 1),
        (107, ("scale",), 3),
    ],
)
def test_a_short_seeded_plan_changes_nothing_in_the_output(seed: int, kinds: tuple[str, ...], faults: int) -> None:
    result = run_trial(seed, kinds, faults, after=2.0)
    assert not result.hung, f"seed {seed}: the streams hung"
    assert not result.error, f"seed {seed}: {result.error}"
    assert result.differences == [], f"seed {seed}: {result.differences}"
    assert [f.kind for f in result.faults] == [f.kind for f in plan_faults(seed, kinds, faults)]
    assert result.batches >= 20
    for fault in result.faults:
        if fault.kind.startswith("kill_") and fault.kind not in ("kill_shuffle_meta", "kill_scheduler"):
            assert fault.detection is not None and fault.detection < 0.5, fault  # a dropped connection, not heartbeats
        if fault.kind == "stop_executor":
            assert fault.detection is not None and fault.detection < 1.5, fault  # the heartbeat budget
        if fault.kind == "kill_mid_checkpoint":
            assert fault.note == "", fault  # a writer was caught with a checkpoint half written
        if fault.kind == "straggler":
            assert fault.detection is None, fault  # too short to be declared dead: nothing replayed
        if fault.kind == "scale":
            assert fault.detection is None and fault.survivors is None, fault  # no loss, no replay
    assert result.graceless == [], f"seed {seed}: {result.graceless}"
    assert "0 outputs differing" in summary([result]) and "0 hangs" in summary([result])


def test_plans_are_reproducible_and_refuse_unknown_faults() -> None:
    assert plan_faults(7, FAULT_KINDS, 5) == plan_faults(7, FAULT_KINDS, 5)
    assert plan_faults(7, FAULT_KINDS, 5) != plan_faults(8, FAULT_KINDS, 5)
    with pytest.raises(ValueError, match="unknown fault"):
        plan_faults(1, ("kill_everything",))
