"""What every stream source is: replayable by (partition, batch). The sources themselves are in
squall/sources.py (rate, generator, directory) and squall/redis_source.py (Redis Streams)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class StreamSource:
    """A replayable stream source of `partitions` partitions (made by rate(), generator(), directory() or redis_stream())."""

    partitions: int

    def batch_function(self, start: float, batch_interval: float) -> Callable[[int, int], Iterable[Any]]:
        """fn(partition, batch) for a stream that started at wall-clock `start`."""
        raise NotImplementedError

    def batch_records(self, batch: int, batch_interval: float) -> int | None:
        """How many records batch `batch` holds over all partitions, when the driver can tell
        without running the source; None when only running it tells (generator, directory)."""
        return None

    def run_of(self, start: float) -> str:
        """Which run a stream started at `start` is, for sinks that mark the batches they wrote
        (sinks.RedisSink): runs that make the same records for the same batch number are one run.
        By default every start is a run of its own, with batches of its own."""
        return repr(float(start))

    def lag(self) -> int | None:
        """Records the source holds that no batch has read yet, when it can tell (redis_stream);
        None when it cannot. The driver asks at most once a second."""
        return None
