"""Command-line plumbing shared by the three services (`squall scheduler`, `python -m squall.services.x`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from squall.common.settings import Settings


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-level", help="debug, info, warning or error (SQUALL_LOG_LEVEL)")
    parser.add_argument("--log-format", choices=["auto", "json", "console"], help="(SQUALL_LOG_FORMAT)")
    parser.add_argument("--ready-file", help="write the bound endpoint to this file once listening")
    parser.add_argument("--parent-pid", type=int, help=argparse.SUPPRESS)


def settings_from_args(args: argparse.Namespace, **mapping: str) -> Settings:
    """Environment first, then flags: `mapping` maps setting names to argparse destinations."""
    overrides: dict[str, Any] = {
        "log_level": args.log_level,
        "log_format": args.log_format,
        "parent_pid": args.parent_pid,
    }
    for setting, dest in mapping.items():
        overrides[setting] = getattr(args, dest)
    return Settings.from_env(**overrides)


def serve(make_server: Callable[[], Any], log: Any) -> int:
    """Build a service and run it; one that may not start (no keys, plaintext off loopback)
    says why and exits with status 2 instead of a traceback."""
    from squall.common.security import SecurityError

    try:
        server = make_server()
    except SecurityError as exc:
        log.error("refused_to_start", reason=str(exc))
        return 2
    server.run()
    return 0
