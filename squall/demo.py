"""`squall demo`: the Yahoo Streaming Benchmark's job as a live stream on a local cluster.

Rate sources emit JSON ad events; the stream parses them, keeps views, joins ad to campaign
through a broadcast table and counts views per campaign per event-time window. Every second it
prints what the stream did: batches, input events per second (what the sources produced in the
batches delivered), window results per second, window latency (emit time minus window
end) and the group size the tuner chose. At the end (Ctrl-C or --seconds) it prints the busiest
campaigns and checks every emitted window against plain Python.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

from squall import LocalCluster, Settings, ysb
from squall.windows import WindowResult

PARTITIONS = ysb.PARTITIONS


def run(executors: int = 4, rate: int = 20_000, window: float = 2.0, batch_interval: float = 0.1, seconds: float | None = 10.0,
        echo: Callable[[str], None] = print) -> bool:
    echo(f"Squall demo: YSB ad analytics, {rate:,} events/s from {PARTITIONS} partitions, {batch_interval * 1000:.0f} ms batches, "
         f"{window:g} s windows, on a local cluster of {executors} executors ({'Ctrl-C to stop' if seconds is None else f'{seconds:g} s'})")
    results: list[WindowResult] = []
    started = time.perf_counter()
    with LocalCluster(executors=executors, settings=Settings.from_env(log_level="warning")) as cluster, cluster.connect() as ctx:
        echo(f"cluster up in {time.perf_counter() - started:.2f} s; scheduler at {cluster.address}")
        echo(f"dashboard: {cluster.dashboard_url or 'none'}")
        stream = ysb.ysb_stream(ctx, rate, window, batch_interval, results)
        echo(f"{'time s':>7} {'batches':>8} {'events/s in':>12} {'windows/s out':>14} {'window p50 ms':>14} {'p99 ms':>8} {'group size':>11}")
        deadline = None if seconds is None else time.time() + seconds
        try:
            while deadline is None or time.time() < deadline:
                time.sleep(1.0)
                m = stream.metrics()
                elapsed = max(0.0, time.time() - stream.metrics_state.started)
                echo(f"{elapsed:>7.1f} {m['batches']:>8} {m['input_records_per_second']:>12,.0f} {m['output_records_per_second']:>14,.1f} "
                     f"{m.get('window_latency_p50', 0) * 1000:>14.1f} {m.get('window_latency_p99', 0) * 1000:>8.1f} {m['group_size']:>11}")
        except KeyboardInterrupt:
            echo("stopping (Ctrl-C)")
        stream.stop()
        state = stream.metrics_state
    views: Counter[str] = Counter()
    for r in results:
        views[r.key] += r.value
    echo("busiest campaigns (views in closed windows):")
    for campaign, count in views.most_common(5):
        echo(f"  {campaign:<14}{count:>10,}")
    correct = ysb.verify(results, state.started, rate, batch_interval, state.batches, window) if results else False
    echo(f"windows emitted: {len(results):,}; every window matches plain Python: {'yes' if correct else 'NO'}")
    return correct
