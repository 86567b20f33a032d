"""Prometheus metric families built from plain values, for the collectors that read a service's
state when it is scraped (services/*/metrics.py).

Every family carries a `service` label (scheduler, executor, shuffle_meta): the scheduler's and
an executor's `squall_tasks` count different things (the cluster's, as heartbeats tell, and the
executor's own), and a query tells them apart by it. Names follow Prometheus practice: the
`squall_` prefix, base units (seconds, bytes) in the name, `_total` on counters (prometheus_client
adds it to a CounterMetricFamily's samples).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from squall.common.histogram import Histogram

PREFIX = "squall_"


def _check(name: str) -> None:
    if not name.startswith(PREFIX):
        raise ValueError(f"metric {name!r} lacks the {PREFIX} prefix")


def _le(bound: float) -> str:
    """A bucket's upper bound as its `le` label: Prometheus writes infinity +Inf."""
    return "+Inf" if math.isinf(bound) else repr(float(bound))


def gauge(name: str, doc: str, service: str, value: float) -> GaugeMetricFamily:
    _check(name)
    family = GaugeMetricFamily(name, doc, labels=["service"])
    family.add_metric([service], value)
    return family


def labelled_gauge(name: str, doc: str, service: str, label_names: tuple[str, ...],
                   values: Mapping[tuple[str, ...], float]) -> GaugeMetricFamily:
    """One sample per label combination in `values` (keys in the order of `label_names`)."""
    _check(name)
    family = GaugeMetricFamily(name, doc, labels=["service", *label_names])
    for labels, value in values.items():
        family.add_metric([service, *labels], value)
    return family


def counter(name: str, doc: str, service: str, value: float) -> CounterMetricFamily:
    """`name` without `_total`: prometheus_client exposes the sample as `<name>_total`."""
    _check(name)
    family = CounterMetricFamily(name, doc, labels=["service"])
    family.add_metric([service], value)
    return family


def labelled_counter(name: str, doc: str, service: str, label_names: tuple[str, ...],
                     values: Mapping[tuple[str, ...], float]) -> CounterMetricFamily:
    _check(name)
    family = CounterMetricFamily(name, doc, labels=["service", *label_names])
    for labels, value in values.items():
        family.add_metric([service, *labels], value)
    return family


def histogram(name: str, doc: str, service: str, source: Histogram) -> HistogramMetricFamily:
    """A common.histogram.Histogram as Prometheus exposes one: cumulative `le` buckets, sum, count.

    Read from the HTTP thread while the service's thread observes: the buckets are copied first
    and the count taken from the last (+Inf) bucket, so count and buckets always agree."""
    _check(name)
    buckets = source.buckets
    family = HistogramMetricFamily(name, doc, labels=["service"])
    family.add_metric([service], [(_le(bound), count) for bound, count in buckets], source.sum)
    return family
