"""The Yahoo Streaming Benchmark (YSB) job: the `squall demo` stream, and the workload that
bench/ runs on Squall and its peers.

Pure Python only: no engine is imported here. Ad events are JSON strings made
deterministically from (partition, index), so any event can be made again (the stream is
replayable) and every engine sees the same events for the same (partition, index, event_time).

The query: parse each event, keep the views, join its ad to the ad's campaign (a static table
of CAMPAIGNS campaigns with ADS_PER_CAMPAIGN ads each), and count the views per campaign per
tumbling event-time window. The latency of a window is the time its final count is emitted
minus the window's end.

Event fields come from two rounds of a 32-bit integer hash (Thomas Mueller's hash32), not
Python's salted hash(), and its arithmetic never exceeds 63 bits, so a SQL engine can mirror it with 64-bit
integer expressions (bench.ysb_spark does).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

from squall import sources
from squall.windows import WindowResult

CAMPAIGNS = 100
ADS_PER_CAMPAIGN = 10
ADS = CAMPAIGNS * ADS_PER_CAMPAIGN
USERS = 100_000
PAGES = 100_000
AD_TYPES = ("banner", "modal", "sponsored-search", "mail", "mobile")
EVENT_TYPES = ("view", "click", "purchase")
EVENT_FIELDS = ("user_id", "page_id", "ad_id", "ad_type", "event_type", "event_time", "ip_address")

DEFAULT_WINDOW_SECONDS = 10.0
PARTITIONS = 4  # source partitions of the YSB stream

MASK32 = 0xFFFFFFFF
HASH_MULTIPLIER = 0x45D9F3B  # < 2**27: a 32-bit value times it stays below 2**59
PARTITION_SALT = 0x9E3779B9
OTHER_SALT = 0x5BD1E995  # the second hash of an event is mix32(seed ^ OTHER_SALT)
PAGE_SHIFT = 7  # page draws from other >> PAGE_SHIFT, so that page and user differ

_EPSILON = 1e-9  # as squall.windows: an event on a window boundary (within float rounding) opens the new window


def ad_id(ad: int) -> str:
    """The id of ad number `ad` (0 <= ad < ADS), e.g. "ad-0042"."""
    return f"ad-{ad:04d}"


def campaign_id(campaign: int) -> str:
    """The id of campaign number `campaign` (0 <= campaign < CAMPAIGNS), e.g. "campaign-07"."""
    return f"campaign-{campaign:02d}"


def campaign_table() -> dict[str, str]:
    """Ad id -> campaign id: ad k belongs to campaign k // ADS_PER_CAMPAIGN (10 ads for each of 100 campaigns)."""
    return {ad_id(ad): campaign_id(ad // ADS_PER_CAMPAIGN) for ad in range(ADS)}


def mix32(x: int) -> int:
    """A 32-bit integer hash (hash32 with multiplier 0x45d9f3b) of the low 32 bits of x."""
    x &= MASK32
    x = (((x >> 16) ^ x) * HASH_MULTIPLIER) & MASK32
    x = (((x >> 16) ^ x) * HASH_MULTIPLIER) & MASK32
    return (x >> 16) ^ x


def event_hashes(partition: int, index: int) -> tuple[int, int]:
    """The two 32-bit hashes (seed, other) that the fields of event (partition, index) come from
    (index taken modulo 2**32): seed picks the ad and its type, other the user, page and IP."""
    seed = mix32((index & MASK32) ^ ((partition * PARTITION_SALT) & MASK32))
    return seed, mix32(seed ^ OTHER_SALT)


def ip_address(x: int) -> str:
    """A dotted IPv4 address from the four bytes of a 32-bit value."""
    return f"{(x >> 24) & 255}.{(x >> 16) & 255}.{(x >> 8) & 255}.{x & 255}"


def event_fields(partition: int, index: int, event_time: float) -> dict[str, Any]:
    """The fields of event `index` of `partition`, in EVENT_FIELDS order: the definition that
    make_event implements quickly and bench.ysb_spark mirrors in SQL.

    event_type cycles view, click, purchase over the index (a third are views); the ad and ad
    type are drawn from one hash of (partition, index), the user, page and IP from a second.
    """
    seed, other = event_hashes(partition, index)
    return {
        "user_id": f"user-{other % USERS:05d}",
        "page_id": f"page-{(other >> PAGE_SHIFT) % PAGES:05d}",
        "ad_id": ad_id(seed % ADS),
        "ad_type": AD_TYPES[(seed >> 16) % len(AD_TYPES)],
        "event_type": EVENT_TYPES[index % len(EVENT_TYPES)],
        "event_time": float(event_time),
        "ip_address": ip_address(other),
    }


# make_event's preformatted pieces: the JSON from "ad_id" up to the ad type's value, per ad.
_AD_PIECES = tuple(f'"ad_id":"{ad_id(ad)}","ad_type":"' for ad in range(ADS))
_TYPE_COUNT = len(AD_TYPES)
_EVENT_TYPE_COUNT = len(EVENT_TYPES)


def make_event(partition: int, index: int, event_time: float) -> str:
    """The JSON ad event `index` of `partition`, happening at `event_time` (seconds): exactly
    json.dumps(event_fields(...), separators=(",", ":")), made about 4x faster (both hashes
    inlined, one f-string over preformatted pieces; ~3 us an event), since the generator is the
    benchmark's own cost on the sources and must not be what limits the rate.

    A record function for Squall's rate source: rate(r, p, record=make_event).
    """
    x = (index & MASK32) ^ ((partition * PARTITION_SALT) & MASK32)
    x = (((x >> 16) ^ x) * HASH_MULTIPLIER) & MASK32
    x = (((x >> 16) ^ x) * HASH_MULTIPLIER) & MASK32
    seed = (x >> 16) ^ x
    x = seed ^ OTHER_SALT
    x = (((x >> 16) ^ x) * HASH_MULTIPLIER) & MASK32
    x = (((x >> 16) ^ x) * HASH_MULTIPLIER) & MASK32
    other = (x >> 16) ^ x
    return (
        f'{{"user_id":"user-{other % USERS:05d}","page_id":"page-{(other >> PAGE_SHIFT) % PAGES:05d}",'
        f'{_AD_PIECES[seed % ADS]}{AD_TYPES[(seed >> 16) % _TYPE_COUNT]}",'
        f'"event_type":"{EVENT_TYPES[index % _EVENT_TYPE_COUNT]}","event_time":{float(event_time)!r},'
        f'"ip_address":"{other >> 24}.{(other >> 16) & 255}.{(other >> 8) & 255}.{other & 255}"}}'
    )


def parse(line: str) -> dict[str, Any]:
    """An event's fields from its JSON line."""
    event: dict[str, Any] = json.loads(line)
    return event


def is_view(event: Mapping[str, Any]) -> bool:
    """Whether the event is a view (the only events YSB counts)."""
    event_type: str = event["event_type"]
    return event_type == "view"


def campaign_of(event: Mapping[str, Any], table: Mapping[str, str]) -> str:
    """The campaign of the event's ad (KeyError for an ad that is not in the table)."""
    return table[event["ad_id"]]


def window_start(event_time: float, window_seconds: float) -> float:
    """The start of the tumbling window that contains event_time: a multiple of window_seconds (index * size)."""
    return math.floor(event_time / window_seconds + _EPSILON) * window_seconds


def expected_counts(events: Iterable[str | Mapping[str, Any]], window_seconds: float = DEFAULT_WINDOW_SECONDS) -> dict[tuple[str, float], int]:
    """Reference result, in plain Python: (campaign id, window start) -> number of views.

    Events are JSON lines (or already parsed dicts); views are joined to their campaign and
    counted per tumbling window of window_seconds aligned to multiples of window_seconds.
    """
    table = campaign_table()
    counts: dict[tuple[str, float], int] = {}
    for line in events:
        event = parse(line) if isinstance(line, str) else line
        if not is_view(event):
            continue
        slot = (campaign_of(event, table), window_start(event["event_time"], window_seconds))
        counts[slot] = counts.get(slot, 0) + 1
    return counts


def ysb_stream(ctx: Any, rate: int, window: float, batch_interval: float, results: list[WindowResult]) -> Any:
    """The YSB job as a started stream: JSON ad events (`rate` a second over all PARTITIONS) ->
    views -> campaign (broadcast join) -> views per campaign per event-time window, appended to
    `results` as windows close."""
    table = ctx.broadcast(campaign_table())
    return (
        ctx.stream(sources.rate(rate, partitions=PARTITIONS, record=make_event), batch_interval=batch_interval)
        .map(parse)
        .filter(is_view)
        .map(lambda event: (table.value[event["ad_id"]], event["event_time"]))
        .window(window, event_time=float)
        .count(partitions=PARTITIONS)
        .foreach_batch(lambda batch, records: results.extend(records))
        .start()
    )


def verify(results: list[WindowResult], start: float, rate: float, interval: float, batches: int, window: float) -> bool:
    """Every emitted window count equals a plain-Python count over the same events: those of the
    first `batches` batches of a stream of `rate` events a second (all partitions) from `start`."""
    events = [
        event
        for b in range(batches)
        for p in range(PARTITIONS)
        for event in sources.rate_batch(rate, PARTITIONS, interval, start, make_event, p, b)
    ]
    expected = expected_counts(events, window)
    got = {(r.key, round(r.start / window)): r.value for r in results}
    want = {(c, round(s / window)): n for (c, s), n in expected.items()}
    return all(want.get(k) == v for k, v in got.items()) and bool(got)
