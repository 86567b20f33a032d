"""Every service of a real local cluster serves Prometheus metrics: names after Prometheus
practice, and values that move while a stream runs."""

from __future__ import annotations

import pytest
from squall.common import protocol

from squall import sources
from tests.cluster.test_security import outsider, send
from tests.metrics_scrape import Scrape, scrape, total
from tests.polling import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(90)]

ID_LABELS = {"job", "job_id", "batch", "task", "run", "run_id", "executor", "executor_id", "partition"}


def scrape_all(cluster) -> dict[str, Scrape]:  # type: ignore[no-untyped-def]
    return {name: scrape(url) for name, url in cluster.metrics_urls.items()}


def test_every_service_serves_metrics_named_after_prometheus_practice(cluster) -> None:  # type: ignore[no-untyped-def]
    urls = cluster.metrics_urls
    assert set(urls) == {"scheduler", "shuffle_meta", *cluster.executor_names()}, urls
    assert all(url.startswith("http://127.0.0.1:") and url.endswith("/metrics") for url in urls.values()), urls
    with cluster.connect() as ctx:  # the scheduler knows each executor's URL from its registration
        executors = {e["id"]: e["metrics"] for e in ctx.snapshot()["executors"]}
    assert executors == {name: urls[name] for name in cluster.executor_names()}
    for name, got in scrape_all(cluster).items():
        ours = {family: kind_samples for family, kind_samples in got.items() if family.startswith("squall")}
        assert "squall_auth_refused" in ours, name
        for family, (kind, samples) in ours.items():
            assert family.startswith("squall_"), family
            if kind == "counter":
                assert all(s.endswith("_total") for s, _, _ in samples), (name, family)
            if kind == "histogram":
                assert family.endswith(("_seconds", "_bytes")), (name, family)
            assert not any(ID_LABELS & set(labels) for _, labels, _ in samples), (name, family, samples[:3])
            assert not any(unit in family for unit in ("_ms", "_milliseconds", "_kb", "_mb")), family
        assert all(label.get("service") == ("executor" if name.startswith("executor") else name)
                   for _, samples in ours.values() for _, label, _ in samples if "service" in label), name


def test_values_move_while_a_stream_runs(cluster, ctx) -> None:  # type: ignore[no-untyped-def]
    before = scrape_all(cluster)
    executors = [name for name in before if name.startswith("executor")]
    delivered: list[int] = []
    stream = ctx.stream(sources.generator(lambda p, b: [(b % 5, 1)] * 20, partitions=4), batch_interval=0.05)
    stream = stream.reduce_by_key(lambda a, b: a + b).foreach_batch(lambda batch, records: delivered.append(batch)).start()
    try:
        wait_until(lambda: len(delivered) >= 10, timeout=30, what="10 batches")
    finally:
        stream.stop(timeout=20)

    def moved(sample: str, service: list[str], **labels: str) -> tuple[float, float]:
        return (total([before[s] for s in service], sample, **labels),
                total([scrape(cluster.metrics_urls[s]) for s in service], sample, **labels))

    done_before, done_after = moved("squall_tasks_completed_total", executors, priority="latency")
    assert done_after >= done_before + 10 * 4  # at least a source task per partition and batch
    pushed_before, pushed_after = moved("squall_shuffle_bytes_pushed_total", executors)
    assert pushed_after > pushed_before
    batches_before, batches_after = moved("squall_batches_completed_total", ["scheduler"])
    assert batches_after >= batches_before + len(delivered) - 1  # the last batch's progress may still be on its way
    observed_before, observed_after = moved("squall_batch_latency_seconds_count", ["scheduler"])
    assert observed_after > observed_before
    registered_before, registered_after = moved("squall_map_outputs_registered_total", ["shuffle_meta"])
    assert registered_after > registered_before


def test_a_connection_without_the_clusters_key_is_counted_as_refused(cluster) -> None:  # type: ignore[no-untyped-def]
    url = cluster.metrics_urls["scheduler"]
    before = total([scrape(url)], "squall_auth_refused_total")
    stranger = outsider(cluster.address, "own_keys")
    try:
        send(stranger, protocol.Ping(nonce=1))  # the handshake is refused: nothing is sent
        wait_until(lambda: total([scrape(url)], "squall_auth_refused_total") > before, timeout=10, interval=0.05,
                   what="the refusal counted")
    finally:
        stranger.close(0)
