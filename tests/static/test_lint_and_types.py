"""Lint (ruff) and static types (mypy, strict) over the installed code: common/, services/ and
squall/. They run with the tests so that a change cannot land with either failing.

The repository keeps common/ and services/ at its top level while they install as squall.common
and squall.services; mypy resolves imports by directory, so it checks a tree of links laid out as
the installed package is."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIRS = {"common": ROOT / "common", "services": ROOT / "services"}


def installed_layout(into: Path) -> Path:
    """`into`/squall: links to squall/'s entries, plus common and services beside them."""
    package = into / "squall"
    package.mkdir(parents=True)
    for entry in (ROOT / "squall").iterdir():
        if entry.name != "__pycache__":
            (package / entry.name).symlink_to(entry)
    for name, target in PACKAGE_DIRS.items():
        (package / name).symlink_to(target)
    return into


@pytest.mark.timeout(180)
def test_mypy_strict(tmp_path: Path) -> None:
    tree = installed_layout(tmp_path / "tree")
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), "--cache-dir", str(tmp_path / "cache"), "-p", "squall"],
        cwd=tree, capture_output=True, text=True, env={**os.environ, "MYPYPATH": ""},
    )
    assert result.returncode == 0, f"mypy found type errors (paths as installed: squall/common = common/):\n{result.stdout}{result.stderr}"


@pytest.mark.timeout(120)
def test_ruff() -> None:
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, f"ruff check . failed:\n{result.stdout}{result.stderr}"
