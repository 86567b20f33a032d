"""`connect()` and the Context: the driver's entry point to a cluster."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from common.plan import CollectionSource, LogicalPlan, RangeSource, SourceNode
from common.protocol import ClusterStatus
from common.serialization import dumps_block
from common.settings import Settings
from squall.client import Client
from squall.dataset import Dataset


class Context:
    def __init__(self, address: str, settings: Settings | None = None) -> None:
        self.settings = settings or Settings.from_env()
        self.address = address
        self.client = Client(address, self.settings)

    def __enter__(self) -> Context:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.client.close()

    def status(self) -> ClusterStatus:
        return self.client.status()

    @property
    def default_parallelism(self) -> int:
        """Task slots in the cluster right now (at least 2)."""
        return max(2, sum(e.slots for e in self.status().executors))

    # --- sources --------------------------------------------------------------------------------

    def range(self, start: int, stop: int | None = None, step: int = 1, partitions: int | None = None) -> Dataset:
        if stop is None:
            start, stop = 0, start
        if step == 0:
            raise ValueError("range() step must not be zero")
        n = self._partitions(partitions)
        return Dataset(self, (SourceNode(source=RangeSource(start=start, stop=stop, step=step, partitions=n)),), n)

    def parallelize(self, data: Iterable[Any], partitions: int | None = None) -> Dataset:
        items = list(data)
        n = self._partitions(partitions)
        slices = [dumps_block(items[len(items) * i // n : len(items) * (i + 1) // n]) for i in range(n)]
        return Dataset(self, (SourceNode(source=CollectionSource(slices=slices)),), n)

    # --- running --------------------------------------------------------------------------------

    def run_plan(self, plan: LogicalPlan) -> list[list[Any]]:
        return self.client.run_job(plan)

    def _partitions(self, partitions: int | None) -> int:
        n = self.default_parallelism if partitions is None else partitions
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"partitions must be a positive integer, got {n!r}")
        return n


def connect(address: str, settings: Settings | None = None) -> Context:
    """Connect to the scheduler at `address`; raises squall.ConnectionError if none answers."""
    return Context(address, settings)
