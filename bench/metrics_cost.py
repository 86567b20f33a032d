"""What serving Prometheus metrics costs a micro-batch: Drizzle with groups of 100 on two local
clusters alike but for metrics, one serving them (and scraped: a thread fetches every service's
/metrics once a second while it runs, as a Prometheus would, only faster) and one without an
endpoint (metrics_port -1). Runs alternate between the two, so that a machine's drift in speed
weighs on both; each run is timed as bench.microbench times a mode (total time / batches).

    python -m bench.microbench --metrics-cost [--batches 100] [--rounds 5]
"""

from __future__ import annotations

import statistics
import threading
import urllib.request
from typing import Any

from bench.microbench import batch_dataset, batch_result
from bench.workloads import expected_result
from squall import Context, LocalCluster, Settings

DRIZZLE_100 = dict(preschedule=True, group_size=100)
SCRAPE_INTERVAL = 1.0


class Scraper:
    """Fetches every URL once per interval while `active` is set (on its own thread)."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls
        self.active = threading.Event()
        self.scrapes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metrics-scraper", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(SCRAPE_INTERVAL):
            if self.active.is_set():
                for url in self.urls:
                    with urllib.request.urlopen(url, timeout=5) as reply:
                        reply.read()
                self.scrapes += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def mean_ms(ctx: Context, workload: str, batches: int, shape: tuple[int, int, int]) -> float:
    """One run of `batches` micro-batches, Drizzle group 100: mean ms per micro-batch (checked)."""
    expected = expected_result(workload, *shape)
    results = ctx.run_jobs([batch_dataset(ctx, workload, *shape) for _ in range(batches)], **DRIZZLE_100)  # type: ignore[arg-type]
    for index, records in enumerate(results):
        if batch_result(workload, records) != expected:
            raise AssertionError(f"micro-batch {index} gave {batch_result(workload, records)!r}, expected {expected!r}")
    stats = ctx.last_run
    assert stats is not None
    return sum(stats.batch_intervals) / len(stats.batch_intervals) * 1000


def run(workload: str, batches: int, rounds: int, executors: int, shape: tuple[int, int, int]) -> dict[str, Any]:
    base = Settings.from_env()
    with LocalCluster(executors=executors, settings=base.replace(metrics_port=0)) as on_cluster, \
            LocalCluster(executors=executors, settings=base.replace(metrics_port=-1)) as off_cluster, \
            on_cluster.connect() as on, off_cluster.connect() as off:
        assert not off_cluster.metrics_urls and len(on_cluster.metrics_urls) == executors + 2
        scraper = Scraper(list(on_cluster.metrics_urls.values()))
        times: dict[str, list[float]] = {"on": [], "off": []}
        try:
            for ctx in (on, off):  # warm-up: connections, code caches
                mean_ms(ctx, workload, min(10, batches), shape)
            for round_ in range(rounds):
                order = [("on", on), ("off", off)] if round_ % 2 == 0 else [("off", off), ("on", on)]
                for name, ctx in order:
                    if name == "on":
                        scraper.active.set()
                    times[name].append(mean_ms(ctx, workload, batches, shape))
                    scraper.active.clear()
        finally:
            scraper.close()
    on_ms, off_ms = statistics.mean(times["on"]), statistics.mean(times["off"])
    return {"on_ms": on_ms, "off_ms": off_ms, "relative": (on_ms - off_ms) / off_ms, "scrapes": scraper.scrapes, "times": times}


def report(result: dict[str, Any], workload: str, batches: int, rounds: int) -> str:
    return "\n".join([
        f"metrics cost: {workload}, Drizzle group 100, {rounds} rounds of {batches} micro-batches on each cluster, alternating",
        f"  metrics on (scraped every {SCRAPE_INTERVAL:g} s, {result['scrapes']} scrapes): {result['on_ms']:.3f} ms per micro-batch "
        f"(runs: {', '.join(f'{t:.3f}' for t in result['times']['on'])})",
        f"  metrics off (metrics_port -1): {result['off_ms']:.3f} ms per micro-batch "
        f"(runs: {', '.join(f'{t:.3f}' for t in result['times']['off'])})",
        f"  relative cost: {result['relative'] * 100:+.1f}%",
    ])
