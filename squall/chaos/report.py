"""`squall chaos`: run seeded trials and print, per fault, detection and recovery times and how
many survivors shared the replay (for a slow_executor fault, the stateless stream's p99 latency
before and during it), then a summary (differing outputs, hangs, medians). With speculation
"both", every trial runs twice: with speculation on, then off."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from squall.chaos.harness import FaultReport, TrialResult, run_trial
from squall.common.settings import Settings


def run_plan(trials: int, seed: int, kinds: tuple[str, ...], faults: int, executors: int, interval: float,
             out: Callable[[str], None] = print, speculation: tuple[bool, ...] = (True,), slow_for: float = 20.0,
             source: str = "generator", redis_url: str | None = None) -> list[TrialResult]:
    job = "Redis Streams counted into Redis" if source == "redis" else "generator and rate streams"
    out(f"chaos: {trials} trials from seed {seed}, {faults} fault(s) each from {', '.join(kinds)}; {job}; "
        f"{executors} executors, {interval * 1000:.0f} ms batches; output compared with plain Python")
    out(f"{'seed':>6} {'fault':<20} {'target':<18} {'detect ms':>9} {'recover s':>9} {'survivors':>9}  result")
    results = []
    for n, speculating in ((n, on) for n in range(trials) for on in speculation):
        began = time.monotonic()
        settings = Settings.from_env(log_level="info", log_format="json", speculation=speculating)
        if "slow_executor" in kinds:  # results relayed by the scheduler, on and off alike: it copies only
            settings = settings.replace(direct_results=False)  # jobs whose end it hears of as it happens
        result = run_trial(seed + n, kinds, faults, executors, interval, settings=settings, slow_for=slow_for,
                           source=source, redis_url=redis_url)
        results.append(result)
        verdict = "ok" if result.ok else "HUNG" if result.hung else "ERROR" if result.error else \
            "DIFFERS" if result.differences else "NOT GRACEFUL"
        for f in result.faults:
            detect = f"{f.detection * 1000:.0f}" if f.detection is not None else "-"
            recover = f"{f.recovery:.2f}" if f.recovery is not None else "-"
            survivors = str(f.survivors) if f.survivors is not None else "-"
            out(f"{result.seed:>6} {f.kind:<20} {f.target:<18} {detect:>9} {recover:>9} {survivors:>9}  {f.note}")
            if f.kind == "slow_executor":
                out(f"{'':>6} {slow_figure(f, speculating)}")
        detail = "; ".join(result.differences[:3]) or result.error or "; ".join(result.graceless)
        written = f", {result.records} records written" if result.records is not None else ""
        out(f"{result.seed:>6} {'':<20} {'':<18} {'':>9} {'':>9} {'':>9}  {verdict}: {result.batches} batches{written} in "
            f"{time.monotonic() - began:.1f}s {detail}")
    out(summary(results))
    return results


def slow_figure(f: FaultReport, speculating: bool) -> str:
    """The stateless stream's p99 batch latency before and during a slow_executor fault."""
    on = "on" if speculating else "off"
    if f.steady_p99 is None or f.fault_p99 is None:
        return f"stateless stream p99: too few batches to tell (speculation {on})"
    ratio = f.fault_p99 / f.steady_p99 if f.steady_p99 > 0 else float("inf")
    return (f"stateless stream p99: steady {f.steady_p99 * 1000:.1f} ms, while slowed {f.fault_p99 * 1000:.1f} ms "
            f"({ratio:.2f}x steady), speculation {on}")


def summary(results: list[TrialResult]) -> str:
    faults = [f for r in results for f in r.faults]
    kills = [f for f in faults if f.kind.startswith("kill_") and f.kind not in ("kill_shuffle_meta", "kill_scheduler")]
    detections = [f.detection for f in faults if f.detection is not None]
    recoveries = [f.recovery for f in kills if f.recovery is not None]
    unrecovered = sum(1 for f in kills if f.recovery is None)

    def median(values: list[float], unit: float, fmt: str) -> str:
        return format(statistics.median(values) * unit, fmt) if values else "-"

    return (
        f"\n{len(results)} trials, {len(faults)} faults: {sum(bool(r.differences) for r in results)} outputs differing "
        f"from plain Python, {sum(r.hung for r in results)} hangs, {sum(bool(r.error) for r in results)} errors, "
        f"{sum(bool(r.graceless) for r in results)} decommissions not graceful; "
        f"median detection {median(detections, 1000, '.0f')} ms, median recovery after an executor kill "
        f"{median(recoveries, 1, '.2f')} s ({unrecovered} kills never recovered to 1.5x steady latency)"
    )
