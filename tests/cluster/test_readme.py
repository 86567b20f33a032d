"""The README's examples run as written, and print what their comments say."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"

pytestmark = pytest.mark.timeout(120)


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_the_first_example_prints_what_it_says() -> None:
    first = python_blocks()[0]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(first, "README.md", "exec"), {"__name__": "readme"})
    assert out.getvalue().splitlines() == ["[('a', 3), ('is', 2), ('rose', 3)]", "142858"]


def test_the_stream_example_writes_windows(tmp_path: Path) -> None:
    stream_block = python_blocks()[1]
    assert '"/tmp/counts"' in stream_block
    code = "import squall\n" + stream_block.replace('"/tmp/counts"', repr(str(tmp_path)))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    assert "latency" in out.getvalue()
    assert any(tmp_path.iterdir()), "the stream wrote no batch"


def test_the_priorities_example_runs_a_stream_beside_a_batch_job() -> None:
    block = python_blocks()[2]
    assert 'priority="latency"' in block
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile("import operator\nimport squall\nfrom squall import sources\n" + block, "README.md", "exec"),
             {"__name__": "readme"})
    assert out.getvalue().splitlines() == ["True True"]
