"""shuffle_meta's Prometheus metrics, read from its core when scraped (on the metrics endpoint's
HTTP thread: tables are copied before they are gone through, never changed)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import Metric
from prometheus_client.registry import Collector
from squall.common import metric_families as families
from squall.services.shuffle_meta.block_directory import BlockDirectory
from squall.services.shuffle_meta.state import ShuffleMetaState

SERVICE = "shuffle_meta"


def persisted_blocks(directory: BlockDirectory) -> int:
    """Partitions of persisted datasets some executor holds (each counted once)."""
    return sum(len(partitions) for partitions in list(directory.holders.values()))


class ShuffleMetaCollector(Collector):
    def __init__(self, state: ShuffleMetaState) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        state = self.state
        yield families.counter("squall_map_outputs_registered", "Map outputs executors registered.", SERVICE, state.outputs_registered)
        yield families.counter("squall_map_output_lookups", "Look-ups of a shuffle's map outputs by reducers.", SERVICE, state.lookups)
        yield families.gauge("squall_persisted_blocks", "Persisted dataset partitions held by some executor, as the block directory knows.",
                             SERVICE, persisted_blocks(state.directory))
