"""Command-line plumbing shared by the three services (`squall scheduler`, `python -m squall.services.x`).

SERVICES holds one `ServiceCommand` per service: its flags (most of them set a setting) and its
server class; the `squall` subcommand and `python -m` both run that entry. Server classes are
named, not imported, so common/ does not import the services.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from squall.common.log_config import configure
from squall.common.settings import Settings


@dataclass(frozen=True)
class Flag:
    """One service flag; `setting` names the Settings field it overrides (None: the flag is
    handed to the server's constructor as a keyword argument instead)."""

    option: str
    help: str
    setting: str | None = None
    type: Callable[[str], Any] = str


@dataclass(frozen=True)
class ServiceCommand:
    """How to start one service from the command line."""

    name: str  # the package under squall.services and the log's service name, e.g. "shuffle_meta"
    # the class in squall.services.<name>.server, built as Class(settings, log, ready_file=...,
    # **flags without a setting); imported only when the service starts, so `squall --help` stays light
    server_class: str
    description: str  # atop the command's own --help
    help: str  # its line in `squall --help`
    flags: Sequence[Flag]

    @property
    def prog(self) -> str:
        return "squall " + self.name.replace("_", "-")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        for flag in self.flags:
            parser.add_argument(flag.option, type=flag.type, help=flag.help)
        add_common_arguments(parser)

    def run(self, args: argparse.Namespace) -> int:
        mapping = {flag.setting: _dest(flag.option) for flag in self.flags if flag.setting is not None}
        settings = settings_from_args(args, **mapping)
        log = configure(settings, self.name)
        return serve(lambda: self._build_server(settings, log, args), log)

    def _build_server(self, settings: Settings, log: Any, args: argparse.Namespace) -> Any:
        server_class = getattr(importlib.import_module(f"squall.services.{self.name}.server"), self.server_class)
        return server_class(settings, log, ready_file=args.ready_file, **self._server_flags(args))

    def _server_flags(self, args: argparse.Namespace) -> dict[str, Any]:
        return {_dest(flag.option): getattr(args, _dest(flag.option)) for flag in self.flags if flag.setting is None}

    def main(self, argv: list[str] | None = None) -> int:
        parser = argparse.ArgumentParser(prog=self.prog, description=self.description)
        self.add_arguments(parser)
        return self.run(parser.parse_args(argv))


# The three services, as `squall <prog>` and `python -m squall.services.<name>` start them:
# ServiceCommand(name, server_class, description, help in `squall --help`, flags).
SERVICES = {
    command.name: command
    for command in [
        ServiceCommand("scheduler", "SchedulerServer", "Run the scheduler.", "run the scheduler service", [
            Flag("--bind", "endpoint to listen on (SQUALL_SCHEDULER_BIND)", "scheduler_bind"),
            Flag("--shuffle-meta", "shuffle_meta address handed to executors (SQUALL_SHUFFLE_META_ADDRESS)",
                 "shuffle_meta_address"),
        ]),
        ServiceCommand("executor", "ExecutorServer", "Run an executor.", "run an executor service", [
            Flag("--scheduler", "scheduler address (SQUALL_SCHEDULER_ADDRESS)", "scheduler_address"),
            Flag("--bind", "block-serving endpoint, port * for any (SQUALL_EXECUTOR_BIND)", "executor_bind"),
            Flag("--advertise-host", "host peers use to reach us (SQUALL_EXECUTOR_ADVERTISE_HOST)",
                 "executor_advertise_host"),
            Flag("--slots", "tasks in flight at once (SQUALL_EXECUTOR_SLOTS)", "executor_slots", type=int),
            Flag("--executor-id", "unique name (default: hostname-pid)"),
        ]),
        ServiceCommand("shuffle_meta", "ShuffleMetaServer", "Run the shuffle-metadata service.",
                       "run the shuffle-metadata service",
                       [Flag("--bind", "endpoint to listen on (SQUALL_SHUFFLE_META_BIND)", "shuffle_meta_bind")]),
    ]
}


def _dest(option: str) -> str:
    """argparse's destination for a long option: `--advertise-host` -> `advertise_host`."""
    return option.lstrip("-").replace("-", "_")


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
    code = server.run()  # a service may say how it ended (an executor that timed out leaving: 1)
    return code if isinstance(code, int) else 0
