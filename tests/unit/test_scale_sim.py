"""The simulation behind bench.scale: real cores on a simulated clock give every micro-batch's
real result, in every mode, and its figures say what the modes are known to do."""

from __future__ import annotations

import pytest

from bench import scale
from bench.scale_sim import MODES, Network, Shape, Simulation

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("executors", [4, 16])
def test_every_mode_gives_every_batch_its_result(executors: int) -> None:
    sim = Simulation(Shape(executors))
    sim.run("pre", 2, measure=False)
    figures = {mode: sim.run(mode, 10) for mode in MODES}
    for mode, run in figures.items():
        assert run.results == [sim.expected()] * 10, mode
        assert run.scheduler_seconds > 0 and run.simulated_seconds > 0, mode
    # BSP: the scheduler hears of every task; pre-scheduled groups: one report per executor per group.
    per_batch = {mode: (run.scheduler_in.messages + run.scheduler_out.messages) / run.batches for mode, run in figures.items()}
    assert per_batch["bsp"] > per_batch["pre"] > per_batch["drizzle10"]
    assert figures["bsp"].calls["TaskFinished"] == 10 * 3 * executors  # 2 maps and 1 reducer per executor a batch
    assert "TaskFinished" not in figures["drizzle10"].calls


def test_the_network_model_delays_the_run() -> None:
    fast = Simulation(Shape(4), Network(latency=1e-6, bandwidth=1e12)).run("pre", 5)
    slow = Simulation(Shape(4), Network(latency=5e-3, bandwidth=1e12)).run("pre", 5)
    # Two batches in flight at a time, each at least a launch, a push, a result and a report:
    # at least a latency per batch more.
    assert slow.simulated_seconds - fast.simulated_seconds > 5 * (5e-3 - 1e-6)


def test_the_budget_bounds_large_runs_and_keeps_small_groups_whole() -> None:
    assert scale.batches_for("bsp", Shape(1000), 100, 1_000_000) == 1
    assert scale.batches_for("drizzle10", Shape(128), 100, 100_000) == 10  # a whole group within 4 budgets
    assert scale.batches_for("drizzle100", Shape(16), 100, 1_000) == 100  # per_batch reducers: 32 pushes a batch
    assert scale.batches_for("pre", Shape(4), 100, 1_000_000) == 100


def test_the_cli_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert scale.main(["--executors", "4", "--modes", "bsp", "drizzle10", "--batches", "10", "--warmup", "1"]) == 0
    out = capsys.readouterr().out
    assert "command: python -m bench.scale --executors 4" in out
    assert "drizzle10       4      10" in out and "bsp             4      10" in out


def test_a_groups_scheduler_costs_are_measured_without_its_data_plane() -> None:
    sim = Simulation(Shape(16))
    costs = sim.group_costs(20)
    assert costs.placing > 0 and costs.group_done > 0 and costs.tick > 0 and costs.heartbeat > 0
    assert not sim.scheduler.runs  # every executor's report ended the group, and with it the run
