"""Soak: run stateful streams for a long time and watch every process for growth.

Runs the YSB job (squall.ysb) and, with `--job both`, a keyed running count over many keys, on a
local cluster at a fixed offered rate, and samples each process (driver, scheduler, shuffle_meta,
every executor) every `--sample` seconds: resident memory, open file descriptors, sockets,
eventfds (each ZeroMQ socket and context holds one), threads; the cluster's checkpoint directory
(bytes and files); each service's tracked tables (GetTracked: entries in every per-job and
per-batch table) and, with --heap, its live Python objects by type; and the YSB windows' p99
latency per minute. It prints a row per minute, then per process the growth after the warm-up,
extrapolated per hour from a least-squares line (over the whole measured span and over its last
half: a growth that tapers off shows as a smaller second figure), where it grew (anonymous or
file-backed pages; of the anonymous ones malloc's main heap, the threads' stacks and the other
mappings, common.resident; the C heap's bytes held, in use and free; Python's small-object arenas'
bytes held, in use and free, common.pymalloc), and (with the plot extra) a PNG. The sampling runs
in a process of its own, so that what it keeps does not grow the driver it measures; the driver
hands it its own allocator figures through a pipe. `--save` keeps the samples, and `--report`
reads them back, so that one run can be measured again after another warm-up.

    python -m bench.soak [--minutes 30] [--warmup 2] [--rate 100000] [--job ysb|both] [--heap] [--trace FRAMES] [--plot soak.png] [--save samples.pickle]
    python -m bench.soak --report samples.pickle [--warmup 10] [--minutes 30]
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import pickle
import tempfile
import time
import tracemalloc
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from squall.common.quantiles import quantile
from squall.common.resident import resident_by_kind
from squall.common.tracked import heap_by_line, memory_figures

from bench import machine
from bench.plotting import pyplot
from squall import LocalCluster, Settings, sources
from squall.health import tracked
from squall.windows import WindowResult
from squall.ysb import ysb_stream

STATE_KEYS = 100_000  # keys of the running count (--job both)


@dataclass
class Sample:
    at: float  # seconds since the streams started
    process: dict[str, dict[str, float]]  # name -> rss_mib, fds, sockets, eventfds, threads, tracked
    checkpoint_files: int
    checkpoint_mib: float
    heap: dict[str, dict[str, int]] = field(default_factory=dict)  # service -> objects by type (--heap)
    traced: dict[str, dict[str, int]] = field(default_factory=dict)  # process -> bytes by "file:line" (--trace)


@dataclass
class WindowLatencies:
    """Takes the place of the YSB job's result list: keeps each window's latency for the minute
    it is in, then only that minute's p99 (the benchmark must not grow the driver it measures)."""

    started: float
    p99_by_minute: dict[int, float] = field(default_factory=dict)
    windows: int = 0
    _minute: int = 0
    _current: list[float] = field(default_factory=list)

    def extend(self, records: list[WindowResult]) -> None:
        now = time.time()
        minute = int((now - self.started) // 60)
        if minute != self._minute:
            if self._current:
                self.p99_by_minute[self._minute] = p99(self._current)
            self._minute, self._current = minute, []
        self._current.extend(now - r.end for r in records)
        self.windows += len(records)


def process_sample(pid: int) -> dict[str, float]:
    """What /proc says of one process; empty if it is gone."""
    proc = Path(f"/proc/{pid}")
    try:
        status = dict(line.split(":", 1) for line in (proc / "status").read_text().splitlines() if ":" in line)
        links = []
        for fd in (proc / "fd").iterdir():
            try:
                links.append(os.readlink(fd))
            except OSError:
                continue
    except OSError:
        return {}
    by_kind = {f"resident_{kind}": size / 2**20 for kind, size in resident_by_kind(pid).items()}
    return by_kind | {
        "rss_mib": int(status["VmRSS"].split()[0]) / 1024,
        # resident anonymous memory is the heaps; file-backed is code and libraries paged in
        "anon_mib": int(status["RssAnon"].split()[0]) / 1024,
        "file_mib": int(status["RssFile"].split()[0]) / 1024,
        "fds": len(links),
        "sockets": sum(link.startswith("socket:") for link in links),
        "eventfds": sum(link == "anon_inode:[eventfd]" for link in links),
        "threads": int(status["Threads"]),
    }


def service_addresses(cluster: LocalCluster, ctx: Any) -> dict[str, str]:
    addresses = {"scheduler": cluster.address, "shuffle_meta": cluster.shuffle_meta_address}
    addresses.update({info.executor_id: info.data_address for info in ctx.status().executors})
    return addresses


def ask_services(settings: Settings, addresses: dict[str, str], sample: Sample, heap: bool) -> None:
    """Each service's tracked entries (summed over its tables) into its process row; its heap by type."""
    for name, address in addresses.items():
        try:
            answer = tracked(address, settings, timeout=5.0, heap=heap)
        except TimeoutError:
            continue
        if sample.process.get(name):
            sample.process[name]["tracked"] = sum(answer.sizes.values())
            sample.process[name].update(allocated(answer.allocator))
        if heap:
            sample.heap[name] = answer.heap
            sample.traced[name] = answer.traced


COUNTS = ("malloc_mapped_blocks", "pymalloc_arenas", "pymalloc_arenas_highwater", "gc_collections_0", "gc_collections_1",
          "gc_collections_2", "gc_collected")  # memory figures that are not bytes


def allocated(figures: dict[str, int]) -> dict[str, float]:
    """The allocators' bytes in MiB, Python's small blocks in thousands, counts as they are."""
    return {k: v / 1000 if k == "python_blocks" else float(v) if k in COUNTS else v / 2**20 for k, v in figures.items()}


def directory_usage(root: Path) -> tuple[int, float]:
    files, size = 0, 0
    for dirpath, _, names in os.walk(root):
        for name in names:
            try:
                size += os.stat(os.path.join(dirpath, name)).st_size
                files += 1
            except OSError:
                continue  # collected while we walked
    return files, size / 2**20


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, per hour."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return 0.0
    return sum((t - mean_t) * (v - mean_v) for t, v in points) / var * 3600


def p99(values: list[float]) -> float:
    return quantile(values, 0.99) if values else math.nan


def running_count(ctx: Any, rate: int, batch_interval: float) -> Any:
    """A keyed running count over STATE_KEYS keys: the state every executor keeps and checkpoints."""
    events = sources.rate(rate, partitions=4, record=lambda p, i, t: (p * 7919 + i) % STATE_KEYS)
    return (ctx.stream(events, batch_interval=batch_interval)
            .map(lambda key: (key, 1))
            .update_state_by_key(lambda values, old: (old or 0) + sum(values), partitions=4)
            .foreach_batch(lambda batch, records: None)
            .start())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="how long to measure after the warm-up (default 30)")
    parser.add_argument("--warmup", type=float, default=2.0, help="minutes run before growth is measured (default 2)")
    parser.add_argument("--rate", type=int, default=100_000, help="YSB events per second in all (default 100000)")
    parser.add_argument("--state-rate", type=int, default=20_000, help="running-count events per second (--job both)")
    parser.add_argument("--job", choices=("ysb", "both"), default="ysb", help="the YSB job alone, or with a keyed running count")
    parser.add_argument("--window", type=float, default=2.0, help="YSB window seconds (default 2)")
    parser.add_argument("--batch-interval", type=float, default=0.1)
    parser.add_argument("--executors", type=int, default=4)
    parser.add_argument("--sample", type=float, default=15.0, help="seconds between samples (default 15)")
    parser.add_argument("--heap", action="store_true", help="also count each service's live Python objects by type (costs a pass over them)")
    parser.add_argument("--trace", type=int, default=0, metavar="FRAMES",
                        help="run every process under tracemalloc keeping FRAMES frames an allocation, and name the source "
                        "lines whose memory grew (implies --heap; slows the services: use a lower --rate)")
    parser.add_argument("--plot", help="write a PNG of RSS over time here (needs the plot extra)")
    parser.add_argument("--save", help="keep the samples in this file (for --report)")
    parser.add_argument("--report", metavar="SAVED", help="run nothing: report the samples --save kept, --minutes after --warmup")
    args = parser.parse_args(argv)
    if args.report:
        with open(args.report, "rb") as saved:
            samples, names, latencies = pickle.load(saved)
        report([s for s in samples if s.at <= (args.warmup + args.minutes) * 60], names, args.warmup * 60, latencies)
        return 0
    if args.trace:
        args.heap = True
        os.environ["PYTHONTRACEMALLOC"] = str(args.trace)  # the services inherit it
        tracemalloc.start(args.trace)

    print(machine.header("bench.soak", argv))
    print(f"job: {args.job}, YSB at {args.rate:,} events/s, {args.window:g} s windows, {args.batch_interval * 1000:.0f} ms batches, "
          f"{args.executors} executors; {args.warmup:g} min warm-up, then {args.minutes:g} min measured; a sample every {args.sample:g} s; "
          f"Python's allocator (PYTHONMALLOC, every process): {os.environ.get('PYTHONMALLOC') or 'pymalloc'}\n")
    with LocalCluster(executors=args.executors, settings=Settings.from_env(log_level="warning")) as cluster, cluster.connect() as ctx:
        pids = {"driver": os.getpid(), **cluster.pids}
        latencies = WindowLatencies(started=time.time())
        streams = [ysb_stream(ctx, args.rate, args.window, args.batch_interval, latencies)]  # type: ignore[arg-type]
        if args.job == "both":
            streams.append(running_count(ctx, args.state_rate, args.batch_interval))
        started = time.time()
        end = started + (args.warmup + args.minutes) * 60
        # The sampling runs in a process of its own: the samples it keeps must not grow the
        # driver it measures.
        spawn = multiprocessing.get_context("spawn")
        with tempfile.TemporaryDirectory() as scratch:
            out = os.path.join(scratch, "samples.pickle")
            driver_figures, sampler_end = spawn.Pipe()
            sampler = spawn.Process(target=sample_until, args=(pids, service_addresses(cluster, ctx), cluster.settings,
                                                              cluster.settings.checkpoint_root, started, end, args.sample,
                                                              args.heap, out, sampler_end))
            sampler.start()
            try:
                driver_traced: list[dict[str, int]] = []
                if args.trace:  # the driver's own allocation sites, at the warm-up's end and at the end
                    hand_figures_until(driver_figures, sampler, started + args.warmup * 60, args.sample)
                    driver_traced.append(heap_by_line())
                hand_figures_until(driver_figures, sampler, math.inf, args.sample)
                if args.trace:
                    driver_traced.append(heap_by_line())
            finally:
                for stream in streams:
                    stream.stop()
                if sampler.is_alive():
                    sampler.terminate()
            with open(out, "rb") as samples_file:
                samples: list[Sample] = pickle.load(samples_file)
    names = list(pids)
    measured = [s for s in samples if s.at >= args.warmup * 60]
    if len(driver_traced) == 2 and len(measured) >= 2:
        measured[0].traced["driver"], measured[-1].traced["driver"] = driver_traced
    if args.save:
        with open(args.save, "wb") as saved:
            pickle.dump((samples, names, latencies), saved)
    report(samples, names, args.warmup * 60, latencies)
    if args.plot:
        plot(samples, names, args.plot)
    return 0


def hand_figures_until(pipe: Connection, sampler: BaseProcess, until: float, interval: float) -> None:
    """In the driver: send the sampler the driver's allocator figures every `interval` seconds,
    until `until` or the sampler's end."""
    while sampler.is_alive() and time.time() < until:
        pipe.send(memory_figures())
        sampler.join(timeout=max(0.0, min(interval, until - time.time())))


def sample_until(pids: dict[str, int], addresses: dict[str, str], settings: Settings, checkpoint_root: str,
                 started: float, end: float, interval: float, heap: bool, out: str, driver_figures: Connection) -> None:
    """The sampler process: a sample every `interval` seconds until `end` (with the driver's
    allocator figures, the latest it sent), a row printed each minute, and every sample pickled
    to `out` at the end."""
    samples: list[Sample] = []
    driver: dict[str, int] = {}
    names = list(pids)
    print(f"{'minute':>6} {'ckpt files':>10} {'ckpt MiB':>8} " + " ".join(f"{n[:10]:>10}" for n in names) + "   (RSS MiB)")
    next_sample, printed = started, -1
    while time.time() < end:
        time.sleep(max(0.0, next_sample - time.time()))
        next_sample += interval
        files, mib = directory_usage(Path(checkpoint_root))
        sample = Sample(time.time() - started, {n: process_sample(pid) for n, pid in pids.items()}, files, mib)
        ask_services(settings, addresses, sample, heap)
        while driver_figures.poll():
            driver = driver_figures.recv()
        if sample.process.get("driver"):
            sample.process["driver"].update(allocated(driver))
        samples.append(sample)
        minute = int(sample.at // 60)
        if minute > printed:
            printed = minute
            print(f"{minute:>6} {files:>10} {mib:>8.1f} "
                  + " ".join(f"{sample.process[n].get('rss_mib', math.nan):>10.1f}" for n in names), flush=True)
    with open(out, "wb") as samples_file:
        pickle.dump(samples, samples_file)


def report(samples: list[Sample], names: list[str], warmup_seconds: float, latencies: WindowLatencies) -> None:
    measured = [s for s in samples if s.at >= warmup_seconds]
    if len(measured) < 2:
        print("\nnot enough samples after the warm-up to measure growth")
        return
    first, last = measured[0], measured[-1]
    print(f"\nafter the warm-up ({(last.at - first.at) / 60:.1f} min measured); growth = last sample - first, "
          "per hour = least-squares slope")
    later = [s for s in measured if s.at >= (first.at + last.at) / 2]
    print(f"{'process':<12} {'RSS MiB':>15} {'growth':>8} {'MiB/hour':>9} {'%/hour':>7} {'2nd half':>8} "
          f"{'fds':>9} {'sockets':>9} {'eventfds':>9} {'threads':>9} {'tracked':>11}")
    for name in names:
        a, b = first.process[name], last.process[name]
        if not a or not b:
            print(f"{name:<12} (exited during the run)")
            continue
        per_hour = slope_per_hour([(s.at, s.process[name]["rss_mib"]) for s in measured if s.process[name]])
        later_per_hour = slope_per_hour([(s.at, s.process[name]["rss_mib"]) for s in later if s.process[name]])
        print(f"{name:<12} {a['rss_mib']:>6.1f} -> {b['rss_mib']:>6.1f} {b['rss_mib'] - a['rss_mib']:>+8.1f} {per_hour:>+9.2f} "
              f"{per_hour / a['rss_mib'] * 100:>+6.2f}% {later_per_hour / a['rss_mib'] * 100:>+7.2f}% "
              + " ".join(f"{int(a[k]):>4}->{int(b[k]):<4}" for k in ("fds", "sockets", "eventfds", "threads"))
              + (f" {int(a['tracked']):>5}->{int(b['tracked']):<5}" if "tracked" in a and "tracked" in b else ""))
    print("\nwhere resident memory grew, MiB/hour: anonymous (heaps) and file-backed (code paged in) pages; of the "
          "anonymous, malloc's main [heap], the threads' stacks, other anonymous mappings (arenas, mapped blocks); "
          "the C heap's bytes from the system, in use and held free; Python's small-object arenas' bytes mapped, "
          "in use and free inside them, and arenas (count/hour); Python's small blocks (thousands/hour); "
          "objects the cyclic GC freed (garbage in reference cycles) and its full collections, per hour")
    columns = {"anon": "anon_mib", "file": "file_mib", "[heap]": "resident_heap", "stacks": "resident_stacks",
               "other": "resident_anon_other", "C heap": "malloc_held", "in use": "malloc_in_use", "free": "malloc_free",
               "pymal": "pymalloc_held", "in use ": "pymalloc_in_use", "free ": "pymalloc_free", "arenas": "pymalloc_arenas",
               "py blk": "python_blocks"}
    counted = {"cyclic": "gc_collected", "gen2": "gc_collections_2"}
    print(f"{'process':<12} " + " ".join(f"{title.strip():>7}" for title in columns) + " " + " ".join(f"{t:>9}" for t in counted))
    for name in names:
        rows = [s for s in measured if s.process[name]]

        def per_hour(key: str, rows: list[Sample] = rows, name: str = name) -> float:
            return slope_per_hour([(s.at, s.process[name][key]) for s in rows if key in s.process[name]])

        print(f"{name:<12} " + " ".join(f"{per_hour(k):>+7.2f}" for k in columns.values()) + " "
              + " ".join(f"{per_hour(k):>+9,.0f}" for k in counted.values()))
    for name in names:
        if first.heap.get(name) and last.heap.get(name):
            grown = sorted(((last.heap[name].get(k, 0) - first.heap[name].get(k, 0), k) for k in last.heap[name]), reverse=True)[:5]
            print(f"  {name} objects grown by type: " + ", ".join(f"{k} {n:+,}" for n, k in grown))
    for name in names:
        if first.traced.get(name) and last.traced.get(name):
            grown = sorted(((last.traced[name].get(k, 0) - first.traced[name].get(k, 0), k) for k in last.traced[name]), reverse=True)[:8]
            print(f"  {name} traced bytes grown by line: " + ", ".join(f"{shorten(k)} {n / 1024:+,.0f} KiB" for n, k in grown if n > 0))
    files_per_hour = slope_per_hour([(s.at, s.checkpoint_files) for s in measured])
    print(f"checkpoints: {first.checkpoint_files} -> {last.checkpoint_files} files ({files_per_hour:+.0f}/hour), "
          f"{first.checkpoint_mib:.1f} -> {last.checkpoint_mib:.1f} MiB")
    minutes = sorted(m for m in latencies.p99_by_minute if m * 60 >= warmup_seconds)
    if minutes:
        values = [latencies.p99_by_minute[m] * 1000 for m in minutes]
        print(f"window p99 per minute after the warm-up: min {min(values):.0f} ms, max {max(values):.0f} ms, "
              f"first {values[0]:.0f} ms, last {values[-1]:.0f} ms ({latencies.windows:,} windows in all)")
        print("  by minute (ms): " + " ".join(f"{v:.0f}" for v in values))


def shorten(site: str) -> str:
    """'/long/path/to/squall/common/x.py:12 < /path/y.py:3' -> 'common/x.py:12 < path/y.py:3'."""
    return " < ".join("/".join(frame.split("/")[-2:]) for frame in site.split(" < "))


def plot(samples: list[Sample], names: list[str], path: str) -> None:
    plt = pyplot(path)
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(9, 5))
    for name in names:
        points = [(s.at / 60, s.process[name]["rss_mib"]) for s in samples if s.process[name]]
        ax.plot([p[0] for p in points], [p[1] for p in points], label=name)
    ax.set_xlabel("minutes")
    ax.set_ylabel("RSS MiB")
    ax.set_title("Squall soak: resident memory per process")
    ax.legend(loc="upper left", fontsize="small")
    fig.savefig(path, dpi=100)
    print(f"plot written to {path}")


if __name__ == "__main__":
    raise SystemExit(main())
