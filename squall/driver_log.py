"""The log of Squall's code in the user's process (the driver): to stderr, never stdout.

The driver is the user's program, and its stdout is the user's output. structlog, left
unconfigured, prints to stdout; so unless the program configured structlog itself (then its
choice holds), Squall's driver-side lines go to stderr, rendered as structlog would by default.
The choice is made at each call, so a program may configure structlog after importing squall.
"""

from __future__ import annotations

import sys
from typing import Any

import structlog


class DriverLog:
    def __init__(self, **context: Any) -> None:
        self._context = context

    def _logger(self) -> Any:
        if structlog.is_configured():
            return structlog.get_logger(**self._context)
        return structlog.wrap_logger(structlog.PrintLogger(sys.stderr), **self._context)

    def __getattr__(self, level: str) -> Any:  # info, warning, ...: the logger's method
        return getattr(self._logger(), level)


def driver_log(component: str) -> DriverLog:
    return DriverLog(component=component)
