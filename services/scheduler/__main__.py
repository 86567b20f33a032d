"""`python -m squall.services.scheduler` (also `squall scheduler`)."""

from __future__ import annotations

import argparse

from squall.common.log_config import configure
from squall.common.service_cli import add_common_arguments, serve, settings_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bind", help="endpoint to listen on (SQUALL_SCHEDULER_BIND)")
    parser.add_argument("--shuffle-meta", help="shuffle_meta address handed to executors (SQUALL_SHUFFLE_META_ADDRESS)")
    add_common_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from squall.services.scheduler.server import SchedulerServer

    settings = settings_from_args(args, scheduler_bind="bind", shuffle_meta_address="shuffle_meta")
    log = configure(settings, "scheduler")
    return serve(lambda: SchedulerServer(settings, log, ready_file=args.ready_file), log)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="squall scheduler", description="Run the scheduler.")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
