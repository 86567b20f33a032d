"""Scraping a running service's /metrics in tests, parsed as Prometheus parses it."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

# family name -> (type, [(sample name, labels, value)])
Scrape = dict[str, tuple[str, list[tuple[str, dict[str, str], float]]]]


def scrape(url: str) -> Scrape:
    with urllib.request.urlopen(url, timeout=10) as reply:
        text = reply.read().decode()
    return {f.name: (f.type, [(s.name, s.labels, s.value) for s in f.samples]) for f in text_string_to_metric_families(text)}


def total(scrapes: list[Scrape], sample: str, **labels: str) -> float:
    """The sum of a sample's values over several services' scrapes (those with the labels given)."""
    return sum(value for got in scrapes for _, samples in got.values() for name, have, value in samples
               if name == sample and all(have.get(k) == v for k, v in labels.items()))


def exported_names(scrapes: list[Scrape]) -> set[str]:
    """Every sample name the scrapes show (histograms' _bucket, _sum and _count included)."""
    return {name for got in scrapes for _, samples in got.values() for name, _, _ in samples}
