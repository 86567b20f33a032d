"""The wheel a user installs: only the `squall` package (services and common live under it), no
bench/, and a user's own `common.py` or `services/` beside their script shadows nothing.

Builds the wheel from this checkout, installs it into a fresh virtual environment (its
dependencies resolved by pip, as a user's would be) and runs a real job on a local cluster from a
directory that holds a `common.py` and a `services/` package of the user's.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(600)


def run(cmd: list[str], cwd: Path | None = None, timeout: float = 400) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Built from a copy of what the wheel is made of: setuptools leaves a build/ directory beside
    # the sources, and a stale one would put modules deleted since into the wheel.
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("squall", "common", "services"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    built = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(source)])
    assert built.returncode == 0, built.stdout + built.stderr
    (path,) = out.glob("squall-*.whl")
    return path


def test_the_wheel_holds_only_the_squall_package(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/", 1)[0] for name in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"squall"}, sorted(top)
    for module in ("squall/common/settings.py", "squall/services/executor/__main__.py",
                   "squall/services/scheduler/state.py", "squall/services/shuffle_meta/server.py", "squall/ysb.py",
                   "squall/py.typed", "squall/dashboard_assets/index.html", "squall/dashboard_assets/dashboard.js",
                   "squall/dashboard_assets/uPlot.iife.min.js", "squall/dashboard_assets/uPlot.LICENSE"):
        assert module in names


def test_a_users_common_py_does_not_shadow_squall(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    installed = run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(wheel)])
    assert installed.returncode == 0, installed.stdout + installed.stderr

    project = tmp_path / "project"
    (project / "services").mkdir(parents=True)
    (project / "common.py").write_text("raise ImportError('the user\\'s common.py was imported')\n")
    (project / "services" / "__init__.py").write_text("raise ImportError('the user\\'s services was imported')\n")
    (project / "job.py").write_text(textwrap.dedent("""
        import squall

        with squall.LocalCluster(executors=2) as cluster, cluster.connect() as ctx:
            print("count", ctx.range(1000, partitions=4).filter(lambda x: x % 7 == 0).count())
        print("squall from", squall.__file__)
        """))
    done = run([str(python), "job.py"], cwd=project, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "count 143" in done.stdout
    assert str(env_dir) in done.stdout  # the installed squall, not this checkout
    bench = run([str(python), "-c", "import bench"], cwd=tmp_path)
    assert bench.returncode != 0 and "No module named 'bench'" in bench.stderr
