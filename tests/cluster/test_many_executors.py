"""32 real executor processes on this machine (bench.many_executors): the two-stage
micro-benchmark exact in Drizzle mode (`python -m bench.many_executors` adds BSP), and a stateful
stream exact across the SIGKILL of an executor; the scheduler declares that one dead and no other."""

from __future__ import annotations

import pytest

from bench.many_executors import MODES, format_report, run

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]


def test_thirty_two_executors_run_both_jobs_exactly_and_only_the_killed_one_is_declared_dead() -> None:
    drizzle = [(name, mode) for name, mode in MODES if mode["preschedule"]]
    report = run(executors=32, batches=5, stream_batches=16, modes=drizzle)
    print(format_report(report))
    assert report.stream_exact, format_report(report)
    assert report.lost == [report.killed], format_report(report)
    assert set(report.batch_ms) == {"Drizzle, group 10"}
