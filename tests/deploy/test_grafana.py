"""k8s/grafana/squall-dashboard.json: a dashboard Grafana can import (a Prometheus datasource
variable every panel uses), whose every PromQL expression names metrics a running local
cluster exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from squall import sources
from tests.metrics_scrape import exported_names, scrape
from tests.polling import wait_until

DASHBOARD = Path(__file__).resolve().parents[2] / "k8s" / "grafana" / "squall-dashboard.json"
METRIC = re.compile(r"\bsquall_[a-z0-9_]+")
HISTOGRAM_SUFFIXES = re.compile(r"_(bucket|sum|count)$")
RATED = re.compile(r"\b(?:rate|increase)\((squall_[a-z0-9_]+)")
# What the dashboard must show (panel titles).
REQUIRED = ["Batch latency", "Input and output rate", "Scheduling delay", "Processing time", "Window latency", "Group size",
            "Executors alive", "Tasks by priority and state", "Shuffle bytes", "Checkpoint duration",
            "Executor losses and recoveries", "Speculative copies", "Auth refused"]


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def expressions() -> list[str]:
    return [target["expr"] for panel in dashboard()["panels"] for target in panel["targets"]]


def metric_names(exprs: list[str]) -> set[str]:
    return {HISTOGRAM_SUFFIXES.sub("", name) for expr in exprs for name in METRIC.findall(expr)}


def test_the_dashboard_takes_its_datasource_from_a_variable_and_shows_what_it_must() -> None:
    board = dashboard()
    [variable] = [v for v in board["templating"]["list"] if v["type"] == "datasource"]
    assert variable["query"] == "prometheus"
    uid = "${" + variable["name"] + "}"
    panels = board["panels"]
    assert len({p["id"] for p in panels}) == len(panels), "panel ids must be unique"
    for panel in panels:
        assert panel["datasource"]["uid"] == uid, panel["title"]
        assert all(t["datasource"]["uid"] == uid for t in panel["targets"]), panel["title"]
    titles = {p["title"] for p in panels}
    assert set(REQUIRED) <= titles, f"missing panels: {sorted(set(REQUIRED) - titles)}"
    latency = " ".join(t["expr"] for p in panels if p["title"] == "Batch latency" for t in p["targets"])
    assert "histogram_quantile(0.5," in latency and "histogram_quantile(0.99," in latency
    rated = [name for expr in expressions() for name in RATED.findall(expr)]
    assert rated and all(name.endswith(("_total", "_bucket")) for name in rated), f"rate() or increase() of a gauge: {rated}"


@pytest.mark.cluster
@pytest.mark.timeout(90)
def test_every_metric_the_dashboard_queries_is_exported_by_a_running_cluster(cluster, ctx) -> None:  # type: ignore[no-untyped-def]
    delivered: list[int] = []
    stream = ctx.stream(sources.generator(lambda p, b: [(b % 3, 1)] * 5, partitions=2), batch_interval=0.05)
    stream = stream.reduce_by_key(lambda a, b: a + b).foreach_batch(lambda batch, records: delivered.append(batch)).start()
    try:
        wait_until(lambda: len(delivered) >= 3, timeout=30, what="3 batches")
    finally:
        stream.stop(timeout=20)
    exported = {HISTOGRAM_SUFFIXES.sub("", name) for name in exported_names([scrape(url) for url in cluster.metrics_urls.values()])}
    wanted = metric_names(expressions())
    assert len(wanted) >= 15, wanted
    assert wanted <= exported, f"the dashboard queries metrics no service exports: {sorted(wanted - exported)}"
