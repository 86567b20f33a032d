"""The key-value, set and ordering operators, text files in and out, against plain Python on one
3-executor cluster for the module."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import squall
from squall import LocalCluster
from tests.conftest import fast_settings

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]

EXECUTORS = 3

PROPERTY = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def ctx() -> Iterator[squall.Context]:
    with LocalCluster(executors=EXECUTORS, settings=fast_settings()) as cluster, cluster.connect() as context:
        yield context


PAIRS = [(f"k{i % 7}", i) for i in range(60)] + [(None, -1), ((1, "t"), 2)]


# --- (key, value) records -------------------------------------------------------------------------


@pytest.mark.parametrize("partitions", [1, 4])
def test_pair_operators_match_python(ctx, partitions):  # type: ignore[no-untyped-def]
    ds = ctx.parallelize(PAIRS, partitions)
    assert ds.map_values(lambda v: v * 10).collect() == [(k, v * 10) for k, v in PAIRS]
    assert ds.flat_map_values(lambda v: range(v % 3)).collect() == [(k, x) for k, v in PAIRS for x in range(v % 3)]
    assert ds.keys().collect() == [k for k, _ in PAIRS]
    assert ds.values().collect() == [v for _, v in PAIRS]
    assert ctx.parallelize([[1, 2], "ab"], partitions).keys().collect() == [1, "a"]  # any 2-item iterable is a pair


def test_pair_operators_keep_keys_for_a_shuffle_after_them(ctx):  # type: ignore[no-untyped-def]
    summed = ctx.parallelize(PAIRS, 3).map_values(lambda v: v + 1).reduce_by_key(lambda a, b: a + b, 2).collect()
    expected = Counter[object]()
    for k, v in PAIRS:
        expected[k] += v + 1
    assert dict(summed) == dict(expected) and len(summed) == len(expected)


@pytest.mark.parametrize(
    "build", [lambda ds: ds.map_values(str), lambda ds: ds.flat_map_values(list), lambda ds: ds.keys(), lambda ds: ds.values()]
)
def test_a_record_that_is_not_a_pair_is_a_task_error(ctx, build):  # type: ignore[no-untyped-def]
    with pytest.raises(squall.TaskError, match=r"\(\) needs \(key, value\) pairs, got int: 3") as info:
        build(ctx.parallelize([("a", "b"), 3], 2)).collect()
    assert info.value.error_type == "TypeError"


def test_pair_operators_check_their_function_where_written(ctx):  # type: ignore[no-untyped-def]
    ds = ctx.parallelize(PAIRS, 2)
    with pytest.raises(TypeError, match="expected a function"):
        ds.map_values(3)
    with pytest.raises(TypeError, match="expected a function"):
        ds.flat_map_values(None)


# --- distinct, sum, take, first ------------------------------------------------------------------


def test_distinct_matches_a_python_set(ctx):  # type: ignore[no-untyped-def]
    data = [3, 1, 3, "a", "a", None, (1, 2), (1, 2), 1.0, True, 2]
    out = ctx.parallelize(data, 3).distinct().collect()
    assert len(out) == len(set(data)) and set(out) == set(data)
    assert ctx.parallelize(data, 3).distinct(partitions=5).partitions == 5
    assert ctx.parallelize([], 2).distinct().collect() == []
    with pytest.raises(ValueError, match="partitions"):
        ctx.range(3).distinct(partitions=0)


@PROPERTY
@given(data=st.lists(st.one_of(st.integers(-20, 20), st.text(alphabet="ab", max_size=2)), max_size=80),
       before=st.integers(1, 5), after=st.none() | st.integers(1, 5))
def test_distinct_property(ctx, data, before, after):  # type: ignore[no-untyped-def]
    out = ctx.parallelize(data, before).distinct(after).collect()
    assert Counter(out) == Counter(set(data))


def test_sum(ctx):  # type: ignore[no-untyped-def]
    assert ctx.range(1000, partitions=7).sum() == sum(range(1000))
    assert ctx.parallelize([0.5, 1.25, 2], 2).sum(priority="latency") == 3.75
    assert ctx.range(0, partitions=3).sum() == 0
    assert ctx.range(10, partitions=3).filter(lambda x: x > 100).sum() == 0
    with pytest.raises(squall.TaskError, match="unsupported operand"):
        ctx.parallelize([1, "a"], 1).sum()


@pytest.mark.parametrize("n", [0, 1, 5, 37, 1000])
def test_take_is_the_first_records_in_partition_order(ctx, n):  # type: ignore[no-untyped-def]
    ds = ctx.range(100, partitions=4).filter(lambda x: x % 3 != 0 or x > 50)  # uneven partitions
    assert ds.take(n) == ds.collect()[:n]


def test_take_reads_at_most_n_records_of_each_partition(ctx):  # type: ignore[no-untyped-def]
    # Each partition of 100 raises on its fourth record: take(3) must never get that far.
    ds = ctx.range(400, partitions=4).map(lambda x: x if x % 100 < 3 else 1 // 0)
    assert ds.take(3) == [0, 1, 2]
    assert ds.take(3, priority="latency") == [0, 1, 2]
    with pytest.raises(squall.TaskError, match="ZeroDivisionError"):
        ds.take(4)


def test_take_and_first_bad_arguments(ctx):  # type: ignore[no-untyped-def]
    ds = ctx.range(10)
    with pytest.raises(ValueError, match="0 or more"):
        ds.take(-1)
    with pytest.raises(TypeError, match="integer"):
        ds.take(2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="priority"):
        ds.take(1, priority="soon")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="priority"):
        ds.sum(priority="soon")  # type: ignore[arg-type]


def test_first(ctx):  # type: ignore[no-untyped-def]
    assert ctx.range(5, 50, partitions=4).first() == 5
    assert ctx.range(40, partitions=4).filter(lambda x: x > 25).first(priority="latency") == 26
    with pytest.raises(ValueError, match="first\\(\\) of an empty dataset"):
        ctx.range(0, partitions=2).first()


# --- sort_by -------------------------------------------------------------------------------------


@PROPERTY
@given(
    data=st.one_of(st.lists(st.integers(-10**6, 10**6), max_size=120), st.lists(st.text(alphabet="abcé", max_size=4), max_size=120)),
    before=st.integers(1, 6),
    after=st.none() | st.integers(1, 6),
    ascending=st.booleans(),
)
def test_sort_by_property(ctx, data, before, after, ascending):  # type: ignore[no-untyped-def]
    ds = ctx.parallelize(data, before).sort_by(lambda x: x, ascending=ascending, partitions=after)
    assert ds.partitions == (before if after is None else after)
    assert ds.collect() == sorted(data, reverse=not ascending)


def test_sort_by_a_key_keeps_every_record_of_equal_keys(ctx):  # type: ignore[no-untyped-def]
    records = [(i % 5, f"r{i}") for i in range(200)]
    for ascending in (True, False):
        out = ctx.parallelize(records, 4).sort_by(lambda r: r[0], ascending=ascending, partitions=3).collect()
        assert [k for k, _ in out] == sorted((k for k, _ in records), reverse=not ascending)
        assert Counter(out) == Counter(records)


def test_sort_by_spreads_records_over_its_partitions(ctx):  # type: ignore[no-untyped-def]
    sizes = ctx.range(10_000, partitions=4).map(lambda x: (x * 7919) % 10_000).sort_by(lambda x: x, partitions=4) \
        .map_partitions(lambda records: [sum(1 for _ in records)]).collect()
    assert sum(sizes) == 10_000
    assert min(sizes) > 1000, sizes  # ranges from the sample are roughly equal


def test_sort_by_keys_that_do_not_compare(ctx):  # type: ignore[no-untyped-def]
    with pytest.raises(TypeError, match="sort_by keys must compare with each other.*'str' and 'int'"):
        ctx.parallelize([3, "a", 1], 2).sort_by(lambda x: x)
    # Keys the sample misses fail the job instead, with the same message.
    data = list(range(5000)) + ["late"]
    with pytest.raises((TypeError, squall.TaskError), match="sort keys must compare|sort_by keys must compare"):
        ctx.parallelize(data, 1).sort_by(lambda x: x, partitions=2).collect()


def test_sort_by_bad_arguments(ctx):  # type: ignore[no-untyped-def]
    ds = ctx.range(10)
    with pytest.raises(TypeError, match="expected a function"):
        ds.sort_by("x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="ascending"):
        ds.sort_by(abs, ascending="no")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="partitions"):
        ds.sort_by(abs, partitions=0)
    with pytest.raises(squall.TaskError, match="sort_by keys must be hashable, got list"):
        ds.sort_by(lambda x: [x]).collect()


# --- text files ----------------------------------------------------------------------------------


def write_files(directory: Path) -> dict[str, bytes]:
    files = {
        "a.txt": b"first line\n\nthird line, after an empty one\n" + b"x" * 5000 + b"\nlast line without a newline",
        "b.txt": b"",
        "c.txt": "caf\u00e9\r\n\u20ac\r\n".encode() + b"".join(b"line %d\n" % i for i in range(2000)),
        "d.log": b"not a .txt file\n",
    }
    for name, data in files.items():
        (directory / name).write_bytes(data)
    return files


def python_lines(data: bytes) -> list[str]:
    return [line.removesuffix("\r") for line in data.decode().split("\n")][: -1 if data.endswith(b"\n") else None] if data else []


@pytest.mark.parametrize("partitions", [None, 1, 3, 40])
def test_text_file_gives_every_line_in_file_order(ctx, tmp_path, partitions):  # type: ignore[no-untyped-def]
    files = write_files(tmp_path)
    ds = ctx.text_file(str(tmp_path / "*.txt"), partitions=partitions)
    expected = [line for name in ("a.txt", "b.txt", "c.txt") for line in python_lines(files[name])]
    assert ds.collect() == expected
    assert ds.partitions >= (partitions or EXECUTORS) and ds.partitions >= 3  # one per file at least
    assert ds.count() == len(expected)


def test_text_file_of_a_directory_and_of_one_file(ctx, tmp_path):  # type: ignore[no-untyped-def]
    files = write_files(tmp_path)
    everything = [line for name in sorted(files) for line in python_lines(files[name])]
    assert ctx.text_file(tmp_path).collect() == everything
    assert ctx.text_file(tmp_path / "d.log").collect() == ["not a .txt file"]


def test_text_file_splits_a_big_file(ctx, tmp_path):  # type: ignore[no-untyped-def]
    path = tmp_path / "big.txt"
    path.write_text("".join(f"{i},{'y' * (i % 50)}\n" for i in range(20_000)))
    ds = ctx.text_file(str(path), partitions=16)
    assert ds.partitions == 16
    assert ds.map(lambda line: int(line.split(",")[0])).collect() == list(range(20_000))
    counts = ds.map_partitions(lambda lines: [sum(1 for _ in lines)]).collect()
    assert len(counts) == 16 and all(c > 0 for c in counts)


def test_text_file_errors(ctx, tmp_path):  # type: ignore[no-untyped-def]
    with pytest.raises(FileNotFoundError, match=r"no text file matches .*nothing-\*\.txt"):
        ctx.text_file(str(tmp_path / "nothing-*.txt"))
    (tmp_path / "bad.txt").write_bytes(b"ok\n\xff\xfe\n")
    with pytest.raises(squall.TaskError, match=r"bad\.txt: not UTF-8 at byte 3") as info:
        ctx.text_file(str(tmp_path / "bad.txt")).collect()
    assert info.value.error_type == "TextDecodeError"
    with pytest.raises(ValueError, match="partitions"):
        ctx.text_file(str(tmp_path / "bad.txt"), partitions=0)


@pytest.mark.parametrize("partitions", [1, 5])
def test_save_as_text_files_round_trip(ctx, tmp_path, partitions):  # type: ignore[no-untyped-def]
    records = [1, "two", (3, "three"), None, "", "é", 2.5]
    target = tmp_path / "out" / "nested"
    ds = ctx.parallelize(records, partitions)
    assert ds.save_as_text_files(target) is None
    assert sorted(os.listdir(target)) == [f"part-{i:05d}" for i in range(partitions)]  # empty partitions too, nothing hidden
    assert ctx.text_file(target).collect() == [str(r) for r in records]


def test_save_as_text_files_from_a_shuffle_in_an_empty_directory(ctx, tmp_path):  # type: ignore[no-untyped-def]
    words = ctx.parallelize(["b a", "c a", "a"], 2).flat_map(str.split).map(lambda w: (w, 1))
    words.reduce_by_key(lambda a, b: a + b, 3).sort_by(lambda kv: kv[0], partitions=2).save_as_text_files(tmp_path, priority="latency")
    assert ctx.text_file(tmp_path).collect() == ["('a', 3)", "('b', 1)", "('c', 1)"]


def test_save_as_text_files_refuses_a_directory_that_is_not_empty(ctx, tmp_path):  # type: ignore[no-untyped-def]
    (tmp_path / "keep.txt").write_text("mine\n")
    ran = tmp_path.parent / f"{tmp_path.name}-ran"
    ds = ctx.range(4).map(lambda x: ran.touch())
    with pytest.raises(FileExistsError, match="not an empty directory"):
        ds.save_as_text_files(tmp_path)
    (tmp_path.parent / f"{tmp_path.name}-file").write_text("")
    with pytest.raises(FileExistsError):
        ds.save_as_text_files(tmp_path.parent / f"{tmp_path.name}-file")
    assert os.listdir(tmp_path) == ["keep.txt"] and not ran.exists()  # nothing ran
