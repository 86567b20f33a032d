"""The YSB job on Bytewax (bench.ysb_bytewax) counts every window exactly: a short low-rate run of
four real Bytewax workers, compared with squall.ysb.expected_counts over the same events."""

from __future__ import annotations

import multiprocessing

import pytest

pytest.importorskip("bytewax", reason="bytewax is not installed (pip install -e '.[bench]')")

from bench.ysb_bytewax import check_bytewax_ysb  # noqa: E402 - only once bytewax is known to be there


@pytest.mark.timeout(120)
def test_bytewax_counts_every_window_exactly() -> None:
    result = check_bytewax_ysb(rate=2000, seconds=8.0, window=2.0)

    assert "skipped" not in result, result.get("skipped")
    assert result["late"] == 0
    assert result["got"] == result["expected"]
    assert len(result["expected"]) >= 300  # (campaign, window) counts: 100 campaigns over the run's 2 s windows
    assert not multiprocessing.active_children()  # the Bytewax process is gone
