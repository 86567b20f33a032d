"""`python -m squall.services.executor` (also `squall executor`)."""

from __future__ import annotations

import argparse

from squall.common.log_config import configure
from squall.common.service_cli import add_common_arguments, serve, settings_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scheduler", help="scheduler address (SQUALL_SCHEDULER_ADDRESS)")
    parser.add_argument("--bind", help="block-serving endpoint, port * for any (SQUALL_EXECUTOR_BIND)")
    parser.add_argument("--advertise-host", help="host peers use to reach us (SQUALL_EXECUTOR_ADVERTISE_HOST)")
    parser.add_argument("--slots", type=int, help="tasks in flight at once (SQUALL_EXECUTOR_SLOTS)")
    parser.add_argument("--executor-id", help="unique name (default: hostname-pid)")
    add_common_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from squall.services.executor.server import ExecutorServer

    settings = settings_from_args(
        args,
        scheduler_address="scheduler",
        executor_bind="bind",
        executor_advertise_host="advertise_host",
        executor_slots="slots",
    )
    log = configure(settings, "executor")
    return serve(lambda: ExecutorServer(settings, log, executor_id=args.executor_id, ready_file=args.ready_file), log)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="squall executor", description="Run an executor.")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
