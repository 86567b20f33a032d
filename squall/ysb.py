"""The Yahoo Streaming Benchmark (YSB) job: the `squall demo` stream, and the workload that
bench/ runs on Squall and its peers.

Pure Python only: no engine is imported here. Ad events are JSON strings made
deterministically from (partition, index), so any event can be made again (the stream is
replayable) and every engine sees the same events for the same (partition, index, event_time).

The query: parse each event, keep the views, join its ad to the ad's campaign (a static table
of CAMPAIGNS campaigns with ADS_PER_CAMPAIGN ads each), and count the views per campaign per
tumbling event-time window. The latency of a window is the time its final count is emitted
minus the window's end.

An event is one of PROFILES ad profiles (user, page, ad, ad type, IP address) with an event
type and a time: as YSB's own generator draws from pregenerated ids, an event is cheap to make
(well under a microsecond), so the generator does not take the CPU the engines are measured on.
A profile's fields come from two rounds of a 32-bit integer hash (Thomas Mueller's hash32) of its
number, not Python's salted hash(), and its arithmetic never exceeds 63 bits, so a SQL engine can
mirror it with 64-bit integer expressions (bench.ysb_spark does).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

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
PROFILES = 16_384  # distinct (user, page, ad, ad type, IP) profiles; a power of two
PARTITION_STRIDE = 4_099  # partition p's events start at profile p * PARTITION_STRIDE: partitions differ
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


def profile_of(partition: int, index: int) -> int:
    """The profile of event `index` of `partition`: the events of a partition walk all PROFILES
    profiles in turn, each partition from its own place."""
    return (index + partition * PARTITION_STRIDE) % PROFILES


def event_hashes(partition: int, index: int) -> tuple[int, int]:
    """The two 32-bit hashes (seed, other) that the fields of event (partition, index) come from:
    seed = mix32 of its profile picks the ad and its type, other the user, page and IP."""
    seed = mix32(profile_of(partition, index))
    return seed, mix32(seed ^ OTHER_SALT)


def ip_address(x: int) -> str:
    """A dotted IPv4 address from the four bytes of a 32-bit value."""
    return f"{(x >> 24) & 255}.{(x >> 16) & 255}.{(x >> 8) & 255}.{x & 255}"


def event_fields(partition: int, index: int, event_time: float) -> dict[str, Any]:
    """The fields of event `index` of `partition`, in EVENT_FIELDS order: the definition that
    make_event implements quickly and bench.ysb_spark mirrors in SQL.

    event_type cycles view, click, purchase over the index (a third are views); the ad and ad
    type are drawn from one hash of the event's profile (profile_of), the user, page and IP from a
    second.
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


# make_event's pieces, made on its first call (about 0.1 s): per profile, the JSON up to the
# event type's value and the JSON after the event time; per event type, the JSON between them.
_HEADS: tuple[str, ...] = ()
_TAILS: tuple[str, ...] = ()
_EVENT_TYPE_PIECES = tuple(f'{event_type}","event_time":' for event_type in EVENT_TYPES)
_EVENT_TYPE_COUNT = len(EVENT_TYPES)


def _make_profiles() -> None:
    global _HEADS, _TAILS
    heads, tails = [], []
    for profile in range(PROFILES):
        fields = event_fields(0, profile, 0.0)  # partition 0's event `profile` has profile `profile`
        heads.append(
            f'{{"user_id":"{fields["user_id"]}","page_id":"{fields["page_id"]}","ad_id":"{fields["ad_id"]}",'
            f'"ad_type":"{fields["ad_type"]}","event_type":"'
        )
        tails.append(f',"ip_address":"{fields["ip_address"]}"}}')
    # Tails first: a thread that sees the heads set (make_event's test) finds the tails too.
    _TAILS = tuple(tails)
    _HEADS = tuple(heads)


def make_event(partition: int, index: int, event_time: float) -> str:
    """The JSON ad event `index` of `partition`, happening at `event_time` (seconds): exactly
    json.dumps(event_fields(...), separators=(",", ":")), made from its profile's preformatted
    pieces (about 0.6 us an event, 5x faster than formatting the fields), since the generator is
    the benchmark's own cost on the sources and must not be what limits the rate.

    A record function for Squall's rate source: rate(r, p, record=make_event).
    """
    if not _HEADS:
        _make_profiles()
    profile = (index + partition * PARTITION_STRIDE) % PROFILES
    return (f"{_HEADS[profile]}{_EVENT_TYPE_PIECES[index % _EVENT_TYPE_COUNT]}{float(event_time)!r}"
            f"{_TAILS[profile]}")


class AdEvent(msgspec.Struct, frozen=True, gc=False):
    """A parsed ad event: its seven fields, typed (as YSB's own jobs deserialize an event into a
    tuple of its fields before filtering). A frozen struct without garbage-collector tracking:
    millions of them are made and dropped a second."""

    user_id: str
    page_id: str
    ad_id: str
    ad_type: str
    event_type: str
    event_time: float
    ip_address: str


_DECODER = msgspec.json.Decoder(AdEvent)


def parse(line: str | bytes) -> AdEvent:
    """An event from its JSON line: msgspec decodes it straight into an AdEvent (about 0.6 us an
    event, 5-6x faster than json.loads into a dict). msgspec.ValidationError (a ValueError) names
    the field of a line that is not an ad event."""
    return _DECODER.decode(line)


def is_view(event: AdEvent) -> bool:
    """Whether the event is a view (the only events YSB counts)."""
    return event.event_type == "view"


def campaign_of(event: AdEvent, table: Mapping[str, str]) -> str:
    """The campaign of the event's ad (KeyError for an ad that is not in the table)."""
    return table[event.ad_id]


def window_start(event_time: float, window_seconds: float) -> float:
    """The start of the tumbling window that contains event_time: a multiple of window_seconds (index * size)."""
    return math.floor(event_time / window_seconds + _EPSILON) * window_seconds


def expected_counts(events: Iterable[str | AdEvent], window_seconds: float = DEFAULT_WINDOW_SECONDS) -> dict[tuple[str, float], int]:
    """Reference result, in plain Python: (campaign id, window start) -> number of views.

    Events are JSON lines (or already parsed AdEvents); views are joined to their campaign and
    counted per tumbling window of window_seconds aligned to multiples of window_seconds.
    """
    table = campaign_table()
    counts: dict[tuple[str, float], int] = {}
    for line in events:
        event = parse(line) if isinstance(line, str) else line
        if not is_view(event):
            continue
        slot = (campaign_of(event, table), window_start(event.event_time, window_seconds))
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
        .map(lambda event: (table.value[event.ad_id], event.event_time))
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
