"""structlog set-up shared by every process: JSON lines when stderr is not a terminal."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog
from squall.common.settings import Settings


def configure(settings: Settings, service: str, **context: Any) -> structlog.typing.FilteringBoundLogger:
    level = logging.getLevelNamesMapping().get(settings.log_level.upper(), logging.INFO)
    fmt = settings.log_format
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    log: structlog.typing.FilteringBoundLogger = structlog.get_logger()  # structlog types it Any
    return log.bind(service=service, **context)


def get_logger(**context: Any) -> structlog.typing.FilteringBoundLogger:
    log: structlog.typing.FilteringBoundLogger = structlog.get_logger()
    return log.bind(**context)
