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


def block_with(text: str) -> str:
    """The README's one Python block that holds `text`."""
    (found,) = [b for b in python_blocks() if text in b]
    return found


def test_the_first_example_prints_what_it_says() -> None:
    first = python_blocks()[0]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(first, "README.md", "exec"), {"__name__": "readme"})
    assert out.getvalue().splitlines() == ["[('a', 3), ('is', 2), ('rose', 3)]", "142858"]


def test_the_stream_example_writes_windows(tmp_path: Path) -> None:
    stream_block = block_with("DirectorySink")
    assert '"/tmp/counts"' in stream_block
    code = "import squall\n" + stream_block.replace('"/tmp/counts"', repr(str(tmp_path)))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    assert "latency" in out.getvalue()
    assert any(tmp_path.iterdir()), "the stream wrote no batch"


def test_the_priorities_example_runs_a_stream_beside_a_batch_job() -> None:
    block = block_with('priority="latency"')
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile("import operator\nimport squall\nfrom squall import sources\n" + block, "README.md", "exec"),
             {"__name__": "readme"})
    assert out.getvalue().splitlines() == ["True True"]


def test_the_iterative_example_gives_pythons_pagerank() -> None:
    block = block_with("# PageRank")
    edges = sorted({(n, (n * 7 + k) % 40) for n in range(40) for k in (1, 5, 13)})
    scope: dict[str, object] = {"__name__": "readme", "edges": edges}
    code = "import operator\nimport squall\nwith squall.LocalCluster(executors=2) as cluster, cluster.connect() as ctx:\n"
    code += "".join(f"    {line}\n" for line in block.splitlines()) + "    result = dict(ranks.collect())\n"
    exec(compile(code, "README.md", "exec"), scope)
    links: dict[int, list[int]] = {}
    for a, b in edges:
        links.setdefault(a, []).append(b)
    ranks = {n: 1.0 for n in links}
    for _ in range(100):
        contribs: dict[int, float] = {}
        for n, targets in links.items():
            for t in targets:
                contribs[t] = contribs.get(t, 0.0) + ranks[n] / len(targets)
        ranks = {n: 0.15 + 0.85 * c for n, c in contribs.items()}
    result = scope["result"]
    assert isinstance(result, dict) and result.keys() == ranks.keys()
    assert all(abs(result[n] - ranks[n]) < 1e-9 for n in ranks)
