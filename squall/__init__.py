"""Squall: a low-latency micro-batch execution engine for Python."""

from squall import sinks, sources
from squall.common.serialization import SerializationError
from squall.common.settings import Settings
from squall.context import Context, connect
from squall.dataset import Dataset
from squall.errors import ConnectionError, ExecutorLostError, JobError, SchedulerRestartedError, SquallError, TaskError
from squall.local import ClusterStartError, LocalCluster
from squall.stream import Stream, StreamError

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
