"""Plots for the benchmarks' --plot option: matplotlib (the `plot` extra) without a display."""

from __future__ import annotations

from typing import Any


def pyplot(path: str) -> Any:
    """matplotlib.pyplot on the file-only Agg backend, or None (saying so) when the plot extra is
    not installed and `path` will not be drawn."""
    try:
        import matplotlib
    except ImportError:
        print(f"\nno plot: matplotlib is not installed (pip install -e '.[plot]'), so {path} was not drawn")
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
