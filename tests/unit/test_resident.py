"""A process's resident memory by kind of mapping (common.resident), from /proc/<pid>/smaps."""

from __future__ import annotations

import sys
import threading

import pytest
from squall.common.resident import parse_smaps, resident_by_kind

SMAPS = """\
55d0c0000000-55d0c0021000 rw-p 00000000 00:00 0                          [heap]
Rss:                 132 kB
Anonymous:           132 kB
7f0000000000-7f0000100000 rw-p 00000000 00:00 0 
Rss:                1024 kB
7f0000100000-7f0000101000 ---p 00000000 00:00 0 
Rss:                   0 kB
7f0000101000-7f0000901000 rw-p 00000000 00:00 0 
Rss:                  20 kB
7f1000000000-7f1000200000 r-xp 00000000 08:01 1234                       /usr/lib/libc.so.6
Rss:                 900 kB
7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0                          [stack]
Rss:                  36 kB
7ffc00100000-7ffc00102000 r-xp 00000000 00:00 0                          [vdso]
Rss:                   8 kB
"""


def test_parse_sorts_mappings_by_kind() -> None:
    assert parse_smaps(SMAPS, stack_pointers=[0x7f0000900f00]) == {
        "heap": 132 * 1024, "stacks": (20 + 36) * 1024, "anon_other": 1024 * 1024, "file": 900 * 1024}


def test_without_a_stack_pointer_a_thread_stack_is_other_anonymous_memory() -> None:
    assert parse_smaps(SMAPS, stack_pointers=[])["anon_other"] == (1024 + 20) * 1024


@pytest.mark.skipif(sys.platform != "linux", reason="/proc")
def test_waiting_threads_stacks_are_counted_as_stacks() -> None:
    before = resident_by_kind()
    release = threading.Event()
    threads = [threading.Thread(target=release.wait) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        during = resident_by_kind()
    finally:
        release.set()
        for thread in threads:
            thread.join()
    assert during["stacks"] >= before["stacks"] + 4 * 4096, "each waiting thread's stack holds at least a page"
    assert during["file"] > 0 and during["anon_other"] > 0
