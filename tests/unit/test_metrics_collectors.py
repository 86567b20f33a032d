"""The collectors behind each service's /metrics (services/*/metrics.py, common/metric_families.py):
what they read from the pure cores, and that what they yield follows Prometheus practice."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from squall.common import metric_families, protocol
from squall.common.core import Received
from squall.common.histogram import Histogram
from squall.common.protocol import MapLocation, PersistedBlock
from squall.common.settings import Settings
from squall.services.executor.checkpoints import Checkpointer
from squall.services.executor.metrics import ExecutorCollector
from squall.services.executor.work_counters import payload_bytes
from squall.services.scheduler.membership import Membership
from squall.services.scheduler.metrics import SchedulerCollector, task_counts
from squall.services.shuffle_meta.metrics import ShuffleMetaCollector
from squall.services.shuffle_meta.state import ShuffleMetaState

from tests.unit.executor_fixtures import ME
from tests.unit.scheduler_runs import checked
from tests.unit.test_executor_groups import PUSH_TO, executor, launch, map_out, mapper, reducer

UNITS = ("_seconds", "_bytes")


class _Log:
    def error(self, event: str, **fields: object) -> None:
        pass


def scrape(collector: Collector) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    """What a scrape of `collector` alone shows, parsed as Prometheus would: family -> samples."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {f.name: [(s.name, s.labels, s.value) for s in f.samples] for f in text_string_to_metric_families(text)}


def value(families: dict[str, list[tuple[str, dict[str, str], float]]], sample: str, **labels: str) -> float:
    for samples in families.values():
        for name, have, v in samples:
            if name == sample and all(have.get(k) == w for k, w in labels.items()):
                return v
    raise AssertionError(f"no sample {sample}{labels} in {sorted(families)}")


def check_names(families: dict[str, list[tuple[str, dict[str, str], float]]]) -> None:
    """squall_ prefix, _total on every counter sample, a unit in every histogram's name, no id labels."""
    for family, samples in families.items():
        assert family.startswith("squall_"), family
        for name, labels, _ in samples:
            assert set(labels) <= {"service", "priority", "state", "type", "le"}, (name, labels)
        if family.endswith(UNITS):
            continue
        assert all(not name.endswith(("_bucket", "_sum", "_count")) for name, _, _ in samples), f"{family} is a histogram without a unit"


def test_a_histogram_is_exposed_with_cumulative_buckets_ending_in_inf() -> None:
    h = Histogram((0.1, 1.0))
    for v in (0.05, 0.1, 0.5, 3.0):
        h.observe(v)

    class One(Collector):
        def collect(self):  # type: ignore[no-untyped-def]
            yield metric_families.histogram("squall_thing_seconds", "a thing", "scheduler", h)

    got = scrape(One())
    assert value(got, "squall_thing_seconds_bucket", le="0.1") == 2  # 0.1 itself is within le="0.1"
    assert value(got, "squall_thing_seconds_bucket", le="1.0") == 3
    assert value(got, "squall_thing_seconds_bucket", le="+Inf") == 4 == value(got, "squall_thing_seconds_count")
    assert value(got, "squall_thing_seconds_sum") == pytest.approx(3.65)


def test_a_name_without_the_prefix_is_refused() -> None:
    with pytest.raises(ValueError, match="squall_"):
        metric_families.gauge("tasks", "no prefix", "executor", 1)


def test_shuffle_meta_counts_registrations_and_look_ups_and_the_persisted_blocks_held() -> None:
    state = ShuffleMetaState()
    outputs = [protocol.MapOutput(job_id="j", shuffle_id=1, location=MapLocation(p, "e1", "tcp://e1:1", [1])) for p in range(3)]
    state.handle(Received(msg=protocol.RegisterMapOutputs(outputs=outputs), peer=b"e1", now=0.0))
    state.handle(Received(msg=protocol.LookupMapOutputs(request_id=1, job_id="j", shuffle_id=1, expected=3), peer=b"e2", now=0.0))
    blocks = [PersistedBlock(dataset_id="d", partition=p, partitions=2, size=10) for p in range(2)]
    state.handle(Received(msg=protocol.RegisterPersisted(executor_id="e1", address="tcp://e1:1", blocks=blocks), peer=b"e1", now=0.0))
    state.handle(Received(msg=protocol.RegisterPersisted(executor_id="e2", address="tcp://e2:1", blocks=blocks[:1]), peer=b"e2", now=0.0))
    got = scrape(ShuffleMetaCollector(state))
    check_names(got)
    assert value(got, "squall_map_outputs_registered_total", service="shuffle_meta") == 3
    assert value(got, "squall_map_output_lookups_total") == 1
    assert value(got, "squall_persisted_blocks") == 2  # a partition two executors hold counts once


def test_the_scheduler_sums_its_executors_heartbeats_and_keeps_their_metrics_urls() -> None:
    members = Membership(death_timeout=1.0)
    for i, (latency, batch, suspended) in enumerate([(2, 1, 1), (1, 3, 0)]):
        msg = protocol.RegisterExecutor(executor_id=f"e{i}", incarnation="x", data_address=f"tcp://e{i}:1", slots=4,
                                        metrics_address=f"http://e{i}:9464/metrics")
        record = members.add(f"e{i}".encode(), msg, now=0.0)
        record.latency_tasks, record.batch_tasks, record.suspended_tasks = latency, batch, suspended
    records = members.live()
    assert [r.metrics_address for r in records] == ["http://e0:9464/metrics", "http://e1:9464/metrics"]
    assert task_counts(records) == {("latency", "running"): 3, ("batch", "running"): 3, ("batch", "suspended"): 1}


def test_the_scheduler_exports_its_message_counts_by_type() -> None:
    state = checked(Settings())
    state.handle(Received(msg=protocol.Ping(nonce=1), peer=b"d", now=0.0))
    got = scrape(SchedulerCollector(state))
    check_names(got)
    assert value(got, "squall_messages_received_total", type="Ping") == 1
    assert value(got, "squall_messages_sent_total", type="Pong") == 1
    assert value(got, "squall_executors_alive") == 0


def test_the_executor_counts_completed_tasks_and_the_bytes_it_pushed(tmp_path) -> None:  # type: ignore[no-untyped-def]
    ex = executor()
    checkpoints = Checkpointer(str(tmp_path), _Log())
    collector = ExecutorCollector(ex.state, checkpoints)
    m0, r0 = mapper(0), reducer(0)
    launch(ex, r0, m0)
    before = scrape(collector)
    check_names(before)
    assert value(before, "squall_tasks", priority="latency", state="running") == 2
    ex.task_done(m0, map_out(b"b0", b"b11", b"b222", b"b3333"), 1.0)
    after = scrape(collector)
    assert value(after, "squall_tasks_completed_total", priority="latency") == 1
    assert value(after, "squall_tasks", priority="latency", state="running") == 1
    # b0 is for the reducer here; A takes partitions 1 and 3, B partition 2 (PUSH_TO)
    assert PUSH_TO[0] == ME
    assert value(after, "squall_shuffle_bytes_pushed_total") == len(b"b11") + len(b"b3333") + len(b"b222")
    assert value(after, "squall_shuffle_bytes_fetched_total") == 0
    checkpoints.close()


def test_payload_bytes_counts_every_kind_of_frame() -> None:
    assert payload_bytes([b"abc", memoryview(b"de"), bytearray(b"f")]) == 6


def test_the_scheduler_exports_its_streams_source_lag() -> None:
    state = checked(Settings())
    state.handle(Received(msg=protocol.StreamProgress(stream_id="s", run_id="r", batch=0, latency=0.1, source_lag=7),
                          peer=b"d", now=0.0))
    assert value(scrape(SchedulerCollector(state)), "squall_source_lag_records") == 7
