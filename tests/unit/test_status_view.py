"""squall/status_view.py: a snapshot written from its schema (docs/observability.md) rendered to
text, as `squall status` prints it."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console, RenderableType

from squall import status_view

NOW = 1_790_000_000.0


def snapshot() -> dict[str, Any]:
    return {
        "time": NOW,
        "scheduler": {"address": "tcp://127.0.0.1:7077", "uptime": 125.0, "dashboard": "http://127.0.0.1:8790/",
                      "metrics": "http://127.0.0.1:41000/metrics"},
        "executors": [
            {"id": "exec-b", "address": "tcp://127.0.0.1:5002", "metrics": "", "slots": 2, "latency_tasks": 1,
             "batch_tasks": 3, "suspended_tasks": 2, "memory_bytes": 300 * 1024 * 1024, "persisted_bytes": 1536,
             "stalled": True, "slowness": 4.0, "last_beat_age": 0.05},
            {"id": "exec-a", "address": "tcp://127.0.0.1:5001", "metrics": "", "slots": 2, "latency_tasks": 0,
             "batch_tasks": 0, "suspended_tasks": 0, "memory_bytes": 0, "persisted_bytes": 0,
             "stalled": False, "slowness": 1.0, "last_beat_age": 0.2},
        ],
        "streams": [{"run": "ab12cd34-1", "batches": 420, "last_batch": 419, "group_size": 8, "input_rate": 12345.6,
                     "processing_rate": 98765.0, "latency_p50": 0.0123, "latency_p99": 0.0456,
                     "points": [{"t": NOW - 0.1, "batch": 419, "latency": 0.012, "window_latency": None,
                                 "scheduling_delay": 0.001, "processing_time": 0.008, "input_records": 1200,
                                 "output_records": 10, "group_size": 8}]}],
        "runs": [{"run": "ab12cd34-7", "kind": "jobs", "priority": "batch", "jobs": 3, "jobs_done": 1,
                  "started": NOW - 4.2, "stages": [{"stage": 0, "tasks": 8, "done": 8}, {"stage": 1, "tasks": 4, "done": 1}]}],
        "persisted": [{"dataset": "ds-99", "executors": 2, "bytes": 2 * 1024 * 1024}],
        "events": [{"t": NOW - 30 + i, "kind": "executor_joined", "detail": f"exec-{i}", "seconds": None} for i in range(20)]
        + [{"t": NOW - 1.0, "kind": "recovered", "detail": "exec-x's work replayed", "seconds": 0.25}],
    }


def text(renderable: RenderableType) -> str:
    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(renderable)
    return console.file.getvalue()  # type: ignore[attr-defined]


def cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("│").split("│")]


def test_the_whole_view_shows_every_section_and_the_urls() -> None:
    out = text(status_view.render(snapshot()))
    for title in ("Executors (2)", "Streams (1)", "Runs in flight (1)", "Persisted datasets (1)", "Recent events"):
        assert title in out
    assert "tcp://127.0.0.1:7077" in out and "up 2m05s" in out
    assert "http://127.0.0.1:8790/" in out and "http://127.0.0.1:41000/metrics" in out


def test_executors_are_listed_by_id_with_their_tasks_memory_and_stall() -> None:
    lines = text(status_view.executors_table(snapshot())).splitlines()
    a = next(line for line in lines if "exec-a" in line)
    b = next(line for line in lines if "exec-b" in line)
    assert lines.index(a) < lines.index(b)  # sorted by id
    assert "STALLED" in b and "STALLED" not in a
    assert "300.0 MiB" in b and "1.5 KiB" in b and "50.0 ms ago" in b
    assert cells(b)[2:6] == ["2", "1", "3", "2"]  # slots, latency, batch, suspended tasks


def test_streams_show_rates_latency_percentiles_and_group_size() -> None:
    out = text(status_view.streams_table(snapshot()))
    row = next(line for line in out.splitlines() if "ab12cd34-1" in line)
    for cell in ("420", "419", "12,346/s", "98,765/s", "12.3 ms", "45.6 ms", "8"):
        assert cell in row, (cell, row)


def test_runs_show_jobs_and_tasks_done_per_stage() -> None:
    out = text(status_view.runs_table(snapshot()))
    row = next(line for line in out.splitlines() if "ab12cd34-7" in line)
    assert "jobs" in row and "batch" in row and "1/3" in row and "4.20 s" in row
    assert "stage 0: 8/8, stage 1: 1/4" in row


def test_recent_events_are_the_newest_with_their_times() -> None:
    out = text(status_view.events_table(snapshot(), limit=5))
    assert "(5 of 21)" in out
    assert "exec-19" in out and "exec-15" not in out  # only the newest
    assert "recovered" in out and "250.0 ms" in out
    assert status_view.clock(NOW - 1.0) in out


def test_an_empty_cluster_says_so_in_every_table() -> None:
    out = text(status_view.render({"time": NOW, "scheduler": {"address": "tcp://h:1", "uptime": 0.0, "dashboard": "", "metrics": ""},
                                    "executors": [], "streams": [], "runs": [], "persisted": [], "events": []}))
    for caption in ("no executors have joined", "no streams", "no runs in flight", "nothing persisted", "no events yet"):
        assert caption in out
    assert "dashboard: off" in out


def test_units() -> None:
    assert status_view.size(0) == "0 B" and status_view.size(5 * 1024**3) == "5.0 GiB"
    assert status_view.duration(0.0004) == "400 us" and status_view.duration(7300) == "2h01m"
    assert status_view.rate(0.4) == "0/s"
    assert status_view.clock(0.0) == "-"
