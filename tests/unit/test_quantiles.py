"""squall.common.quantiles.quantile: the one quantile every reported p50/p90/p99 uses."""

from __future__ import annotations

import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st
from squall.common.quantiles import quantile


def test_interpolates_linearly_between_the_closest_ranks() -> None:
    one_to_hundred = [float(x) for x in range(100, 0, -1)]  # any order
    assert quantile(one_to_hundred, 0.5) == pytest.approx(50.5)
    assert quantile(one_to_hundred, 0.99) == pytest.approx(99.01)
    assert quantile(one_to_hundred, 0.9) == pytest.approx(90.1)
    assert quantile([0.1, 0.2, 0.3, 0.4], 0.5) == pytest.approx(0.25)  # not a sample: between two
    assert quantile(one_to_hundred, 0.0) == 1.0 and quantile(one_to_hundred, 1.0) == 100.0
    assert quantile([2.0], 0.99) == 2.0


def test_refuses_no_values_and_a_q_outside_0_to_1() -> None:
    with pytest.raises(ValueError, match="no values"):
        quantile([], 0.5)
    for q in (-0.01, 1.01, 99):
        with pytest.raises(ValueError, match="between 0 and 1"):
            quantile([1.0], q)


@given(st.lists(st.floats(min_value=-1e6, max_value=1e6), min_size=2, max_size=50))
def test_agrees_with_the_standard_librarys_inclusive_quantiles_and_median(values: list[float]) -> None:
    deciles = statistics.quantiles(values, n=10, method="inclusive")
    for tenth, expected in enumerate(deciles, start=1):
        assert quantile(values, tenth / 10) == pytest.approx(expected, abs=1e-6)
    assert quantile(values, 0.5) == pytest.approx(statistics.median(values), abs=1e-6)
