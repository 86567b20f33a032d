"""Local cluster work directories (`<tmp>/squall-local-*`): service logs, ready files, checkpoints.

A cluster removes its directory when it closes, but a driver killed with SIGKILL cannot. So each
directory records its owner (the driver's pid and, on Linux, that process's start time, so that a
reused pid is not mistaken for the owner), and a new local cluster removes the directories whose
owner is gone. It removes only directories named like ours, owned by the same user, with an owner
record from this host, whose owner process is dead: never a live cluster's, never one still being
created, and never one made on another host (or container) sharing the temp directory, whose
process ids mean nothing here.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path

from squall.driver_log import driver_log

PREFIX = "squall-local-"
OWNER_FILE = "owner.json"

log = driver_log("workdirs")


def create_workdir() -> Path:
    """A new work directory under the temp directory, recording this process as its owner."""
    workdir = Path(tempfile.mkdtemp(prefix=PREFIX))
    owner = {"pid": os.getpid(), "started": process_start_time(os.getpid()), "host": socket.gethostname()}
    tmp = workdir / f".{OWNER_FILE}.tmp"
    tmp.write_text(json.dumps(owner))
    tmp.replace(workdir / OWNER_FILE)  # whole or absent: a half-written record is never read
    return workdir


def remove_orphaned_workdirs(root: str | os.PathLike[str] | None = None) -> list[Path]:
    """Remove the work directories under `root` (default: the temp directory) whose owner process
    is dead; returns those removed. Never raises: a directory it cannot judge is left alone."""
    removed = []
    base = Path(root if root is not None else tempfile.gettempdir())
    try:
        entries = [e for e in os.scandir(base) if e.name.startswith(PREFIX)]
    except OSError:
        return []
    for entry in entries:
        try:
            if not entry.is_dir(follow_symlinks=False) or entry.stat(follow_symlinks=False).st_uid != os.getuid():
                continue
            owner = json.loads((Path(entry.path) / OWNER_FILE).read_text())
            pid, started, host = int(owner["pid"]), owner.get("started"), owner.get("host")
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue  # no owner record (yet, or from an older version): not ours to judge
        if host != socket.gethostname():
            continue  # its pid is another host's
        if process_alive(pid, started):
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        removed.append(Path(entry.path))
        log.info("orphaned_workdir_removed", workdir=entry.path, owner_pid=pid)
    return removed


def process_alive(pid: int, started: int | None = None) -> bool:
    """Whether process `pid` runs and, when `started` is given and known here, is the process that
    started then (not a later one given the same pid). A zombie counts as dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, another user's
    stat = _proc_stat(pid)
    if stat is None:
        return True  # no /proc here: the pid is all there is to go by
    state, start_time = stat
    if state == "Z":
        return False
    return started is None or start_time == started


def process_start_time(pid: int) -> int | None:
    """When process `pid` started, in clock ticks since boot (Linux); None where unknown."""
    stat = _proc_stat(pid)
    return stat[1] if stat is not None else None


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, start time) from /proc/<pid>/stat, or None (not Linux, or the process is gone)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces and ")"
    return fields[0], int(fields[19])  # fields 3 (state) and 22 (starttime) of proc(5)
