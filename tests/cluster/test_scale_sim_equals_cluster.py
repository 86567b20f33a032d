"""The simulation behind bench.scale gives the results a real cluster gives: the same two-stage
micro-batches (bench.microbench's plan, 2 maps and 1 reducer per executor) run on a LocalCluster
of 4 executors and on the simulated cores of 4 executors, in Drizzle groups and in BSP, batch by
batch."""

from __future__ import annotations

from typing import Any

import pytest

from bench.microbench import batch_dataset
from bench.scale_sim import NUMBERS_PER_MAP, Shape, Simulation
from bench.workloads import TWO_STAGE
from squall import LocalCluster
from tests.conftest import fast_settings

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]

EXECUTORS, BATCHES = 4, 5
MODES: list[dict[str, Any]] = [dict(preschedule=True, group_size=5), dict(preschedule=False, group_size=1)]


def test_simulated_results_equal_a_real_clusters() -> None:
    shape = Shape(EXECUTORS)
    with LocalCluster(executors=EXECUTORS, settings=fast_settings()) as cluster, cluster.connect() as ctx:
        real = {}
        for mode in MODES:
            datasets = [batch_dataset(ctx, TWO_STAGE, shape.maps, shape.reducers, NUMBERS_PER_MAP) for _ in range(BATCHES)]
            real[str(mode)] = [sorted(records) for records in ctx.run_jobs(datasets, **mode)]
    sim = Simulation(shape)
    for mode in MODES:
        simulated = sim.run(mode, BATCHES).results
        assert simulated == real[str(mode)], f"{mode}: the simulation gave {simulated}, the cluster {real[str(mode)]}"
        assert simulated[0] == sim.expected()  # and both are the job's result, not the same mistake twice
        assert len({len(records) for records in simulated}) == 1 and len(simulated[0]) == shape.reducers
