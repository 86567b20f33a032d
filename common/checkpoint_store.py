"""Where task outputs and operator state are checkpointed, so a lost executor's work can be replayed.

A store is a flat map of "/"-separated keys to byte objects with four operations; a directory on a
local disk or shared volume implements it today, and an object store can implement it later. Writes
are atomic (temp file, fsync, rename) because a replay that reads a torn checkpoint would silently
produce wrong output, and executors die by SIGKILL. `AsyncWriter` keeps the disk off the critical
path: a task hands its bytes over and goes on; a bounded backlog drops rather than stalls.
"""

from __future__ import annotations

import collections
import logging
import os
import re
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Protocol
from urllib.parse import unquote, urlsplit

log = logging.getLogger(__name__)

_SEGMENT = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
_TMP_SUFFIX = ".tmp"


class CheckpointError(OSError):
    """A store could not do its I/O (disk full, permission, a key colliding with a "directory").

    An OSError subclass so that code already handling I/O failures handles it too; it carries the
    `key` (None for store-wide operations), the `root`, and the errno of the underlying failure.
    """

    def __init__(self, message: str, key: str | None = None, root: str = "", errno: int | None = None) -> None:
        super().__init__(message)  # one arg: str() is the message; defaults keep it picklable
        self.key, self.root, self.errno = key, root, errno


def check_key(key: str) -> str:
    """Return `key` if it is a safe relative key, else raise ValueError saying what is wrong.

    Segments may not start with "." either: the store reserves hidden names for its temp files,
    and this also rules out "." and "..", so a key can never escape the root.
    """
    if not isinstance(key, str) or not key:
        raise ValueError(f"checkpoint key must be a non-empty str, got {key!r}")
    for segment in key.split("/"):
        if not _SEGMENT.fullmatch(segment):
            raise ValueError(
                f"bad checkpoint key {key!r}: segment {segment!r} must be non-empty, use only [A-Za-z0-9._-], "
                "and not start with '.' (no absolute paths, '..', backslashes or NULs)"
            )
    return key


def _check_prefix(prefix: str) -> str:
    """A prefix is "" (everything), a key, or a key followed by "/"."""
    if prefix:
        check_key(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix


class CheckpointStore(Protocol):
    """What the engine needs from a checkpoint store (a directory now, an object store later)."""

    def put(self, key: str, data: bytes, durable: bool = True) -> None:
        """Store `data` under `key`; readers see no object or the whole one, even if the writer dies."""

    def get(self, key: str) -> bytes | None:
        """The object under `key`, or None if there is none."""

    def keys(self, prefix: str = "") -> list[str]:
        """Sorted keys that start with `prefix` ("a/b/" lists "a/b/c" and "a/b/d/e")."""

    def delete(self, prefix: str) -> int:
        """Remove every object whose key starts with `prefix`; return how many. Idempotent, and quiet
        about objects already gone. A string prefix: "run/1" also removes "run/10/..."; end with "/"."""


class DirectoryStore:
    """A CheckpointStore over a directory: one file per key, written as temp file + fsync + rename.

    Temp files are hidden (".<name>.<random>.tmp") next to their final name, so the rename is
    atomic and keys() never lists them; those of killed writers are removed by sweep_temp().
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.path.abspath(os.fspath(root))
        self._dirs = threading.Lock()  # a put's makedirs + open against a delete's pruning, in this process
        try:
            os.makedirs(self.root, exist_ok=True)
        except OSError as exc:
            raise self._error("create", None, exc) from exc

    def __repr__(self) -> str:
        return f"DirectoryStore({self.root!r})"

    def _path(self, key: str) -> str:
        return os.path.join(self.root, *key.split("/"))

    def _error(self, doing: str, key: str | None, exc: OSError) -> CheckpointError:
        what = f"checkpoint {key!r} under {self.root}" if key is not None else f"checkpoint root {self.root}"
        return CheckpointError(f"cannot {doing} {what}: {exc}", key, self.root, exc.errno)

    def put(self, key: str, data: bytes, durable: bool = True) -> None:
        path = self._path(check_key(key))
        parent, name = os.path.split(path)
        tmp = os.path.join(parent, f".{name}.{os.getpid()}.{uuid.uuid4().hex}{_TMP_SUFFIX}")  # the pid: who is writing
        try:
            for attempt in range(100):  # another process's delete() may prune `parent` before the open: retry
                try:
                    with self._dirs:  # in this process, pruning waits until the temp file holds the directory
                        os.makedirs(parent, exist_ok=True)
                        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
                    break
                except (FileNotFoundError, FileExistsError):  # makedirs raises the latter if rmdir wins its race
                    if attempt == 99:
                        raise
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    if durable:  # not durable: still atomic, and survives the writer's death, not the machine's
                        os.fsync(f.fileno())
                os.replace(tmp, path)
            except BaseException:
                _unlink_quietly(tmp)
                raise
        except OSError as exc:
            raise self._error("write", key, exc) from exc
        if durable:
            _fsync_dir(parent)  # makes the rename itself durable; best effort (some filesystems refuse)

    def get(self, key: str) -> bytes | None:
        try:
            with open(self._path(check_key(key)), "rb") as f:
                return f.read()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None  # absent, or a "directory" of other keys, which is not an object
        except OSError as exc:
            raise self._error("read", key, exc) from exc

    def keys(self, prefix: str = "") -> list[str]:
        found: list[str] = []
        for base, _dirs, files in self._walk(_check_prefix(prefix)):
            found.extend(base + name for name in files if not name.startswith(".") and (base + name).startswith(prefix))
        return sorted(found)

    def delete(self, prefix: str) -> int:
        removed = 0
        for key in self.keys(prefix):
            try:
                os.unlink(self._path(key))
                removed += 1
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                pass  # another deleter got there first, or the key changed shape under us
            except OSError as exc:
                raise self._error("delete", key, exc) from exc
        # Prune emptied directories bottom-up, then the prefix's ancestors; a failing rmdir means a
        # concurrent writer (or a temp file) lives there, which is exactly when it must stay.
        with self._dirs:
            for base, _dirs, _files in self._walk(prefix, topdown=False):
                if base.startswith(prefix) and base:
                    _rmdir_quietly(self._path(base[:-1]))
            head = prefix.rpartition("/")[0]
            while head and _rmdir_quietly(self._path(head)):
                head = head.rpartition("/")[0]
        return removed

    def sweep_temp(self, older_than: float = 60.0) -> int:
        """Remove temp files left by killed writers, if last modified over `older_than` seconds ago."""
        cutoff, removed = time.time() - older_than, 0
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                if name.startswith(".") and name.endswith(_TMP_SUFFIX):
                    path = os.path.join(dirpath, name)
                    try:
                        if os.stat(path).st_mtime <= cutoff:
                            os.unlink(path)
                            removed += 1
                    except FileNotFoundError:
                        pass
        return removed

    def _walk(self, prefix: str, topdown: bool = True) -> Iterator[tuple[str, list[str], list[str]]]:
        """os.walk under the prefix's directory, as (key prefix ending in "/", dirs, files); skips
        hidden dirs and dirs that cannot hold a match. Vanishing directories are simply not listed."""
        head = prefix.rpartition("/")[0]
        top = self._path(head) if head else self.root
        for dirpath, dirs, files in os.walk(top, topdown=topdown):
            rel = os.path.relpath(dirpath, self.root)
            base = "" if rel == "." else rel.replace(os.sep, "/") + "/"
            if topdown:
                dirs[:] = [d for d in dirs if not d.startswith(".") and _may_match(base + d + "/", prefix)]
            yield base, dirs, files


def _may_match(directory: str, prefix: str) -> bool:
    """Can keys under `directory` (ending in "/") start with `prefix`?"""
    return directory.startswith(prefix) or prefix.startswith(directory)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _rmdir_quietly(path: str) -> bool:
    try:
        os.rmdir(path)
        return True
    except OSError:
        return False


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


class AsyncWriter:
    """Writes checkpoints on one daemon thread, in submission order, so callers never wait for disk.

    The backlog is bounded by bytes: when a submit would exceed `max_pending_bytes` it is dropped
    (and counted), because a checkpoint is an optimisation for replay, while blocking a
    latency-critical task on a slow disk is a failure. A failed put is reported to `on_error`
    and counted; the thread lives on.
    """

    def __init__(
        self,
        store: CheckpointStore,
        max_pending_bytes: int = 64 << 20,
        on_error: Callable[[str, BaseException], None] | None = None,
    ) -> None:
        self._store, self._max = store, max_pending_bytes
        self._on_error = on_error or _log_error
        self._queue: collections.deque[tuple[str, bytes, Callable[[str], None] | None, bool]] = collections.deque()
        self._cond = threading.Condition()
        self._pending = self._written = self._dropped = self._errors = 0
        self._submitted = self._finished = 0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="checkpoint-writer", daemon=True)
        self._thread.start()

    def submit(self, key: str, data: bytes, on_done: Callable[[str], None] | None = None, durable: bool = True) -> bool:
        """Enqueue a put and return at once: True if accepted, False if dropped (over budget or closed).

        A malformed key raises ValueError here, at the caller's bug, not later on the thread.
        """
        check_key(key)
        with self._cond:
            if self._closed or self._pending + len(data) > self._max:
                self._dropped += 1
                return False
            self._queue.append((key, data, on_done, durable))
            self._pending += len(data)
            self._submitted += 1
            self._cond.notify_all()
        return True

    def flush(self, timeout: float) -> bool:
        """Wait until everything submitted before this call is written (or failed); False on timeout."""
        with self._cond:
            target = self._submitted
            return self._cond.wait_for(lambda: self._finished >= target, timeout)

    def close(self, timeout: float) -> bool:
        """Refuse new submits, flush, and stop the thread. False if the backlog was not written in time
        (what is left is discarded and counted as dropped; a put already under way cannot be stopped)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._closed = True
            target = self._submitted
            done = self._cond.wait_for(lambda: self._finished >= target, timeout)
            if not done:  # discard what never started; a put under way cannot be interrupted
                self._dropped += len(self._queue)
                self._finished += len(self._queue)
                self._pending -= sum(len(item[1]) for item in self._queue)
                self._queue.clear()
            self._cond.notify_all()
        if done:
            self._thread.join(max(0.0, deadline - time.monotonic()))
        return done

    @property
    def pending_bytes(self) -> int:
        """Bytes accepted but not yet written (including the put under way)."""
        return self._pending

    @property
    def written(self) -> int:
        return self._written

    @property
    def dropped(self) -> int:
        return self._dropped

    @property
    def errors(self) -> int:
        """Failed puts, plus on_done callbacks that raised."""
        return self._errors

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._closed)
                if not self._queue:
                    return  # closed and drained
                key, data, on_done, durable = self._queue.popleft()
            try:
                self._store.put(key, data, durable)
                with self._cond:
                    self._written += 1
                if on_done is not None:
                    on_done(key)
            except Exception as exc:  # noqa: BLE001 - reported, never fatal to the writer
                with self._cond:
                    self._errors += 1
                self._report(key, exc)
            with self._cond:
                self._pending -= len(data)
                self._finished += 1
                self._cond.notify_all()

    def _report(self, key: str, exc: BaseException) -> None:
        try:
            self._on_error(key, exc)
        except Exception:  # noqa: BLE001 - a broken error handler must not kill the writer
            log.exception("checkpoint on_error handler failed for %s", key)


def _log_error(key: str, exc: BaseException) -> None:
    log.warning("checkpoint write of %s failed: %s", key, exc)


def default_checkpoint_dir() -> str:
    """Where checkpoints go when checkpoint_dir is empty: squall-checkpoints in the system's temporary
    directory. Read at each call, since the temporary directory can change (TMPDIR, tests)."""
    return os.path.join(tempfile.gettempdir(), "squall-checkpoints")


def open_store(url: str) -> CheckpointStore:
    """The store a settings URL names: "" (default_checkpoint_dir()), a plain directory path, or
    file:///absolute/path. Other schemes (s3://, ...) are not implemented yet and raise ValueError."""
    if not url:
        return DirectoryStore(default_checkpoint_dir())
    if url.lower().startswith("file:"):
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise ValueError(f"bad file URL {url!r}: expected file:///absolute/path (no host)")
        return DirectoryStore(unquote(parts.path))
    if "://" in url:
        raise ValueError(f"unsupported checkpoint store URL {url!r}: supported are a directory path or file:///abs/path")
    return DirectoryStore(os.path.expanduser(url))
