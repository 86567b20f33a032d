"""Lint (ruff) and static types (mypy, strict) over the installed code: common/, services/ and
squall/. They run with the tests so that a change cannot land with either failing. mypy runs
once; its errors in common/ and squall/ fail one test, those in services/ another (expected to
fail while the services are restructured).

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


@pytest.fixture(scope="module")
def mypy_errors(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """mypy --strict over the installed layout: its error lines (paths as installed)."""
    work = tmp_path_factory.mktemp("mypy")
    tree = installed_layout(work / "tree")
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), "--cache-dir", str(work / "cache"), "-p", "squall"],
        cwd=tree, capture_output=True, text=True, env={**os.environ, "MYPYPATH": ""},
    )
    errors = [line for line in result.stdout.splitlines() if ": error: " in line]
    assert result.returncode == 0 or errors, f"mypy did not run:\n{result.stdout}{result.stderr}"
    return errors


@pytest.mark.timeout(180)
def test_mypy_strict(mypy_errors: list[str]) -> None:
    assert not mypy_errors, "mypy found type errors (paths as installed: squall/common = common/, squall/services = services/):\n" + "\n".join(mypy_errors)


@pytest.mark.timeout(120)
def test_ruff() -> None:
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, f"ruff check . failed:\n{result.stdout}{result.stderr}"
