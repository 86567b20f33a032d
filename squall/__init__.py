"""Squall: a low-latency micro-batch execution engine for Python.

The names below are imported when first used (PEP 562): the services import modules of this
package (squall.services, squall.common, the ops that pickled plans name), and each service
process would otherwise pay for importing the whole user API at start-up.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from squall import sinks, sources
    from squall.common.serialization import SerializationError
    from squall.common.settings import Settings
    from squall.context import Context, connect
    from squall.dataset import Dataset
    from squall.errors import ConnectionError, ExecutorLostError, JobError, SchedulerRestartedError, SquallError, TaskError
    from squall.local import ClusterStartError, LocalCluster
    from squall.stream import Stream, StreamError

# name -> the module that defines it ("" for a submodule of this package)
_WHERE = {
    "ClusterStartError": "squall.local",
    "ConnectionError": "squall.errors",
    "Context": "squall.context",
    "Dataset": "squall.dataset",
    "ExecutorLostError": "squall.errors",
    "JobError": "squall.errors",
    "LocalCluster": "squall.local",
    "SchedulerRestartedError": "squall.errors",
    "SerializationError": "squall.common.serialization",
    "Settings": "squall.common.settings",
    "SquallError": "squall.errors",
    "Stream": "squall.stream",
    "StreamError": "squall.stream",
    "TaskError": "squall.errors",
    "connect": "squall.context",
    "sinks": "",
    "sources": "",
}

__all__ = [
    "ClusterStartError",
    "ConnectionError",
    "Context",
    "Dataset",
    "ExecutorLostError",
    "JobError",
    "LocalCluster",
    "SchedulerRestartedError",
    "SerializationError",
    "Settings",
    "SquallError",
    "Stream",
    "StreamError",
    "TaskError",
    "connect",
    "sinks",
    "sources",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module 'squall' has no attribute {name!r}")
    value = importlib.import_module(f"squall.{name}") if where == "" else getattr(importlib.import_module(where), name)
    globals()[name] = value  # the next lookup finds it without coming here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
