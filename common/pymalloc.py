"""Python's small-object allocator (pymalloc): how much of its arenas the objects use.

Objects of up to 512 bytes come from 16 KiB pools inside 1 MiB arenas that Python maps outside
malloc. An arena goes back to the operating system only once every block in it is free, so one
long-lived object left in an arena of per-batch objects holds the whole arena: resident memory
grows while the number of live blocks (sys.getallocatedblocks) stays flat. The figures come from
CPython's own statistics (what sys._debugmallocstats prints), written into a memory stream rather
than the process's stderr, so that no other thread's output is caught or lost; they take tens of
microseconds. Empty where that is not possible (not CPython, no glibc's open_memstream, or a
build without pymalloc).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import re
import sys
from functools import cache
from typing import Any

_FIGURE = re.compile(r"^(?:# )?(?P<name>[^=\n]+?)[ \t]*=[ \t]*(?P<value>[\d,]+)[ \t]*$", re.MULTILINE)


@cache
def _functions() -> tuple[Any, Any] | None:
    """CPython's statistics writer and libc (for open_memstream, fclose, free), or None."""
    if not sys.platform.startswith("linux") or sys.implementation.name != "cpython":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.open_memstream.restype = ctypes.c_void_p
        libc.open_memstream.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_size_t)]
        libc.fclose.argtypes = [ctypes.c_void_p]
        libc.free.argtypes = [ctypes.c_void_p]
        write_stats = ctypes.pythonapi._PyObject_DebugMallocStats
        write_stats.argtypes = [ctypes.c_void_p]
        write_stats.restype = ctypes.c_int
        return write_stats, libc
    except (OSError, AttributeError):
        return None


def statistics_text() -> str:
    """What sys._debugmallocstats() would print; empty if it cannot be had."""
    functions = _functions()
    if functions is None:
        return ""
    write_stats, libc = functions
    buffer, size = ctypes.c_void_p(), ctypes.c_size_t()
    stream = libc.open_memstream(ctypes.byref(buffer), ctypes.byref(size))
    if not stream:
        return ""
    try:
        written = write_stats(stream)
    finally:
        libc.fclose(stream)  # sets buffer and size
    try:
        return ctypes.string_at(buffer.value, size.value).decode(errors="replace") if written and buffer.value else ""
    finally:
        libc.free(buffer)


def parse(text: str) -> dict[str, int]:
    """The figures of the statistics text: bytes the arenas map (`pymalloc_held`), of which in
    blocks handed out (`pymalloc_in_use`), and free for reuse inside the arenas (`pymalloc_free`:
    free blocks in used pools, and unused pools); the arenas mapped now (`pymalloc_arenas`) and the
    most ever mapped at once (`pymalloc_arenas_highwater`)."""
    lines: dict[str, int] = {}
    for match in _FIGURE.finditer(text):
        lines.setdefault(match["name"], int(match["value"].replace(",", "")))
    arenas = lines.get("arenas allocated current")
    if arenas is None:
        return {}
    held = next((v for k, v in lines.items() if k.endswith("bytes/arena")), 0)
    unused_pools = next((v for k, v in lines.items() if "unused pools *" in k), 0)
    return {"pymalloc_held": held, "pymalloc_in_use": lines.get("bytes in allocated blocks", 0),
            "pymalloc_free": lines.get("bytes in available blocks", 0) + unused_pools,
            "pymalloc_arenas": arenas, "pymalloc_arenas_highwater": lines.get("arenas highwater mark", arenas)}


def figures() -> dict[str, int]:
    """pymalloc's figures now (see parse); empty where they cannot be had."""
    return parse(statistics_text())
