"""`python -m squall.services.shuffle_meta` (also `squall shuffle-meta`)."""

from __future__ import annotations

import argparse

from squall.common.log_config import configure
from squall.common.service_cli import add_common_arguments, serve, settings_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bind", help="endpoint to listen on (SQUALL_SHUFFLE_META_BIND)")
    add_common_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from squall.services.shuffle_meta.server import ShuffleMetaServer

    settings = settings_from_args(args, shuffle_meta_bind="bind")
    log = configure(settings, "shuffle_meta")
    return serve(lambda: ShuffleMetaServer(settings, log, ready_file=args.ready_file), log)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="squall shuffle-meta", description="Run the shuffle-metadata service.")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
