"""The driver of a stream runs as long as the stream: like every service, it hands the free pages
of its C heap back to the operating system every memory_trim_interval seconds."""

from __future__ import annotations

import sys

import pytest
from squall.common import c_heap

from squall import LocalCluster, connect, sources
from tests.conftest import fast_settings
from tests.heap_holes import BLOCKS, holed_heap, rss_anon_mib
from tests.polling import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(90),
              pytest.mark.skipif(sys.platform != "linux" or not c_heap.allocator(), reason="glibc's malloc, /proc")]


def test_a_running_stream_trims_its_drivers_heap() -> None:
    with LocalCluster(executors=1, settings=fast_settings()) as cluster, \
            connect(cluster.address, cluster.settings.replace(memory_trim_interval=0.2)) as ctx:
        blocks = holed_heap()  # 32 MiB free inside the driver's heap, kept by malloc until trimmed
        holed = rss_anon_mib()
        stream = ctx.stream(sources.rate(100, partitions=1), batch_interval=0.05).foreach_batch(lambda b, records: None).start()
        try:
            wait_until(lambda: rss_anon_mib() < holed - 16, timeout=30, what="the driver's heap trimmed")
        finally:
            stream.stop(timeout=30)
        assert len(blocks) == BLOCKS // 2
