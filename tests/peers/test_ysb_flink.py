"""The YSB job on PyFlink (bench.ysb_flink) counts exactly what the plain-Python reference counts,
and leaves no Flink process behind."""

from __future__ import annotations

import pytest

pytest.importorskip("pyflink")

from bench.ysb_flink import _descendants, run_flink_ysb  # noqa: E402 - after the skip


@pytest.mark.timeout(240)
def test_flink_ysb_counts_are_exact_and_no_process_is_left() -> None:
    import os

    before = set(_descendants(os.getpid()))
    result = run_flink_ysb(2000, seconds=8.0, window=2.0, check=True)
    assert not result.get("skipped"), result.get("skipped")
    assert result["correct"] is True
    assert result["checked_windows"] >= 2
    assert result["windows"] >= 1 and result["unfinished"] == 0
    assert result["achieved"] > 0.9 * 2000
    assert set(_descendants(os.getpid())) <= before
