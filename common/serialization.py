"""How code and data are turned into bytes.

User code (functions, closures) travels cloudpickled; loading it happens only on executors and
in the driver. Data blocks (lists of records) are pickled with protocol 5 and compressed with
lz4 when they are large enough for it to pay; a one-byte prefix says which.

Code pickled by value keeps what a traceback needs: its file name (cloudpickle 3.1 replaces it
with "<dynamic-code>") and the source lines it was compiled from, read on the driver when the
code is pickled. Loading such code makes those lines known to the loading process's linecache,
so a task's traceback on an executor shows the user's file, line and source line, whether or
not the file exists there.
"""

from __future__ import annotations

import io
import linecache
import pickle
import tokenize
import types
from collections.abc import Callable
from typing import Any

import cloudpickle
import lz4.block

from squall.errors import SquallError

_RAW = b"\x00"
_LZ4 = b"\x01"
COMPRESS_ABOVE = 1024


class SerializationError(SquallError, ValueError):
    """A function or record that cannot be turned into bytes, or bytes that cannot be loaded."""


def dumps_function(fn: Callable[..., Any]) -> bytes:
    """Cloudpickle user code, with an error that names the function and the cause."""
    try:
        return _dumps_with_source(fn, pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        name = getattr(fn, "__qualname__", None) or repr(fn)
        raise SerializationError(
            f"cannot serialize function {name!r}: {type(exc).__name__}: {exc}"
        ) from exc


def loads_function(data: bytes | memoryview) -> Callable[..., Any]:
    try:
        return pickle.loads(data)  # type: ignore[no-any-return]
    except Exception as exc:
        raise SerializationError(f"cannot load function: {type(exc).__name__}: {exc}") from exc


def dumps_block(records: list[Any]) -> bytes:
    """A list of records as one self-describing block."""
    try:
        raw = pickle.dumps(records, protocol=5)
    except Exception:
        try:
            raw = _dumps_with_source(records, 5)
        except Exception as exc:
            raise SerializationError(
                f"cannot serialize records: {type(exc).__name__}: {exc}"
            ) from exc
    if len(raw) > COMPRESS_ABOVE:
        compressed: bytes = lz4.block.compress(raw, store_size=True)  # lz4 ships no types
        return _LZ4 + compressed
    return _RAW + raw


def loads_block(data: bytes | memoryview) -> list[Any]:
    view = memoryview(data)
    if len(view) == 0:
        raise SerializationError("empty block")
    tag, body = bytes(view[:1]), view[1:]
    try:
        if tag == _LZ4:
            return pickle.loads(lz4.block.decompress(body))  # type: ignore[no-any-return]
        if tag == _RAW:
            return pickle.loads(body)  # type: ignore[no-any-return]
    except Exception as exc:
        raise SerializationError(f"corrupt block: {type(exc).__name__}: {exc}") from exc
    raise SerializationError(f"unknown block format {tag!r}")


# --- code that remembers where it came from ------------------------------------------------------


class _SourcePickler(cloudpickle.Pickler):  # type: ignore[misc]  # cloudpickle ships no types: its Pickler is Any
    """cloudpickle, except that code objects keep their file name and carry their source lines."""

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is types.CodeType:
            reduce = self.dispatch_table.get(types.CodeType)
            if reduce is not None:
                rebuild, args = reduce(obj)
                first, lines = _source_of(obj)
                return _load_code, (rebuild, args, obj.co_filename, first, lines)
        return super().reducer_override(obj)


def _dumps_with_source(obj: Any, protocol: int) -> bytes:
    with io.BytesIO() as file:
        _SourcePickler(file, protocol=protocol).dump(obj)
        return file.getvalue()


def _source_of(code: types.CodeType) -> tuple[int, tuple[str, ...]]:
    """The first line number and the source lines of `code` (none if its file cannot be read)."""
    numbers = [line for _, _, line in code.co_lines() if line is not None]
    first, last = code.co_firstlineno, max(numbers, default=code.co_firstlineno)
    lines = linecache.getlines(code.co_filename)
    return first, tuple(lines[first - 1 : last])


def _load_code(rebuild: Callable[..., types.CodeType], args: tuple[Any, ...], filename: str, first: int,
               lines: tuple[str, ...]) -> types.CodeType:
    """Unpickling a code object: rebuild it under its own file name, and remember its source."""
    code = rebuild(*args)
    if code.co_filename != filename:
        code = code.replace(co_filename=filename)
    if lines:
        _remember_source(filename, first, lines)
    return code


_shipped_source: dict[str, dict[int, str]] = {}  # file name -> line number -> source line


def _remember_source(filename: str, first: int, lines: tuple[str, ...]) -> None:
    """Make linecache serve these lines of `filename`. Other lines come from a file of that name
    on this host, if there is one (code imported from it by name runs as it is here), and read as
    blank otherwise. (An entry without a modification time is never checked against the file
    system, so the file does not replace the shipped lines.)"""
    known = _shipped_source.get(filename)
    if known is None:
        known = _shipped_source[filename] = dict(enumerate(_read_lines(filename), 1))
    known.update(enumerate(lines, first))
    text = [known.get(number, "\n") for number in range(1, max(known) + 1)]
    linecache.cache[filename] = (sum(map(len, text)), None, text, filename)


def _read_lines(filename: str) -> list[str]:
    try:
        with tokenize.open(filename) as file:
            return file.readlines()
    except (OSError, SyntaxError, UnicodeDecodeError):
        return []
