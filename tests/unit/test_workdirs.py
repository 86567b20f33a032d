"""squall.workdirs: a local cluster's work directory records its owner, and only directories
whose owner is dead are removed."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from squall import workdirs


def workdir(root: Path, name: str, owner: dict[str, object] | None) -> Path:
    path = root / f"{workdirs.PREFIX}{name}"
    path.mkdir()
    (path / "scheduler.log").write_text("log")
    if owner is not None:
        (path / workdirs.OWNER_FILE).write_text(json.dumps(owner))
    return path


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=30)
    return proc.pid  # reaped: no process has it (until the pid is reused, which the start time covers)


def test_a_new_workdir_records_this_process_as_its_owner() -> None:
    path = workdirs.create_workdir()
    try:
        assert path.name.startswith(workdirs.PREFIX)
        owner = json.loads((path / workdirs.OWNER_FILE).read_text())
        assert owner["pid"] == os.getpid()
        assert workdirs.process_alive(owner["pid"], owner["started"])
    finally:
        for f in path.iterdir():
            f.unlink()
        path.rmdir()


def test_only_workdirs_whose_owner_is_dead_are_removed(tmp_path: Path) -> None:
    here = socket.gethostname()
    live = workdir(tmp_path, "live", {"pid": os.getpid(), "started": workdirs.process_start_time(os.getpid()), "host": here})
    dead = workdir(tmp_path, "dead", {"pid": dead_pid(), "started": None, "host": here})
    elsewhere = workdir(tmp_path, "elsewhere", {"pid": dead_pid(), "started": None, "host": f"not-{here}"})
    creating = workdir(tmp_path, "creating", None)  # its owner record is not written yet
    broken = workdir(tmp_path, "broken", None)
    (broken / workdirs.OWNER_FILE).write_text("{not json")
    other = tmp_path / "squall-checkpoints"
    other.mkdir()
    assert workdirs.remove_orphaned_workdirs(tmp_path) == [dead]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, elsewhere.name, creating.name, broken.name, other.name])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process start times come from /proc")
def test_a_workdir_whose_owner_pid_was_reused_by_another_process_is_removed(tmp_path: Path) -> None:
    started = workdirs.process_start_time(os.getpid())
    assert started is not None
    reused = workdir(tmp_path, "reused", {"pid": os.getpid(), "started": started - 1, "host": socket.gethostname()})
    assert workdirs.remove_orphaned_workdirs(tmp_path) == [reused]


def test_a_workdir_that_is_a_symlink_is_left_alone(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / workdirs.OWNER_FILE).write_text(json.dumps({"pid": dead_pid(), "started": None, "host": socket.gethostname()}))
    (tmp_path / f"{workdirs.PREFIX}link").symlink_to(target)
    assert workdirs.remove_orphaned_workdirs(tmp_path) == []
    assert (target / workdirs.OWNER_FILE).exists()
