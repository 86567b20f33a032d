"""squall.ysb and bench.ysb_workload: deterministic ad events, the plain-Python YSB reference, latency percentiles and the sustained-rate search."""

from __future__ import annotations

import json
import math

import msgspec
import pytest

from bench.ysb_workload import LatencyStats, highest_sustained_rate, is_sustained
from squall.ysb import (
    ADS_PER_CAMPAIGN,
    CAMPAIGNS,
    EVENT_FIELDS,
    AdEvent,
    campaign_of,
    campaign_table,
    event_fields,
    expected_counts,
    is_view,
    make_event,
    mix32,
    parse,
)


def test_the_campaign_table_has_100_campaigns_of_10_ads():
    table = campaign_table()
    assert len(table) == CAMPAIGNS * ADS_PER_CAMPAIGN == 1000
    assert len(set(table.values())) == CAMPAIGNS
    assert table["ad-0042"] == "campaign-04"
    assert table["ad-0999"] == "campaign-99"
    assert all(list(table.values()).count(c) == ADS_PER_CAMPAIGN for c in ("campaign-00", "campaign-57"))


def test_make_event_is_deterministic_and_depends_on_partition_and_index():
    assert make_event(2, 17, 5.25) == make_event(2, 17, 5.25)
    # Known values: a salted hash() or a changed generator would break replay across processes.
    assert msgspec.structs.asdict(parse(make_event(0, 0, 1.5))) == {
        "user_id": "user-64811",
        "page_id": "page-05975",
        "ad_id": "ad-0000",
        "ad_type": "banner",
        "event_type": "view",
        "event_time": 1.5,
        "ip_address": "111.111.75.139",
    }
    assert parse(make_event(3, 12345, 2.0)).ad_id != parse(make_event(0, 12345, 2.0)).ad_id
    events = {make_event(p, i, 0.0) for p in range(4) for i in range(50)}
    assert len(events) == 200


def test_the_fast_make_event_is_exactly_the_json_of_event_fields():
    for p in range(5):
        for i in [*range(600), 2**32 - 1, 2**32, 2**33 + 7]:
            t = 1_700_000_000 + i / 7
            assert make_event(p, i, t) == json.dumps(event_fields(p, i, t), separators=(",", ":"))
    assert make_event(0, 1, 3) == make_event(0, 1, 3.0)  # an int time is written as a float, as event_fields does


def test_mix32_stays_within_32_bits_and_its_products_within_63():
    for x in (0, 1, 0xFFFFFFFF, 0x12345678, 2**40 + 5):
        assert 0 <= mix32(x) < 2**32
    assert 0xFFFFFFFF * 0x45D9F3B < 2**63  # why a SQL engine can mirror it in BIGINT arithmetic


def test_events_have_the_ysb_fields_and_a_known_ad():
    table = campaign_table()
    for p, i in [(0, 0), (3, 12345), (1, 2**33 + 7)]:
        event = parse(make_event(p, i, 1_700_000_000.25))
        assert AdEvent.__struct_fields__ == EVENT_FIELDS
        assert event.event_time == 1_700_000_000.25
        assert event.ad_id in table
        assert len(event.ip_address.split(".")) == 4


def test_about_a_third_of_the_events_are_views_and_ads_spread():
    events = [parse(make_event(p, i, 0.0)) for p in range(4) for i in range(1500)]
    views = sum(is_view(e) for e in events)
    assert abs(views / len(events) - 1 / 3) < 0.01
    assert {e.event_type for e in events} == {"view", "click", "purchase"}
    table = campaign_table()
    assert len({campaign_of(e, table) for e in events if is_view(e)}) == CAMPAIGNS


def test_parse_round_trips_make_event():
    line = make_event(1, 99, 12.125)
    assert msgspec.json.encode(parse(line)).decode() == line
    assert parse(line) == AdEvent(**event_fields(1, 99, 12.125))


def test_parse_names_what_is_wrong_with_a_line_that_is_not_an_ad_event():
    with pytest.raises(ValueError, match="event_time"):
        parse('{"user_id":"u","page_id":"p","ad_id":"ad-0001","ad_type":"mail","event_type":"view","event_time":"soon","ip_address":"1.2.3.4"}')
    with pytest.raises(ValueError, match="malformed|truncated"):
        parse('{"user_id":')


def _event(ad: str, event_type: str, t: float) -> str:
    return json.dumps({"user_id": "u", "page_id": "p", "ad_id": ad, "ad_type": "mail", "event_type": event_type,
                       "event_time": t, "ip_address": "1.2.3.4"})


def test_expected_counts_keeps_views_joins_campaigns_and_counts_per_tumbling_window():
    events = [
        _event("ad-0001", "view", 0.0),       # campaign-00, window [0, 10)
        _event("ad-0009", "view", 9.999),     # campaign-00, window [0, 10)
        _event("ad-0010", "view", 3.0),       # campaign-01, window [0, 10)
        _event("ad-0001", "click", 4.0),      # not a view
        _event("ad-0002", "purchase", 5.0),   # not a view
        _event("ad-0005", "view", 10.0),      # campaign-00, window [10, 20): an end belongs to the next window
        _event("ad-0995", "view", 25.5),      # campaign-99, window [20, 30)
    ]
    assert expected_counts(events, 10) == {
        ("campaign-00", 0.0): 2,
        ("campaign-01", 0.0): 1,
        ("campaign-00", 10.0): 1,
        ("campaign-99", 20.0): 1,
    }
    assert expected_counts([parse(e) for e in events], 10) == expected_counts(events, 10)
    assert expected_counts(events, 30) == {("campaign-00", 0.0): 3, ("campaign-01", 0.0): 1, ("campaign-99", 0.0): 1}


def test_expected_counts_aligns_windows_to_multiples_of_the_window_even_for_fractions():
    # 0.3 / 0.1 is 2.9999999999999996 in floats: 0.3 still opens window 3, whose start is 3 * 0.1 (as in squall.windows).
    events = [_event("ad-0000", "view", t) for t in (0.3, 0.35, 0.29, 0.6)]
    assert expected_counts(events, 0.1) == {("campaign-00", 3 * 0.1): 2, ("campaign-00", 2 * 0.1): 1, ("campaign-00", 6 * 0.1): 1}


def test_latency_stats_percentiles():
    stats = LatencyStats([float(x) for x in range(1, 101)])
    assert stats.p50 == pytest.approx(50.5)
    assert stats.p99 == pytest.approx(99.01)
    assert LatencyStats([2.0]).p99 == 2.0
    assert math.isinf(LatencyStats([]).p50) and math.isinf(LatencyStats([]).p99)


def _fake_runner(capacity: int, latency: float = 1.0):
    """A fake engine: keeps up to `capacity` events/s at `latency` s; beyond it, takes in capacity and lags."""
    calls: list[int] = []

    def run(rate: int) -> dict:
        calls.append(rate)
        if rate <= capacity:
            return {"offered": rate, "achieved": rate * 0.97, "p50": latency / 2, "p99": latency, "windows": 10}
        return {"offered": rate, "achieved": capacity, "p50": 30.0, "p99": 60.0, "windows": 10}

    return run, calls


def test_the_search_finds_the_highest_sustained_rate_and_stops_at_the_first_failure():
    run, calls = _fake_runner(capacity=20_000)
    best, results = highest_sustained_rate([50_000, 1000, 20_000, 5000, 100_000], run, latency_bound=2.0)
    assert best == 20_000
    assert calls == [1000, 5000, 20_000, 50_000]
    assert [r["offered"] for r in results] == calls


def test_the_search_can_run_every_rate_and_may_find_none():
    run, calls = _fake_runner(capacity=20_000, latency=3.0)
    best, results = highest_sustained_rate([1000, 5000], run, latency_bound=2.0, stop_at_first_failure=False)
    assert best is None and calls == [1000, 5000] and len(results) == 2


def test_sustained_needs_95_percent_of_the_offered_rate_and_a_p99_within_the_bound():
    assert is_sustained({"offered": 1000, "achieved": 950, "p99": 2.0}, latency_bound=2.0)
    assert not is_sustained({"offered": 1000, "achieved": 949, "p99": 1.0}, latency_bound=2.0)
    assert not is_sustained({"offered": 1000, "achieved": 1000, "p99": 2.01}, latency_bound=2.0)
    assert not is_sustained({"offered": 1000, "skipped": "not installed"}, latency_bound=2.0)


def test_a_windows_latency_is_its_last_results_and_a_missing_window_counts_until_the_stop():
    from bench.ysb import window_latencies
    from squall.windows import WindowResult

    def result(start: float) -> WindowResult:
        return WindowResult("campaign-00", start, start + 10.0, 1)

    # Started at 95: windows from 98 on are measured, so [100, 110), [110, 120), [120, 130) by the stop at 131.
    landed = [(result(90.0), 0.5), (result(100.0), 0.05), (result(100.0), 0.08), (result(110.0), 0.06)]
    latencies, unfinished = window_latencies(landed, started=95.0, stopped=131.0, window=10.0)
    assert latencies == [0.08, 0.06, 1.0] and unfinished == 1
