"""The `squall` command: run one service, a local cluster, or the demo."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable

import squall
from squall.common.service_cli import SERVICES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="squall",
        description="Squall: a low-latency micro-batch execution engine. Every setting can also be "
        "given as a SQUALL_* environment variable (see common/settings.py).",
    )
    parser.add_argument("--version", action="version", version=f"squall {squall.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for command in SERVICES.values():
        p = sub.add_parser(command.prog.removeprefix("squall "), help=command.help, description=command.help)
        command.add_arguments(p)
        p.set_defaults(handler=command.run)

    local = sub.add_parser("local", help="start a local cluster and keep it running until Ctrl-C",
                           description="Start a scheduler, shuffle_meta and executors on loopback, print the "
                           "scheduler address, and run until Ctrl-C (or --seconds).")
    local.add_argument("--executors", type=int, default=4, help="executor processes (default 4)")
    local.add_argument("--seconds", type=float, default=None, help="stop after this long")
    local.set_defaults(handler=run_local)

    demo = sub.add_parser("demo", help="start a local cluster and run the YSB stream demo, printing live metrics",
                          description="Start a local cluster and run the Yahoo Streaming Benchmark's job as a stream "
                          "(JSON ad events -> views -> campaign join -> windowed counts), printing live throughput and "
                          "window latency until Ctrl-C or --seconds, then check every window against plain Python. "
                          "With --groups: the word count over micro-batches in BSP, pre-scheduled and Drizzle group modes.")
    demo.add_argument("--executors", type=int, default=4, help="executor processes (default 4)")
    demo.add_argument("--seconds", type=float, default=10.0, help="run time; 0 runs until Ctrl-C (default 10)")
    demo.add_argument("--rate", type=int, default=20_000, help="events per second offered (default 20000)")
    demo.add_argument("--window", type=float, default=2.0, help="window length in seconds (default 2)")
    demo.add_argument("--groups", action="store_true", help="the group-scheduling word count demo instead")
    demo.add_argument("--batches", type=int, default=60, help="--groups: micro-batches (default 60)")
    demo.add_argument("--lines", type=int, default=500, help="--groups: generated lines per micro-batch (default 500)")
    demo.add_argument("--group-size", type=int, default=20, help="--groups: micro-batches per group (default 20)")
    demo.set_defaults(handler=run_demo)

    health = sub.add_parser("health", help="ping a service over its own protocol; exit 0 if it answers, 1 if not",
                            description="Send a Ping to a Squall service (with the cluster's keys from SQUALL_CURVE_*) and "
                            "exit 0 if it answers as that service within the timeout, 1 otherwise. For container health "
                            "checks and Kubernetes probes.")
    health.add_argument("--service", required=True, choices=["scheduler", "shuffle-meta", "executor"])
    health.add_argument("--address", required=True, help="the service's endpoint, e.g. tcp://127.0.0.1:7077")
    health.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for the answer (default 2)")
    health.set_defaults(handler=run_health)

    status = sub.add_parser("status", help="print the cluster as its scheduler sees it: executors, streams, runs, events",
                            description="Ask the scheduler (with the cluster's keys from SQUALL_CURVE_*) for its snapshot and "
                            "print it as tables: executors (tasks, memory, stalls, last heartbeat), streams (rates, latency), "
                            "runs in flight (tasks done per stage), persisted datasets, recent events, and where its dashboard "
                            "and metrics are. Exit 1 if the scheduler does not answer.")
    _add_scheduler_arguments(status)
    status.add_argument("--json", action="store_true", help="print the raw snapshot as JSON instead")
    status.set_defaults(handler=run_status)

    top = sub.add_parser("top", help="the same as status, refreshed live until Ctrl-C",
                         description="Show the scheduler's snapshot as `squall status` does, refreshed every --interval "
                         "seconds until Ctrl-C (exit 0) or --iterations refreshes.")
    _add_scheduler_arguments(top)
    top.add_argument("--interval", type=_positive(float), default=1.0, help="seconds between refreshes (default 1)")
    top.add_argument("--iterations", type=_positive(int), default=None, help="stop after this many refreshes (default: until Ctrl-C)")
    top.set_defaults(handler=run_top)

    leave = sub.add_parser("decommission", help="let an executor leave gracefully: its state moves to the others, nothing is replayed",
                           description="Ask the scheduler to decommission an executor: it takes no new work, hands its keyed "
                           "state partitions to the other executors at the next group boundary, finishes its work in flight, "
                           "and exits 0. Waits until it has left (exit 0), or says why it may not (exit 1). SIGTERM to the "
                           "executor's process does the same.")
    leave.add_argument("--executor", required=True, help="the executor's id (as `squall health` or ctx.status() show it)")
    leave.add_argument("--scheduler", required=True, help="the scheduler's endpoint, e.g. tcp://127.0.0.1:7077")
    leave.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for it to leave (default 60)")
    leave.add_argument("--no-wait", action="store_true", help="return once the scheduler accepts")
    leave.set_defaults(handler=run_decommission)

    keys = sub.add_parser("keys", help="print a new cluster key pair (CurveZMQ) for every member of a cluster",
                          description="Print a new CurveZMQ key pair. Every service and driver of a cluster needs the "
                          "same pair (SQUALL_CURVE_PUBLIC_KEY, SQUALL_CURVE_SECRET_KEY); keep the secret secret.")
    keys.add_argument("--format", choices=["env", "shell", "k8s-secret", "compose"], default="env",
                      help="env: KEY=value lines (an env file for docker or Kubernetes); shell: export lines to source; "
                      "k8s-secret: a Secret manifest; compose: YAML environment entries")
    keys.add_argument("--namespace", default="squall", help="k8s-secret: the Secret's namespace (default squall)")
    keys.add_argument("--name", default="squall-keys", help="k8s-secret: the Secret's name (default squall-keys)")
    keys.set_defaults(handler=run_keys)

    chaos = sub.add_parser("chaos", help="failure-injection trials: kill and stop real processes, check the output",
                           description="Run a stateful stream (a running sum per key and a windowed count) on a local "
                           "cluster per trial, inject faults from a seeded plan into real processes, and compare the "
                           "output with plain Python exactly. Prints detection and recovery time per fault.")
    chaos.add_argument("--trials", type=int, default=5, help="trials, each on a fresh cluster (default 5)")
    chaos.add_argument("--seed", type=int, default=0, help="seed of the first trial; trial n uses seed + n")
    chaos.add_argument("--faults", default="kill_executor", help="comma-separated fault kinds to draw from "
                       "(kill_executor, kill_at_dispatch, kill_mid_shuffle, kill_mid_checkpoint, stop_executor, "
                       "straggler, slow_executor, kill_shuffle_meta, kill_scheduler, scale) or 'all'")
    chaos.add_argument("--per-trial", type=int, default=1, help="faults per trial (default 1)")
    chaos.add_argument("--executors", type=int, default=4)
    chaos.add_argument("--batch-interval", type=float, default=0.1)
    chaos.add_argument("--speculation", choices=("on", "off", "both"), default="on",
                       help="speculative copies of late micro-batches on, off, or each trial run both ways (default on)")
    chaos.add_argument("--slow-for", type=float, default=20.0, help="seconds a slow_executor fault lasts (default 20)")
    chaos.add_argument("--source", choices=("generator", "redis"), default="generator",
                       help="the trials' job: generator and rate streams (default), or records a writer process adds "
                       "to Redis Streams, counted by key into Redis and compared exactly once drained; each trial "
                       "starts a redis-server from PATH unless --redis-url is given")
    chaos.add_argument("--redis-url", default=None, help="with --source redis: an existing Redis to use instead of "
                       "starting one per trial (each trial's keys are its own and deleted after it)")
    chaos.set_defaults(handler=run_chaos)
    return parser


def run_local(args: argparse.Namespace) -> int:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with squall.LocalCluster(executors=args.executors) as cluster:
        print(f"Squall local cluster: scheduler at {cluster.address}, {args.executors} executors", flush=True)
        keys = cluster.workdir / "keys.sh"
        if cluster.settings.curve_secret_key:
            from squall.keys import format_keys

            keys.touch(mode=0o600)
            keys.write_text(format_keys("shell", keys=(cluster.settings.curve_public_key, cluster.settings.curve_secret_key)))
            print(f"  its keys: source {keys}  (drivers need SQUALL_CURVE_PUBLIC_KEY and SQUALL_CURVE_SECRET_KEY)", flush=True)
        print(f"  connect with: squall.connect({cluster.address!r})", flush=True)
        print(f"  dashboard: {cluster.dashboard_url or 'none'}", flush=True)
        print(f"  service logs in {cluster.workdir}; Ctrl-C to stop", flush=True)
        try:
            stop.wait(args.seconds)
        except KeyboardInterrupt:
            pass
        print("stopping", flush=True)
    return 0


def run_demo(args: argparse.Namespace) -> int:
    if args.groups:
        from squall import demo_groups

        demo_groups.run(executors=args.executors, batches=args.batches, lines_per_batch=args.lines, group_size=args.group_size)
        return 0
    from squall import demo

    ok = demo.run(executors=args.executors, rate=args.rate, window=args.window, seconds=args.seconds or None)
    return 0 if ok else 1


def _add_scheduler_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", required=True, help="the scheduler's endpoint, e.g. tcp://127.0.0.1:7077")
    parser.add_argument("--timeout", type=_positive(float), default=5.0, help="seconds to wait for the scheduler to answer (default 5)")


def _positive(kind: type[int] | type[float]) -> Callable[[str], float]:
    """An argparse type: a number of `kind` above zero (argparse reports anything else)."""
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
        return value
    return parse


def run_status(args: argparse.Namespace) -> int:
    from squall.status_command import status

    return status(args.address, args.timeout, args.json)


def run_top(args: argparse.Namespace) -> int:
    from squall.status_command import top

    return top(args.address, args.timeout, args.interval, args.iterations)


def run_health(args: argparse.Namespace) -> int:
    from squall.health import check_service

    ok, detail = check_service(args.service.replace("-", "_"), args.address, args.timeout)
    print(detail, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


def run_decommission(args: argparse.Namespace) -> int:
    from squall.decommission import decommission

    try:
        ok, detail = decommission(args.scheduler, args.executor, args.timeout, wait=not args.no_wait)
    except RuntimeError as exc:
        ok, detail = False, str(exc)
    print(detail if ok else f"squall: error: {detail}", file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


def run_keys(args: argparse.Namespace) -> int:
    from squall.keys import format_keys

    print(format_keys(args.format, args.namespace, args.name), end="")
    return 0


def run_chaos(args: argparse.Namespace) -> int:
    from squall.chaos import FAULT_KINDS
    from squall.chaos.report import run_plan

    if args.redis_url is not None and args.source != "redis":
        raise squall.SquallError("--redis-url is for --source redis")
    if args.source == "redis":
        from squall.chaos import redis_server

        redis_server.redis_client_library()
        if args.redis_url is None:
            redis_server.binary()  # the clear error before the first trial
    kinds = FAULT_KINDS if args.faults == "all" else tuple(k.strip() for k in args.faults.split(",") if k.strip())
    speculation = {"on": (True,), "off": (False,), "both": (True, False)}[args.speculation]
    results = run_plan(args.trials, args.seed, kinds, args.per_trial, args.executors, args.batch_interval,
                       speculation=speculation, slow_for=args.slow_for, source=args.source, redis_url=args.redis_url)
    return 0 if all(r.ok for r in results) else 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        return 130
    except squall.SquallError as exc:
        print(f"squall: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
