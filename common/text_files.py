"""Text files as partitions: which files a path names, how they split into byte ranges, how one
range is read back as lines, and how a partition's lines are written as one part file.

A split [start, end) holds the lines whose first byte lies in it (Hadoop's rule: a split that
does not start at 0 skips the partial line it starts in, and every split reads through the end
of the line that crosses its end), so every line of a file belongs to exactly one split however
the byte ranges fall. Lines are UTF-8, and lose their trailing newline ("\\n" or "\\r\\n").
"""

from __future__ import annotations

import glob
import math
import os
import uuid
from collections.abc import Iterable, Iterator

from squall.common.plan import TextSplit


class TextDecodeError(ValueError):
    """A line of a text file that is not UTF-8; the message names the file and the byte offset."""


def expand(pattern: str) -> list[str]:
    """The files `pattern` names, as absolute paths, sorted: a file, a directory (its files, not
    those whose names start with "." or "_", as Hadoop and Spark skip them), or a glob pattern
    (whose matching directories count as their files). FileNotFoundError names the pattern when
    there are none."""
    literal = os.path.expanduser(pattern)
    # A path that exists is taken as written, even with glob characters in its name ("[1].txt").
    matches = [literal] if os.path.exists(literal) else sorted(glob.glob(literal))
    files: list[str] = []
    for match in matches:
        if os.path.isdir(match):
            files.extend(
                os.path.join(match, name)
                for name in sorted(os.listdir(match))
                if not name.startswith((".", "_")) and os.path.isfile(os.path.join(match, name))
            )
        else:
            files.append(match)
    if not files:
        raise FileNotFoundError(f"no text file matches {pattern!r}")
    return [os.path.abspath(path) for path in files]


def plan_splits(sizes: list[tuple[str, int]], partitions: int) -> list[TextSplit]:
    """Split files of the given (path, size in bytes) into at least `partitions` byte ranges in
    all (when there are that many bytes), each file into a share proportional to its size and
    at least one."""
    total = sum(size for _, size in sizes)
    splits: list[TextSplit] = []
    for path, size in sizes:
        share = math.ceil(partitions * size / total) if total else 1
        count = max(1, min(share, size))  # never more ranges than bytes
        splits.extend(TextSplit(path=path, start=size * i // count, end=size * (i + 1) // count) for i in range(count))
    return splits


def read_split(path: str, start: int, end: int) -> Iterator[str]:
    """The lines whose first byte lies in [start, end) of the file at `path` (see the module's
    docstring). TextDecodeError names the file and the line's offset for bytes that are not UTF-8."""
    with open(path, "rb") as file:
        position = start
        if start > 0:  # the line holding byte start - 1 belongs to the split before
            file.seek(start - 1)
            position = start - 1 + len(file.readline())
        while position < end:
            line = file.readline()
            if not line:
                return
            offset, position = position, position + len(line)
            if line.endswith(b"\n"):
                line = line[:-2] if line.endswith(b"\r\n") else line[:-1]
            try:
                yield line.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise TextDecodeError(f"{path}: not UTF-8 at byte {offset + exc.start} ({exc.reason})") from None


def part_name(partition: int) -> str:
    """The file a partition is saved to: part-00000, part-00001, ..."""
    return f"part-{partition:05d}"


def write_part(directory: str, partition: int, lines: Iterable[str]) -> None:
    """Write `lines` (each followed by a newline) as the partition's part file in `directory`.

    The lines go to a hidden temporary file first, renamed over the part file once complete, so
    a reader never sees a torn part file, and a task run again replaces it whole."""
    os.makedirs(directory, exist_ok=True)
    temporary = os.path.join(directory, f".{part_name(partition)}.{uuid.uuid4().hex}.tmp")
    try:
        with open(temporary, "x", encoding="utf-8", newline="\n") as file:
            for line in lines:
                file.write(line)
                file.write("\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, os.path.join(directory, part_name(partition)))
    except BaseException:  # a failed or stopped task leaves nothing behind
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
