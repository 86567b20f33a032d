"""The lines every benchmark prints above its table: the machine, the command, the date and the
settings that shape the figures, so that a table can be reproduced and compared."""

from __future__ import annotations

import os
import platform
import shlex
import sys
from datetime import datetime, timezone

from squall import Settings


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_gib() -> float | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return None


def header(module: str, argv: list[str] | None = None) -> str:
    """`module` is the benchmark's module name (bench.ysb); argv its arguments (default: sys.argv[1:])."""
    args = sys.argv[1:] if argv is None else argv
    memory = memory_gib()
    settings = Settings.from_env()
    return "\n".join([
        f"machine: {os.cpu_count()} cores ({cpu_model()}), {f'{memory:.0f} GiB, ' if memory else ''}"
        f"{platform.system()} {platform.release()}, {platform.python_implementation()} {platform.python_version()}",
        f"command: python -m {module} {shlex.join(args)}".rstrip(),
        f"date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; CurveZMQ {'off' if settings.plaintext else 'on'}, "
        f"map-output checkpoints {'on' if settings.checkpoint_map_outputs else 'off'}, "
        f"keyed state checkpointed every {settings.checkpoint_every_groups} groups; "
        f"preemption {settings.preemption}, batch_lane {settings.batch_lane}, batch_nice {settings.batch_nice}, "
        f"batch_sched_idle {settings.batch_sched_idle}",
    ])
