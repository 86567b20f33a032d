"""Squall's scheduling from 4 to 1,000 executors, by discrete-event simulation (bench.scale_sim).

The two-stage micro-benchmark (bench.workloads) grown with the cluster, as in Drizzle's weak
scaling figure: 2 map tasks per executor per micro-batch and 1 reducer per executor, every map
pushing to every reducer. Modes: bsp (the scheduler launches each stage when the previous one is
done, reducers pull), pre (pre-scheduled reducers, group size 1), drizzle10 and drizzle100
(groups of 10 and 100 micro-batches). Each row: the real CPU time of the scheduler core's
handle() per micro-batch, the messages and bytes through the scheduler and each executor, and the
simulated time per micro-batch (submit to last result, divided by the batches).

Every map pushes to every other executor (unless a Drizzle group has at least N batches: its
reducers are then placed per batch, Settings.reduce_placement "auto"): N x 2N messages per
micro-batch, which this machine simulates at some 30,000 a second. So runs are bounded by
--budget (pushes simulated per run): at large N a run has fewer micro-batches than --batches (the
table says how many), a Drizzle group stays whole while it fits in 4x the budget, and below that
it is as large as the run. Above --simulate-up-to executors (default 512) no run is simulated.
At every N, the group table measures the scheduler's side of one whole group of 100 micro-batches
without its data plane: placing it (the SubmitJobs that plans the batches and sends each executor
its LaunchGroup) and every executor's GroupDone report, plus the heartbeats and ticks of the 10 s
such a group spans at 100 ms batches.

    python -m bench.scale [--executors 4 16 64 128 512 1000] [--modes bsp pre drizzle10 drizzle100]
                          [--batches 100] [--budget 250000] [--simulate-up-to 512] [--latency-us 50]
                          [--bandwidth-gbps 10] [--plot FILE] [--profile N]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time
from dataclasses import dataclass

from squall.common.settings import Settings

from bench import machine
from bench.scale_sim import MODES, NETWORKS, GroupCosts, Network, RunFigures, Shape, Simulation

DEFAULT_EXECUTORS = [4, 16, 64, 128, 512, 1000]
DEFAULT_BUDGET = 250_000  # pushes simulated per run
GROUP_BUDGET_FACTOR = 4  # a whole Drizzle group may take this many budgets
PLACEMENT_GROUP = 100
# Above this many executors one micro-batch is millions of simulated pushes (minutes here): the
# default measures there what the scheduler does for a group, not whole runs.
DEFAULT_SIMULATE_UP_TO = 512


@dataclass
class Row:
    mode: str
    executors: int
    figures: RunFigures

    def per_batch(self, value: float) -> float:
        return value / self.figures.batches


def batches_for(mode: str, shape: Shape, wanted: int, budget: int, reduce_placement: str = "auto") -> int:
    """Micro-batches of a run within the budget of simulated pushes (at least one, a whole group when it fits)."""
    group = MODES[mode]["group_size"]
    per_batch = reduce_placement == "per_batch" or (reduce_placement == "auto" and MODES[mode]["preschedule"] and group >= shape.executors)
    pushes = max(1, shape.maps if per_batch else shape.maps * (shape.executors - 1))  # per_batch: one push a mapper
    batches = max(1, budget // pushes)
    if group * pushes <= GROUP_BUDGET_FACTOR * budget:
        batches = max(batches, group)
    return min(wanted, batches)


def run_size(executors: int, modes: list[str], args: argparse.Namespace, network: Network,
             profiler: cProfile.Profile | None) -> tuple[list[Row], GroupCosts]:
    shape = Shape(executors, slots=args.slots, map_seconds=args.map_ms / 1000, reduce_seconds=args.reduce_ms / 1000)
    settings = Settings().replace(reduce_placement=args.reduce_placement)
    rows = []
    if executors <= args.simulate_up_to:
        sim = Simulation(shape, network, settings)
        warmup = min(args.warmup, batches_for("pre", shape, args.warmup, args.budget // 10))
        if warmup:
            sim.run("pre", warmup, measure=False)  # stages and code shipped, caches warm
        for mode in modes:
            batches = batches_for(mode, shape, args.batches, args.budget, args.reduce_placement)
            sim.profiler = profiler
            figures = sim.run(mode, batches)
            sim.profiler = None
            expected = sim.expected()
            wrong = [i for i, result in enumerate(figures.results) if result != expected]
            if wrong:
                raise AssertionError(f"{mode} at {executors} executors: batch {wrong[0]} gave {figures.results[wrong[0]]!r}, expected {expected!r}")
            rows.append(Row(mode, executors, figures))
            print(format_row(rows[-1]), flush=True)
    placing = Simulation(shape, network, settings)
    placing.profiler = profiler
    return rows, placing.group_costs(PLACEMENT_GROUP)


TIME_DRIVEN = ("Heartbeat", "Tick", "ExecutorConnected")  # what the scheduler handles however many batches run

HEADER = (f"{'mode':<11} {'N':>5} {'batches':>7} {'sched CPU':>10} {'beats+ticks':>11} {'sched msgs':>10} {'sched KB':>9} "
          f"{'exec msgs':>9} {'exec KB':>8} {'sim ms':>8} {'wall s':>7}")
UNITS = (f"{'':<11} {'':>5} {'':>7} {'ms/batch':>10} {'of which':>11} {'/batch':>10} {'/batch':>9} "
         f"{'/b/exec':>9} {'/b/exec':>8} {'/batch':>8} {'':>7}")


def format_row(row: Row) -> str:
    f = row.figures
    sched_msgs = row.per_batch(f.scheduler_in.messages + f.scheduler_out.messages)
    sched_kb = row.per_batch(f.scheduler_in.bytes + f.scheduler_out.bytes) / 1000
    exec_msgs = row.per_batch(f.executors_traffic.messages) / row.executors
    exec_kb = row.per_batch(f.executors_traffic.bytes) / row.executors / 1000
    time_driven = row.per_batch(sum(f.by_message[kind] for kind in TIME_DRIVEN)) * 1000
    return (f"{row.mode:<11} {row.executors:>5} {f.batches:>7} {row.per_batch(f.scheduler_seconds) * 1000:>10.3f} {time_driven:>11.3f} "
            f"{sched_msgs:>10.1f} {sched_kb:>9.1f} {exec_msgs:>9.1f} {exec_kb:>8.1f} "
            f"{row.per_batch(f.simulated_seconds) * 1000:>8.3f} {f.wall_seconds:>7.1f}")


def growth(rows: list[Row], modes: list[str]) -> list[str]:
    """Each mode's scheduler CPU and simulated time per micro-batch at each N, as multiples of the smallest N's."""
    lines = [f"\n{'growth over the smallest N':<27} " + " ".join(f"{r.executors:>7}" for r in rows if r.mode == modes[0])]
    for mode in modes:
        mine = [r for r in rows if r.mode == mode]
        if not mine:
            continue
        base = mine[0]
        cpu = [r.per_batch(r.figures.scheduler_seconds) / base.per_batch(base.figures.scheduler_seconds) for r in mine]
        sim = [r.per_batch(r.figures.simulated_seconds) / base.per_batch(base.figures.simulated_seconds) for r in mine]
        lines.append(f"{mode + ' sched CPU':<27} " + " ".join(f"{x:>6.1f}x" for x in cpu))
        lines.append(f"{mode + ' sim time':<27} " + " ".join(f"{x:>6.1f}x" for x in sim))
    return lines


def group_table(costs: dict[int, GroupCosts], span: float) -> list[str]:
    """What one group of 100 micro-batches costs the scheduler at each N over a span of `span`
    seconds: placing it, its GroupDone reports, and the heartbeats and ticks of the span."""
    from squall.services.scheduler.server import TICK_SECONDS

    beats = span / Settings().heartbeat_interval
    lines = [f"\nscheduler CPU for one group of {PLACEMENT_GROUP} micro-batches over {span:g} s (100 ms batches), seconds:",
             f"{'N':>5} {'placing':>9} {'GroupDone':>10} {'heartbeats':>11} {'ticks':>8} {'total':>8} {'per batch ms':>13} {'x smallest':>11}"]
    base = None
    for n, c in costs.items():
        heartbeats, ticks = n * beats * c.heartbeat, span / TICK_SECONDS * c.tick
        per_batch = (c.placing + c.group_done) / PLACEMENT_GROUP
        base = base or per_batch
        lines.append(f"{n:>5} {c.placing:>9.3f} {c.group_done:>10.3f} {heartbeats:>11.3f} {ticks:>8.3f} "
                     f"{c.placing + c.group_done + heartbeats + ticks:>8.3f} {per_batch * 1000:>13.3f} {per_batch / base:>10.1f}x")
    lines.append("per batch: placing and GroupDone over the group's batches (heartbeats and ticks come with time, not batches)")
    return lines


def plot(rows: list[Row], modes: list[str], path: str) -> None:
    from bench.plotting import pyplot

    plt = pyplot(path)
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for mode in modes:
        mine = [r for r in rows if r.mode == mode]
        ax.plot([r.executors for r in mine], [r.per_batch(r.figures.simulated_seconds) * 1000 for r in mine], marker="o", label=mode)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("executors")
    ax.set_ylabel("simulated time per micro-batch (ms)")
    ax.set_title("Two-stage micro-batches, 2 maps + 1 reducer per executor (simulated)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    print(f"\nplot: {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--executors", type=int, nargs="+", default=DEFAULT_EXECUTORS)
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    parser.add_argument("--batches", type=int, default=100, help="micro-batches per run, budget allowing (default 100)")
    parser.add_argument("--warmup", type=int, default=10, help="micro-batches of a first, unmeasured run (default 10)")
    parser.add_argument("--budget", type=int, default=DEFAULT_BUDGET, help=f"pushes simulated per run (default {DEFAULT_BUDGET:,})")
    parser.add_argument("--network", choices=list(NETWORKS), default="datacenter")
    parser.add_argument("--latency-us", type=float, help="per-message latency (default: the network's, 50 us for datacenter)")
    parser.add_argument("--bandwidth-gbps", type=float, help="each sender's link (default: the network's, 10 Gb/s for datacenter)")
    parser.add_argument("--slots", type=int, default=2, help="task slots each executor registers (default 2)")
    parser.add_argument("--map-ms", type=float, default=0.25, help="simulated time of a map task (default 0.25)")
    parser.add_argument("--reduce-ms", type=float, default=0.1, help="simulated time of a reduce task (default 0.1)")
    parser.add_argument("--simulate-up-to", type=int, default=DEFAULT_SIMULATE_UP_TO, metavar="N",
                        help=f"simulate runs whole up to N executors; above, only the scheduler's cost of a group (default {DEFAULT_SIMULATE_UP_TO})")
    parser.add_argument("--reduce-placement", choices=["auto", "spread", "per_batch"], default="auto",
                        help="where pre-scheduled reducers go (Settings.reduce_placement; default auto)")
    parser.add_argument("--plot", metavar="FILE", help="draw time per micro-batch against executors (the plot extra)")
    parser.add_argument("--profile", type=int, metavar="N", action="append", default=[],
                        help="cProfile the scheduler core's handle() calls at N executors (repeatable)")
    args = parser.parse_args(argv)
    if min(args.executors) < 1 or args.batches < 1 or args.warmup < 0 or args.budget < 1 or args.slots < 1:
        parser.error("--executors, --batches, --budget and --slots must be at least 1, --warmup at least 0")
    preset = NETWORKS[args.network]
    network = Network(preset.latency if args.latency_us is None else args.latency_us / 1e6,
                      preset.bandwidth if args.bandwidth_gbps is None else args.bandwidth_gbps * 1e9 / 8)
    print(machine.header("bench.scale", argv))
    print(f"network: {network.latency * 1e6:g} us a message, {network.bandwidth * 8 / 1e9:g} Gb/s a sender; tasks: map {args.map_ms:g} ms, "
          f"reduce {args.reduce_ms:g} ms (simulated); {args.slots} slots an executor; 2 maps and 1 reducer per executor a batch; "
          f"reducers placed {args.reduce_placement}; up to {args.batches} micro-batches a run after {args.warmup} warm-up, within {args.budget:,} simulated pushes a run\n")
    print(HEADER)
    print(UNITS)
    started = time.perf_counter()
    rows: list[Row] = []
    costs: dict[int, GroupCosts] = {}
    profiles: dict[int, cProfile.Profile] = {}
    for n in sorted(set(args.executors)):
        profiler = profiles.setdefault(n, cProfile.Profile()) if n in args.profile else None
        size_rows, costs[n] = run_size(n, args.modes, args, network, profiler)
        rows += size_rows
    print("\n".join(growth(rows, args.modes)))
    print("\n".join(group_table(costs, span=PLACEMENT_GROUP * 0.1)))
    print("\nsched CPU: CPU time (time.process_time) inside SchedulerState.handle on this machine (it also delays the simulated clock); msgs and KB: "
          "in + out.\nsim ms: simulated time from the run's submission to its last result, divided by its micro-batches.")
    for n, profiler in profiles.items():
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
        print(f"\nprofile of the scheduler core at {n} executors (all modes), by own time:\n{out.getvalue()}")
    if args.plot:
        plot(rows, args.modes, args.plot)
    print(f"\nsimulated in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
