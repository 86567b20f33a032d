"""squall.common.serialization: blocks (raw or lz4) and cloudpickled functions."""

from __future__ import annotations

import functools
import threading

import pytest
from squall.common.serialization import (
    COMPRESS_ABOVE,
    SerializationError,
    dumps_block,
    dumps_function,
    loads_block,
    loads_function,
)


def test_small_block_is_stored_raw():
    records = [1, "two", (3, b"four"), None]
    block = dumps_block(records)
    assert block[:1] == b"\x00"
    assert len(block) <= COMPRESS_ABOVE + 1
    assert loads_block(block) == records


def test_large_block_is_lz4_compressed_and_smaller():
    records = [("key", i % 10) for i in range(5000)]
    block = dumps_block(records)
    assert block[:1] == b"\x01"
    import pickle

    assert len(block) < len(pickle.dumps(records, protocol=5))
    assert loads_block(block) == records
    assert loads_block(memoryview(block)) == records


def test_empty_block_round_trips():
    assert loads_block(dumps_block([])) == []


def test_block_of_lambdas_falls_back_to_cloudpickle():
    block = dumps_block([lambda x: x + 1])
    assert loads_block(block)[0](1) == 2


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x02whatever",  # unknown format tag
        b"\x00not a pickle",
        b"\x01not lz4 data at all",
    ],
)
def test_corrupt_block_raises_serialization_error(data):
    with pytest.raises(SerializationError):
        loads_block(data)


def test_truncated_blocks_raise_serialization_error():
    for block in (dumps_block([1, 2, 3]), dumps_block(list(range(2000)))):
        with pytest.raises(SerializationError):
            loads_block(block[: len(block) // 2])


def test_function_round_trip_with_closure_and_partial():
    offset = 10

    def add(x):
        return x + offset

    fn = loads_function(dumps_function(functools.partial(map, add)))
    assert list(fn([1, 2])) == [11, 12]


def test_unpicklable_closure_names_the_function():
    lock = threading.Lock()

    def guarded_increment(x):
        with lock:
            return x + 1

    with pytest.raises(SerializationError) as info:
        dumps_function(guarded_increment)
    message = str(info.value)
    assert "guarded_increment" in message
    assert "lock" in message.lower()
    assert info.value.__cause__ is not None


def test_loads_function_of_garbage_raises_serialization_error():
    with pytest.raises(SerializationError, match="cannot load function"):
        loads_function(b"\x80\x05garbage")


USER_SCRIPT = '''\
def make_checker(limit):
    def check(x):
        if x > limit:
            raise ValueError(f"{x} is over {limit}")
        return x
    return check

halve = lambda x: x / 0  # noqa: E731
'''


def _raise_and_format(fn, arg):  # type: ignore[no-untyped-def]
    import traceback

    try:
        fn(arg)
    except Exception:
        return traceback.format_exc()
    raise AssertionError("the function did not raise")


def test_shipped_code_keeps_its_file_and_source_lines_where_the_file_does_not_exist(tmp_path):
    """An executor on another host has no copy of the user's script: the traceback still shows
    the script's path, the line number and the source line, for nested functions and lambdas."""
    import linecache

    script = tmp_path / "user_job.py"
    script.write_text(USER_SCRIPT)
    namespace: dict[str, object] = {"__name__": "user_job_not_importable"}
    exec(compile(USER_SCRIPT, str(script), "exec"), namespace)
    nested_blob = dumps_function(namespace["make_checker"](3))  # type: ignore[operator]
    lambda_blob = dumps_function(namespace["halve"])
    script.unlink()  # as on a host that never had it
    linecache.clearcache()

    nested = _raise_and_format(loads_function(nested_blob), 5)
    assert f'File "{script}", line 4, in check' in nested
    assert 'raise ValueError(f"{x} is over {limit}")' in nested
    assert "<dynamic-code>" not in nested
    halved = _raise_and_format(loads_function(lambda_blob), 1)
    assert f'File "{script}", line 8, in <lambda>' in halved
    assert "halve = lambda x: x / 0" in halved


def test_lambdas_inside_records_keep_their_file_name():
    fn = loads_block(dumps_block([lambda x: x + 1]))[0]
    assert fn.__code__.co_filename == __file__


def test_shipped_lines_win_over_a_file_of_the_same_name_whose_other_lines_still_show(tmp_path):
    import linecache

    script = tmp_path / "job.py"
    source = "def fail(x):\n    raise ValueError(x)\n\nHERE = 'as shipped'\n"
    script.write_text(source)
    namespace: dict[str, object] = {"__name__": "job_not_importable"}
    exec(compile(source, str(script), "exec"), namespace)
    blob = dumps_function(namespace["fail"])
    script.write_text("# edited since\n# edited since\n\nHERE = 'on this host'\n")  # the host's copy differs
    linecache.clearcache()
    loads_function(blob)
    assert linecache.getline(str(script), 2) == "    raise ValueError(x)\n"  # the code that runs is the shipped code
    assert linecache.getline(str(script), 4) == "HERE = 'on this host'\n"  # code imported from the host's file runs as it is there
