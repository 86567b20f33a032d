"""docs/metrics.md lists every Squall metric each service exports, as its type, and no other."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from squall.common.metrics_endpoint import AuthRefusedCollector
from squall.common.settings import Settings
from squall.services.executor.checkpoints import Checkpointer
from squall.services.executor.metrics import ExecutorCollector
from squall.services.executor.state import ExecutorState
from squall.services.scheduler.metrics import SchedulerCollector
from squall.services.shuffle_meta.metrics import ShuffleMetaCollector
from squall.services.shuffle_meta.state import ShuffleMetaState

from tests.unit.scheduler_runs import checked

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
ROW = re.compile(r"^\| `(?P<name>squall_[a-z0-9_]+)` \| (?P<type>counter|gauge|histogram) \|")
SECTIONS = {"### Scheduler": "scheduler", "### Executor": "executor", "### shuffle_meta": "shuffle_meta", "### Every service": "every"}


def documented() -> dict[str, set[tuple[str, str]]]:
    out: dict[str, set[tuple[str, str]]] = {}
    section = ""
    for line in DOC.read_text().splitlines():
        section = SECTIONS.get(line.strip(), section if not line.startswith("#") else "")
        match = ROW.match(line)
        if match and section:
            out.setdefault(section, set()).add((match["name"], match["type"]))
    return out


def exported(collector: Collector) -> set[tuple[str, str]]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    families = text_string_to_metric_families(generate_latest(registry).decode())
    return {(f.name + ("_total" if f.type == "counter" else ""), f.type) for f in families}


def test_the_doc_lists_what_each_service_exports(tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = Settings()
    checkpoints = Checkpointer(str(tmp_path), None)
    try:
        actual = {
            "scheduler": exported(SchedulerCollector(checked(settings))),
            "executor": exported(ExecutorCollector(ExecutorState("e1", "tcp://e1:1", settings), checkpoints)),
            "shuffle_meta": exported(ShuffleMetaCollector(ShuffleMetaState())),
            "every": exported(AuthRefusedCollector("scheduler")),
        }
    finally:
        checkpoints.close()
    assert documented() == actual
