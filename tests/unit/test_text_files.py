"""squall.common.text_files: naming files, splitting them by byte ranges, reading a split as lines,
writing a part file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from squall.common.text_files import TextDecodeError, expand, part_name, plan_splits, read_split, write_part


def lines_of(data: bytes) -> list[str]:
    """What every split of a file must give back, together: its lines without their newlines."""
    text = data.decode("utf-8")
    if not text:
        return []
    lines = text.split("\n")
    if text.endswith("\n"):
        lines.pop()  # a final newline ends the last line; it does not start an empty one
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def read_all(path: str, cuts: list[int]) -> list[str]:
    """The lines of every split [cuts[i], cuts[i+1]), in order."""
    return [line for start, end in zip(cuts, cuts[1:], strict=False) for line in read_split(path, start, end)]


def write(directory: Path, name: str, data: bytes) -> str:
    path = directory / name
    path.write_bytes(data)
    return str(path)


# Lines with empty ones, multi-byte characters and \r\n endings; with or without a final newline.
line = st.text(alphabet="ab é€\r", max_size=12).filter(lambda s: not s.endswith("\r"))
file_bodies = st.tuples(st.lists(line, max_size=12), st.booleans(), st.booleans()).map(
    lambda t: (("\r\n" if t[2] else "\n").join(t[0]) + ("\n" if t[1] and t[0] else "")).encode("utf-8")
)


@settings(max_examples=300, deadline=None)
@given(data=file_bodies, cut_points=st.lists(st.integers(min_value=0, max_value=200), max_size=8))
def test_any_splits_give_every_line_once_in_order(data, cut_points):  # type: ignore[no-untyped-def]
    with tempfile.TemporaryDirectory() as directory:
        path = write(Path(directory), "f.txt", data)
        cuts = sorted({0, len(data), *(c for c in cut_points if c < len(data))})
        assert read_all(path, cuts) == lines_of(data)


def test_a_line_crossing_a_split_end_belongs_to_the_split_it_starts_in(tmp_path):  # type: ignore[no-untyped-def]
    path = write(tmp_path, "f", b"alpha\nbeta\ngamma")  # beta at 6..10, gamma at 11..15
    assert list(read_split(path, 0, 7)) == ["alpha", "beta"]  # reads through the end of beta
    assert list(read_split(path, 7, 16)) == ["gamma"]  # skips the rest of beta
    assert list(read_split(path, 0, 6)) == ["alpha"]  # beta begins at 6, outside [0, 6)
    assert list(read_split(path, 6, 11)) == ["beta"]  # a split that starts at a line's start keeps it
    assert list(read_split(path, 12, 16)) == []  # no line begins there
    assert list(read_split(path, 3, 3)) == []


def test_empty_lines_and_no_trailing_newline(tmp_path):  # type: ignore[no-untyped-def]
    path = write(tmp_path, "f", b"\n\na\r\n\nb")
    assert list(read_split(path, 0, 100)) == ["", "", "a", "", "b"]
    assert read_all(path, [0, 1, 2, 3, 4, 5, 6, 7]) == ["", "", "a", "", "b"]


def test_empty_file(tmp_path):  # type: ignore[no-untyped-def]
    path = write(tmp_path, "empty", b"")
    assert list(read_split(path, 0, 0)) == []
    assert plan_splits([(path, 0)], 4) == plan_splits([(path, 0)], 1)
    assert len(plan_splits([(path, 0)], 4)) == 1


def test_bytes_that_are_not_utf8_name_the_file_and_offset(tmp_path):  # type: ignore[no-untyped-def]
    path = write(tmp_path, "latin1.txt", b"fine\ncaf\xe9\n")
    reader = read_split(path, 0, 100)
    assert next(reader) == "fine"
    with pytest.raises(TextDecodeError, match=r"latin1\.txt: not UTF-8 at byte 8"):
        next(reader)


@pytest.mark.parametrize("sizes", [[1000], [10, 10, 10], [0, 5, 1000], [3], [1, 1, 1, 1, 1, 1]])
@pytest.mark.parametrize("partitions", [1, 2, 4, 7])
def test_splits_cover_each_file_contiguously_and_are_enough(sizes, partitions):  # type: ignore[no-untyped-def]
    files = [(f"/data/{i}", size) for i, size in enumerate(sizes)]
    splits = plan_splits(files, partitions)
    for path, size in files:
        own = [s for s in splits if s.path == path]
        assert own, "every file gets a split"
        assert own[0].start == 0 and own[-1].end == size
        assert all(a.end == b.start for a, b in zip(own, own[1:], strict=False))
        assert len(own) <= max(1, size)
    assert len(splits) >= min(partitions, sum(max(1, size) for _, size in files))
    assert len(splits) <= partitions + len(files)


def test_a_big_file_makes_many_partitions():
    splits = plan_splits([("/big", 1 << 30)], 16)
    assert len(splits) == 16
    assert {s.end - s.start for s in splits} == {1 << 26}


def test_expand_files_directories_and_globs(tmp_path):  # type: ignore[no-untyped-def]
    for name in ("b.txt", "a.txt", "c.log", ".hidden", "_SUCCESS"):
        write(tmp_path, name, b"x\n")
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub", "z.txt", b"z\n")
    root = str(tmp_path)
    assert expand(f"{root}/b.txt") == [f"{root}/b.txt"]
    assert expand(root) == [f"{root}/a.txt", f"{root}/b.txt", f"{root}/c.log"]  # hidden, _ and dirs left out
    assert expand(f"{root}/*.txt") == [f"{root}/a.txt", f"{root}/b.txt"]
    assert expand(f"{root}/s*") == [f"{root}/sub/z.txt"]
    with pytest.raises(FileNotFoundError, match=r"nothing\*\.csv"):
        expand(f"{root}/nothing*.csv")
    write(tmp_path, "run[1].txt", b"y\n")
    assert expand(f"{root}/run[1].txt") == [f"{root}/run[1].txt"]  # an existing name is not a pattern
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty"):
        expand(f"{root}/empty")


def test_expand_makes_paths_absolute(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    write(tmp_path, "rel.txt", b"")
    monkeypatch.chdir(tmp_path)
    assert expand("rel.txt") == [str(tmp_path / "rel.txt")]


def test_write_part_then_read_back(tmp_path):  # type: ignore[no-untyped-def]
    target = tmp_path / "out"
    write_part(str(target), 3, iter(["one", "", "thré"]))
    assert os.listdir(target) == [part_name(3)] == ["part-00003"]
    assert list(read_split(str(target / "part-00003"), 0, 100)) == ["one", "", "thré"]
    write_part(str(target), 3, iter(["again"]))  # a task run again replaces its file whole
    assert (target / "part-00003").read_text() == "again\n"


def test_write_part_that_fails_leaves_nothing(tmp_path):  # type: ignore[no-untyped-def]
    def lines():  # type: ignore[no-untyped-def]
        yield "written"
        raise RuntimeError("the task failed half-way")

    write_part(str(tmp_path), 0, iter(["whole"]))
    with pytest.raises(RuntimeError, match="half-way"):
        write_part(str(tmp_path), 0, lines())
    with pytest.raises(RuntimeError, match="half-way"):
        write_part(str(tmp_path), 1, lines())
    assert os.listdir(tmp_path) == ["part-00000"]  # no temporary file, no torn part-00001
    assert (tmp_path / "part-00000").read_text() == "whole\n"


@settings(max_examples=40, deadline=None)
@given(bodies=st.lists(file_bodies, min_size=1, max_size=30), partitions=st.integers(min_value=1, max_value=50))
def test_many_files_planned_and_read_give_every_line_in_file_order(bodies, partitions):  # type: ignore[no-untyped-def]
    with tempfile.TemporaryDirectory() as directory:
        paths = [write(Path(directory), f"f{i:02d}.txt", data) for i, data in enumerate(bodies)]
        files = expand(directory)
        assert files == paths
        splits = plan_splits([(path, os.path.getsize(path)) for path in files], partitions)
        read = [line for split in splits for line in read_split(split.path, split.start, split.end)]
        assert read == [line for data in bodies for line in lines_of(data)]
