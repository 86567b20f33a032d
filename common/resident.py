"""A process's resident memory by the kind of mapping that holds it (Linux's /proc/<pid>/smaps).

Resident anonymous memory is malloc's main heap (`heap`, the [heap] mapping), the threads' stacks
(`stacks`: the main thread's [stack] and each other thread's mapping, found by the stack pointer
the kernel reports for a thread blocked in a system call), and the other anonymous mappings
(`anon_other`: Python's small-object arenas, malloc's per-thread arenas and its blocks mapped on
their own; the kernel merges neighbouring ones, so smaps cannot tell them apart: the allocators'
own figures, common.c_heap.allocator, do). File-backed pages (`file`) are code and libraries.
Reading smaps costs about a millisecond per few hundred mappings; empty where there is no /proc.
"""

from __future__ import annotations

import os
from pathlib import Path

KINDS = ("heap", "stacks", "anon_other", "file")


def _thread_stack_pointers(pid: int | str) -> list[int]:
    """The stack pointer of every thread of `pid` that is in a system call (a service's threads
    are, nearly always: polling, waiting); a running thread reports none."""
    pointers = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return []
    for task in tasks:
        try:
            fields = (task / "syscall").read_text().split()
        except OSError:
            continue  # exited, or not ours to read
        if len(fields) == 9:  # number, six arguments, stack pointer, program counter
            pointers.append(int(fields[7], 16))
    return pointers


def parse_smaps(text: str, stack_pointers: list[int]) -> dict[str, int]:
    """Resident bytes by kind (KINDS) from smaps' text; a mapping holding one of `stack_pointers`
    counts as a stack."""
    kinds = dict.fromkeys(KINDS, 0)
    kind = ""
    for line in text.splitlines():
        first = line.split(maxsplit=1)[0] if line else ""
        if "-" in first and not first.endswith(":"):  # "start-end perms offset dev inode [path]"
            fields = line.split(maxsplit=5)
            start, end = (int(a, 16) for a in fields[0].split("-"))
            path = fields[5].strip() if len(fields) > 5 else ""
            if path == "[heap]":
                kind = "heap"
            elif path == "[stack]" or any(start <= sp < end for sp in stack_pointers):
                kind = "stacks"
            elif not path or path.startswith("[anon"):
                kind = "anon_other"
            elif path.startswith("["):
                kind = ""  # [vdso], [vvar], [vsyscall]: the kernel's
            else:
                kind = "file"
        elif first == "Rss:" and kind:
            kinds[kind] += int(line.split()[1]) * 1024
    return kinds


def resident_by_kind(pid: int | str = "self") -> dict[str, int]:
    """Resident bytes of process `pid` by kind of mapping (see the module docstring); empty if
    the process is gone or there is no /proc."""
    if pid == "self":
        pid = os.getpid()
    pointers = _thread_stack_pointers(pid)
    try:
        text = Path(f"/proc/{pid}/smaps").read_text()
    except OSError:
        return {}
    return parse_smaps(text, pointers)
