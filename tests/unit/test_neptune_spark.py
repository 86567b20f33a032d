"""bench.neptune_spark, the Spark FAIR-pools peer of bench.neptune: its allocation file, the per-batch
latency from progress reports, the views check, the pool check, and (with pyspark) a small real run."""

from __future__ import annotations

import importlib.util
import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import pytest

from bench import neptune_spark as peer
from squall.ysb import make_event, parse

HAS_PYSPARK = importlib.util.find_spec("pyspark") is not None

T0 = 1_700_000_000.0


def iso(seconds: float) -> str:
    """A progress report's timestamp, as Spark writes it."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def report(batch_id: int, trigger: float, rows: int) -> dict[str, object]:
    return {"batchId": batch_id, "timestamp": iso(trigger), "numInputRows": rows}


def test_allocation_file_gives_latency_all_cores_first_and_batch_the_rest() -> None:
    root = ET.fromstring(peer.allocation_xml(cores=4))
    pools = {p.get("name"): {child.tag: child.text for child in p} for p in root.iter("pool")}
    assert pools == {
        "latency": {"schedulingMode": "FIFO", "weight": "1000", "minShare": "4"},
        "batch": {"schedulingMode": "FIFO", "weight": "1", "minShare": "0"},
    }
    conf = peer.fair_conf("/x/pools.xml")
    assert conf["spark.scheduler.mode"] == "FAIR" and conf["spark.scheduler.allocation.file"] == "/x/pools.xml"


def test_batch_latency_is_sink_end_minus_trigger_for_batches_with_input_ending_in_the_span() -> None:
    progress = [
        report(3, T0 + 3.0, 500),  # sink ends at +3.25: in the span
        report(1, T0 + 1.0, 500),  # sink ends before the span
        report(2, T0 + 2.0, 0),  # no input: not a measured batch
        report(4, T0 + 4.0, 500),  # its sink never finished
        report(5, T0 + 5.0, 500),  # sink ends after the span
        report(6, T0 + 2.5, 500),  # sink ends exactly at the span's end
    ]
    done = {1: T0 + 1.2, 2: T0 + 2.1, 3: T0 + 3.25, 5: T0 + 9.0, 6: T0 + 6.0}
    assert peer.batch_latencies(progress, done, since=T0 + 1.5, until=T0 + 6.0) == pytest.approx([0.25, 3.5])


def test_window_latency_counts_final_windows_ending_in_the_span() -> None:
    micros = {end: round((T0 + end) * 1e6) for end in (2, 4, 6, 8)}
    emitted = {micros[2]: T0 + 2.5, micros[4]: T0 + 4.75, micros[6]: T0 + 7.0, micros[8]: T0 + 8.5}
    # window 2 ends before the span; window 8 ends in it, but the watermark has not passed it
    assert peer.window_latencies(emitted, watermark=T0 + 7.9, since=T0 + 3, until=T0 + 9) == pytest.approx([0.75, 1.0])


@pytest.mark.parametrize("rows", [*range(0, 40), 4 * 3 * 1000 + 5, 999_999])
def test_expected_views_match_the_events_the_rate_rows_become(rows: int) -> None:
    """Rate row v is event v // PARTITIONS of partition v % PARTITIONS (bench.ysb_spark.sql_events)."""
    counted = range(rows) if rows < 100 else range(rows - 200, rows)
    views = sum(parse(make_event(v % 4, v // 4, 0.0)).event_type == "view" for v in counted)
    if rows >= 100:  # the last 200 rows by brute force, the rest from the formula at rows - 200
        views += peer.expected_views(rows - 200)
    assert peer.expected_views(rows) == views


def test_views_are_checked_after_the_last_batch_both_reported_and_sunk() -> None:
    progress = [report(0, T0, 0), report(1, T0 + 1, 8), report(2, T0 + 2, 8)]
    # batch 3 reached the sink but was not reported; after batch 2, 16 rows: events 0..3, views 0 and 3 (4 rows each)
    assert peer.views_exact(progress, {0: 0, 1: 4, 2: 8, 3: 12}) is True
    assert peer.views_exact(progress, {0: 0, 1: 4, 2: 7}) is False
    assert peer.views_exact(progress, {}) is None


def test_pool_check_wants_each_work_in_its_pool_and_nothing_in_default() -> None:
    work = {"stream": ("latency", [1, 2, 3]), "word count": ("batch", [4, 5])}
    ran = {1: "latency", 2: "latency", 4: "batch", 5: "batch"}  # stage 3 was skipped: it never ran
    assert peer.pool_check(ran, work) == (True, "stream 2/2 stages in latency, word count 2/2 stages in batch, 0 in default")
    assert peer.pool_check({**ran, 2: "batch"}, work)[0] is False
    assert peer.pool_check({**ran, 9: "default"}, work) == (
        False, "stream 2/2 stages in latency, word count 2/2 stages in batch, 1 in default")
    assert peer.pool_check({4: "batch", 5: "batch"}, work)[0] is False  # no stage of the stream ran at all


def test_table_names_carry_the_offered_rate() -> None:
    assert peer.table_name({"name": peer.ROW_BOTH, "rate": 20_000}) == "Spark both, FAIR (20k/s)"
    assert peer.table_name({"name": peer.ROW_LC, "rate": 2_500}) == "Spark LC alone (2.5k/s)"
    assert peer.table_name({"name": peer.ROW_BATCH, "rate": None}) == "Spark batch alone"


@pytest.mark.skipif(HAS_PYSPARK, reason="checks the rows without pyspark")
def test_without_pyspark_every_row_says_it_was_skipped_and_why() -> None:
    rows = peer.run_spark_mix(1000, 1000, 4, 0.1, 2.0, 1.0)
    assert [r["name"] for r in rows] == [peer.ROW_LC, peer.ROW_BATCH, peer.ROW_BOTH]
    assert all(r["notes"].startswith("skipped: not installed") and not r["lc_latencies"] for r in rows)
