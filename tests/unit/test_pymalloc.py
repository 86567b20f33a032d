"""Python's small-object allocator's figures (common.pymalloc), read from CPython's own statistics."""

from __future__ import annotations

import pytest
from squall.common import c_heap, pymalloc

pytestmark = pytest.mark.skipif(not pymalloc.figures(), reason="CPython with pymalloc on glibc only")

STATISTICS = """\
Small block threshold = 512, in 32 size classes.

class   size   num pools   blocks in use  avail blocks
-----   ----   ---------   -------------  ------------
    0     16           1              87           934
    1     32           2             852           168

# arenas allocated total           =                    5
# arenas reclaimed                 =                    2
# arenas highwater mark            =                    4
# arenas allocated current         =                    3
3 arenas * 1048576 bytes/arena     =            3,145,728

# bytes in allocated blocks        =            2,318,656
# bytes in available blocks        =              284,416
29 unused pools * 16384 bytes      =              475,136
# bytes lost to pool headers       =                7,680
Total                              =            3,145,728
"""


def test_parse_reads_the_arenas_and_the_bytes_in_them() -> None:
    assert pymalloc.parse(STATISTICS) == {
        "pymalloc_held": 3_145_728, "pymalloc_in_use": 2_318_656, "pymalloc_free": 284_416 + 475_136,
        "pymalloc_arenas": 3, "pymalloc_arenas_highwater": 4}


def test_parse_of_no_statistics_is_empty() -> None:
    assert pymalloc.parse("") == {}


def test_small_objects_show_in_use_and_their_arenas_held() -> None:
    before = pymalloc.figures()
    objects = [object() for _ in range(200_000)]  # 16 bytes each: 3.2 MB of blocks
    during = pymalloc.figures()
    assert during["pymalloc_in_use"] - before["pymalloc_in_use"] >= 3_000_000
    assert during["pymalloc_held"] % during["pymalloc_arenas"] == 0, "arenas are all of one size"
    assert during["pymalloc_held"] >= during["pymalloc_in_use"] + during["pymalloc_free"]
    assert during["pymalloc_arenas_highwater"] >= during["pymalloc_arenas"] >= before["pymalloc_arenas"]
    del objects


def test_the_allocator_figures_every_service_reports_include_them() -> None:
    assert {"pymalloc_held", "pymalloc_in_use", "pymalloc_free", "pymalloc_arenas"} <= set(c_heap.allocator())
