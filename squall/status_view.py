"""The cluster snapshot as rich renderables: what `squall status` prints and `squall top` refreshes.

Pure: a snapshot dict (the scheduler's, docs/observability.md gives its fields) in, tables out;
nothing here talks to a cluster or a terminal. Every field the snapshot defines is read with a
default, so a snapshot from a scheduler that does not know a field yet still renders.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

Snapshot = Mapping[str, Any]

RECENT_EVENTS = 15  # the status page shows the newest this-many events, newest last


def render(snapshot: Snapshot) -> Group:
    """Everything: the scheduler's header, then executors, streams, runs in flight, persisted
    datasets and recent events."""
    return Group(
        header(snapshot),
        executors_table(snapshot),
        streams_table(snapshot),
        runs_table(snapshot),
        persisted_table(snapshot),
        events_table(snapshot),
    )


def header(snapshot: Snapshot) -> Text:
    """Where the scheduler is, how long it has run, and where its dashboard and metrics are."""
    scheduler = snapshot.get("scheduler", {})
    taken = snapshot.get("time", 0.0)
    text = Text()
    text.append("Squall scheduler ", style="bold")
    text.append(scheduler.get("address", "") or "?", style="bold cyan")
    text.append(f"  up {duration(scheduler.get('uptime', 0.0))}")
    if taken:
        text.append(f"  at {clock(taken)}")
    text.append("\n  dashboard: ")
    text.append(scheduler.get("dashboard", "") or "off", style="underline" if scheduler.get("dashboard") else "dim")
    text.append("\n  metrics:   ")
    text.append(scheduler.get("metrics", "") or "off", style="underline" if scheduler.get("metrics") else "dim")
    return text


def executors_table(snapshot: Snapshot) -> Table:
    executors: Sequence[Mapping[str, Any]] = snapshot.get("executors", [])
    table = Table(title=f"Executors ({len(executors)})", title_justify="left", expand=False)
    table.add_column("id", style="cyan", no_wrap=True)
    table.add_column("address", no_wrap=True)
    for name in ("slots", "latency", "batch", "suspended"):
        table.add_column(name, justify="right")
    table.add_column("memory", justify="right")
    table.add_column("persisted", justify="right")
    table.add_column("stalled", justify="center")
    table.add_column("last beat", justify="right")
    for e in sorted(executors, key=lambda e: str(e.get("id", ""))):
        stalled = bool(e.get("stalled", False))
        table.add_row(
            str(e.get("id", "")),
            str(e.get("address", "")),
            str(e.get("slots", 0)),
            str(e.get("latency_tasks", 0)),
            str(e.get("batch_tasks", 0)),
            str(e.get("suspended_tasks", 0)),
            size(e.get("memory_bytes", 0)),
            size(e.get("persisted_bytes", 0)),
            Text("STALLED", style="bold red") if stalled else Text("-", style="dim"),
            f"{duration(e.get('last_beat_age', 0.0))} ago",
        )
    if not executors:
        table.caption = "no executors have joined"
    return table


def streams_table(snapshot: Snapshot) -> Table:
    streams: Sequence[Mapping[str, Any]] = snapshot.get("streams", [])
    table = Table(title=f"Streams ({len(streams)})", title_justify="left")
    table.add_column("stream", style="cyan", no_wrap=True)
    for name in ("batches", "last batch", "input rate", "processing rate", "latency p50", "latency p99", "group size"):
        table.add_column(name, justify="right")
    for s in streams:
        table.add_row(
            str(s.get("run", "")),
            str(s.get("batches", 0)),
            str(s.get("last_batch", 0)),
            rate(s.get("input_rate", 0.0)),
            rate(s.get("processing_rate", 0.0)),
            duration(s.get("latency_p50", 0.0)),
            duration(s.get("latency_p99", 0.0)),
            str(s.get("group_size", 0)),
        )
    if not streams:
        table.caption = "no streams"
    return table


def runs_table(snapshot: Snapshot) -> Table:
    runs: Sequence[Mapping[str, Any]] = snapshot.get("runs", [])
    now = snapshot.get("time", 0.0)
    table = Table(title=f"Runs in flight ({len(runs)})", title_justify="left")
    table.add_column("run", style="cyan", no_wrap=True)
    table.add_column("kind")
    table.add_column("priority")
    table.add_column("jobs", justify="right")
    table.add_column("stages (tasks done/total)")
    table.add_column("running", justify="right")
    for r in runs:
        started = r.get("started", 0.0)
        table.add_row(
            str(r.get("run", "")),
            str(r.get("kind", "")),
            str(r.get("priority", "")),
            f"{r.get('jobs_done', 0)}/{r.get('jobs', 0)}",
            stages(r.get("stages", [])),
            duration(now - started) if started and now else "-",
        )
    if not runs:
        table.caption = "no runs in flight"
    return table


def persisted_table(snapshot: Snapshot) -> Table:
    persisted: Sequence[Mapping[str, Any]] = snapshot.get("persisted", [])
    table = Table(title=f"Persisted datasets ({len(persisted)})", title_justify="left")
    table.add_column("dataset", style="cyan", no_wrap=True)
    table.add_column("executors", justify="right")
    table.add_column("size", justify="right")
    for p in persisted:
        table.add_row(str(p.get("dataset", "")), str(p.get("executors", 0)), size(p.get("bytes", 0)))
    if not persisted:
        table.caption = "nothing persisted"
    return table


def events_table(snapshot: Snapshot, limit: int = RECENT_EVENTS) -> Table:
    events: Sequence[Mapping[str, Any]] = snapshot.get("events", [])
    shown = sorted(events, key=lambda e: float(e.get("t", 0.0)))[-limit:]
    table = Table(title=f"Recent events ({len(shown)} of {len(events)})", title_justify="left")
    table.add_column("time", no_wrap=True)
    table.add_column("event", style="magenta", no_wrap=True)
    table.add_column("detail")
    table.add_column("took", justify="right")
    for e in shown:
        seconds = e.get("seconds")
        kind = str(e.get("kind", ""))
        style = "red" if kind in ("executor_lost", "job_failed") else ""
        table.add_row(clock(e.get("t", 0.0)), Text(kind, style=style), str(e.get("detail", "")),
                      duration(seconds) if seconds is not None else "")
    if not events:
        table.caption = "no events yet"
    return table


# --- formatting ----------------------------------------------------------------------------------


def stages(entries: Sequence[Mapping[str, Any]]) -> str:
    """A run's stages as "stage 0: 8/8, stage 1: 3/8" (tasks done of total)."""
    if not entries:
        return "-"
    return ", ".join(f"stage {s.get('stage', '?')}: {s.get('done', 0)}/{s.get('tasks', 0)}" for s in entries)


def size(n: float) -> str:
    """Bytes for people: 0 B, 512 B, 1.5 KiB, 320.0 MiB."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def duration(seconds: float) -> str:
    """A duration at a precision that fits it: 850 us, 12.3 ms, 4.20 s, 3m05s, 2h07m."""
    s = max(0.0, float(seconds))
    if s < 1e-3:
        return f"{s * 1e6:.0f} us"
    if s < 1.0:
        return f"{s * 1e3:.1f} ms"
    if s < 60.0:
        return f"{s:.2f} s"
    if s < 3600.0:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"


def rate(per_second: float) -> str:
    """Records a second, with thousands separators: "12,345/s"."""
    return f"{float(per_second):,.0f}/s"


def clock(epoch: float) -> str:
    """An epoch time as this machine's local wall clock, to the millisecond: "14:03:07.125"."""
    if not epoch:
        return "-"
    whole = time.localtime(epoch)
    return time.strftime("%H:%M:%S", whole) + f".{int(epoch * 1000) % 1000:03d}"
