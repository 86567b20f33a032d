"""The checkpoint store: atomic puts, prefix listing and deletion, key safety, the async writer."""

from __future__ import annotations

import errno
import os
import tempfile
import threading
from pathlib import Path

import pytest
from squall.common.checkpoint_store import (
    AsyncWriter,
    CheckpointError,
    DirectoryStore,
    check_key,
    default_checkpoint_dir,
    open_store,
)
from squall.common.settings import Settings

from tests.polling import wait_until

pytestmark = pytest.mark.timeout(30)


@pytest.fixture()
def store(tmp_path: Path) -> DirectoryStore:
    return DirectoryStore(tmp_path / "ck")


def temp_files(root: str) -> list[str]:
    return [os.path.join(d, n) for d, _, names in os.walk(root) for n in names if n.endswith(".tmp")]


# --- DirectoryStore -------------------------------------------------------------------------------


def test_round_trip_and_absent(store: DirectoryStore) -> None:
    assert store.get("job1/stage0/part3") is None
    store.put("job1/stage0/part3", b"\x00payload\xff")
    assert store.get("job1/stage0/part3") == b"\x00payload\xff"
    store.put("empty", b"")
    assert store.get("empty") == b""
    assert temp_files(store.root) == []


def test_overwrite_replaces_whole_object(store: DirectoryStore) -> None:
    store.put("k", b"a" * 10_000)
    store.put("k", b"short")
    assert store.get("k") == b"short"
    assert store.keys() == ["k"]


def test_root_is_created(tmp_path: Path) -> None:
    root = tmp_path / "a" / "b" / "c"
    DirectoryStore(root).put("x", b"1")
    assert (root / "x").read_bytes() == b"1"


def test_keys_by_prefix_sorted(store: DirectoryStore) -> None:
    for key in ["a/b/d/e", "a/b/c", "a/bc", "a/b-c", "b", "a/b/c2"]:
        store.put(key, key.encode())
    assert store.keys("a/b/") == ["a/b/c", "a/b/c2", "a/b/d/e"]
    assert store.keys("a/b") == ["a/b-c", "a/b/c", "a/b/c2", "a/b/d/e", "a/bc"]
    assert store.keys("a/b/c") == ["a/b/c", "a/b/c2"]
    assert store.keys() == sorted(["a/b/d/e", "a/b/c", "a/bc", "a/b-c", "b", "a/b/c2"])
    assert store.keys("zzz/") == []
    assert store.keys("b/") == []  # "b" is an object, not a directory


def test_get_of_a_directory_is_none(store: DirectoryStore) -> None:
    store.put("a/b", b"1")
    assert store.get("a") is None
    assert store.get("a/b/c") is None


def test_delete_prefix_prunes_and_is_idempotent(store: DirectoryStore) -> None:
    for key in ["run/1/a", "run/1/b/c", "run/10/a", "run/2/a"]:
        store.put(key, b"x")
    assert store.delete("run/1/") == 2
    assert store.keys() == ["run/10/a", "run/2/a"]
    assert not os.path.exists(os.path.join(store.root, "run", "1"))
    assert store.delete("run/1/") == 0
    assert store.delete("nothing/here/") == 0
    assert store.delete("run/") == 2
    assert store.keys() == []
    assert os.listdir(store.root) == []  # emptied directories pruned, root kept


def test_delete_single_key_and_string_prefix(store: DirectoryStore) -> None:
    for key in ["s/a1", "s/a2", "s/b"]:
        store.put(key, b"x")
    assert store.delete("s/a") == 2
    assert store.keys() == ["s/b"]
    assert store.delete("s/b") == 1
    assert not os.path.exists(os.path.join(store.root, "s"))


def test_delete_leaves_directory_of_a_live_writer(store: DirectoryStore) -> None:
    store.put("d/a", b"x")
    live_tmp = os.path.join(store.root, "d", ".b.1234.tmp")
    Path(live_tmp).write_bytes(b"partial")
    assert store.delete("d/") == 1
    assert os.path.exists(live_tmp)  # not ours to remove: a writer may be about to rename it


def test_put_survives_concurrent_delete_of_its_directory(store: DirectoryStore) -> None:
    stop = threading.Event()
    deleted: list[int] = []

    def deleter() -> None:
        while not stop.is_set():
            deleted.append(store.delete("p/"))

    thread = threading.Thread(target=deleter, daemon=True)
    thread.start()
    try:
        for i in range(100):
            store.put(f"p/q/r/{i}", b"x")  # must never fail because delete() pruned p/q/r under it
    finally:
        stop.set()
        thread.join(10)
    assert sum(deleted) + len(store.keys("p/")) == 100
    assert temp_files(store.root) == []


@pytest.mark.parametrize(
    "key",
    ["", "/abs", "a//b", "a/", "../x", "a/../b", "a/./b", ".", "..", "a\\b", "a\x00b", "sp ace", "é", ".hidden", "a/.tmp"],
)
def test_bad_keys_raise(store: DirectoryStore, key: str) -> None:
    with pytest.raises(ValueError, match="checkpoint key"):
        store.put(key, b"x")
    with pytest.raises(ValueError):
        store.get(key)
    with pytest.raises(ValueError):
        check_key(key)


@pytest.mark.parametrize("prefix", ["/", "../", "a//", "/a", "a/../"])
def test_bad_prefixes_raise(store: DirectoryStore, prefix: str) -> None:
    with pytest.raises(ValueError):
        store.keys(prefix)
    with pytest.raises(ValueError):
        store.delete(prefix)


def test_good_keys(store: DirectoryStore) -> None:
    for key in ["a", "A-b_c.d", "job.7/stage_2/part-0001.lz4", "0/1/2/3/4", "x..y"]:
        store.put(key, key.encode())
        assert store.get(key) == key.encode()


def test_temp_files_invisible_and_swept(store: DirectoryStore) -> None:
    store.put("dir/k", b"v")
    old = os.path.join(store.root, "dir", ".k.dead.tmp")
    fresh = os.path.join(store.root, ".other.live.tmp")
    Path(old).write_bytes(b"torn")
    Path(fresh).write_bytes(b"in progress")
    os.utime(old, (0, os.stat(old).st_mtime - 3600))
    assert store.keys() == ["dir/k"]
    assert store.keys("dir/") == ["dir/k"]
    assert store.sweep_temp(older_than=60.0) == 1
    assert not os.path.exists(old) and os.path.exists(fresh)
    assert store.sweep_temp(older_than=-1.0) == 1
    assert temp_files(store.root) == []
    assert store.get("dir/k") == b"v"


def test_root_under_a_regular_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(CheckpointError) as info:
        DirectoryStore(blocker / "root")
    assert str(blocker / "root") in str(info.value)
    assert isinstance(info.value, OSError)


def test_put_error_names_key_and_root_and_leaves_no_temp(store: DirectoryStore) -> None:
    store.put("a", b"object")
    with pytest.raises(CheckpointError) as info:
        store.put("a/b", b"x")  # "a" is an object, so it cannot be a directory
    assert "'a/b'" in str(info.value) and store.root in str(info.value)
    assert info.value.key == "a/b" and info.value.root == store.root and info.value.errno is not None
    store.put("d/e", b"x")
    with pytest.raises(CheckpointError):
        store.put("d", b"x")  # "d" is a directory of other keys
    assert temp_files(store.root) == []


def test_disk_full_during_write_leaves_no_temp(store: DirectoryStore, monkeypatch: pytest.MonkeyPatch) -> None:
    store.put("k", b"old")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(CheckpointError, match="No space left") as info:
        store.put("k", b"new" * 1000)
    monkeypatch.undo()
    assert info.value.errno == errno.ENOSPC
    assert temp_files(store.root) == []
    assert store.get("k") == b"old"


def test_open_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the default store is made here, not in the real <tmp>
    plain = open_store(str(tmp_path / "plain"))
    assert isinstance(plain, DirectoryStore) and plain.root == str(tmp_path / "plain")
    url = open_store(f"file://{tmp_path}/url%20dir")
    assert isinstance(url, DirectoryStore) and url.root == str(tmp_path / "url dir")
    default = open_store("")
    assert isinstance(default, DirectoryStore) and default.root == str(tmp_path / "squall-checkpoints")
    assert default.root == default_checkpoint_dir() == Settings(checkpoint_dir="").checkpoint_root  # one default
    for bad in ["s3://bucket/path", "http://x/y"]:
        with pytest.raises(ValueError, match="supported"):
            open_store(bad)
    assert open_store(f"file:{tmp_path}/single").root == str(tmp_path / "single")  # type: ignore[attr-defined]
    for bad in ["file://otherhost/path", "file:relative"]:
        with pytest.raises(ValueError, match="file:///"):
            open_store(bad)


# --- AsyncWriter ----------------------------------------------------------------------------------


class GatedStore(DirectoryStore):
    """Puts wait for `gate`; puts of keys in `fail` raise."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.fail: set[str] = set()
        self.order: list[str] = []

    def put(self, key: str, data: bytes, durable: bool = True) -> None:
        self.entered.set()
        assert self.gate.wait(10), "test never opened the gate"
        if key in self.fail:
            raise CheckpointError(f"injected failure for {key}", key, self.root)
        super().put(key, data, durable)
        self.order.append(key)


@pytest.fixture()
def gated(tmp_path: Path) -> GatedStore:
    return GatedStore(tmp_path / "gated")


def test_writer_order_flush_and_callbacks(gated: GatedStore) -> None:
    done: list[tuple[str, str]] = []
    writer = AsyncWriter(gated)
    keys = [f"b/{i:03d}" for i in range(50)]
    for i, key in enumerate(keys):
        assert writer.submit(key, str(i).encode(), on_done=lambda k: done.append((k, threading.current_thread().name)))
    assert writer.flush(10)
    assert gated.order == keys
    assert [k for k, _ in done] == keys
    assert {name for _, name in done} == {"checkpoint-writer"}
    assert (writer.written, writer.dropped, writer.errors, writer.pending_bytes) == (50, 0, 0, 0)
    assert gated.get("b/049") == b"49"
    assert writer.close(5)


def test_submit_never_waits_and_drops_over_budget(gated: GatedStore) -> None:
    gated.gate.clear()
    writer = AsyncWriter(gated, max_pending_bytes=100)
    assert writer.submit("a", b"x" * 60)
    assert gated.entered.wait(5)  # the writer thread is now stuck inside put("a")
    assert writer.submit("b", b"x" * 40)
    assert writer.pending_bytes == 100
    assert not writer.submit("c", b"x")  # would exceed the budget: dropped at once
    assert not writer.submit("huge", b"x" * 1000)
    assert writer.dropped == 2
    assert not writer.flush(0.05)  # still blocked
    gated.gate.set()
    assert writer.flush(10)
    assert (writer.written, writer.pending_bytes, gated.keys()) == (2, 0, ["a", "b"])
    assert writer.submit("c", b"x" * 100)  # budget freed
    assert writer.close(5)


def test_errors_are_reported_and_writer_lives_on(gated: GatedStore) -> None:
    gated.fail = {"bad"}
    seen: list[tuple[str, BaseException]] = []
    writer = AsyncWriter(gated, on_error=lambda key, exc: seen.append((key, exc)))
    assert writer.submit("ok1", b"1")
    assert writer.submit("bad", b"2")
    assert writer.submit("cb", b"3", on_done=lambda key: 1 / 0)
    assert writer.submit("ok2", b"4")
    assert writer.flush(10)
    assert [key for key, _ in seen] == ["bad", "cb"]
    assert isinstance(seen[0][1], CheckpointError) and isinstance(seen[1][1], ZeroDivisionError)
    assert (writer.written, writer.errors, writer.pending_bytes) == (3, 2, 0)
    assert gated.keys() == ["cb", "ok1", "ok2"]
    assert writer.close(5)


def test_broken_error_handler_does_not_kill_writer(gated: GatedStore) -> None:
    gated.fail = {"bad"}

    def handler(key: str, exc: BaseException) -> None:
        raise RuntimeError("handler bug")

    writer = AsyncWriter(gated, on_error=handler)
    writer.submit("bad", b"x")
    writer.submit("good", b"y")
    assert writer.flush(10)
    assert (writer.written, writer.errors) == (1, 1)
    assert writer.close(5)


def test_submit_validates_key_at_once(gated: GatedStore) -> None:
    writer = AsyncWriter(gated)
    with pytest.raises(ValueError):
        writer.submit("../escape", b"x")
    assert writer.close(5)


def test_close_flushes_stops_and_refuses(gated: GatedStore) -> None:
    writer = AsyncWriter(gated)
    for i in range(10):
        writer.submit(f"k{i}", b"x" * 1000)
    assert writer.close(10)
    assert writer.written == 10 and len(gated.keys()) == 10
    assert not writer._thread.is_alive()
    assert not writer.submit("late", b"x")
    assert writer.dropped == 1
    assert writer.flush(0.1)


def test_close_timeout_discards_backlog(gated: GatedStore) -> None:
    gated.gate.clear()
    writer = AsyncWriter(gated)
    writer.submit("stuck", b"x")
    assert gated.entered.wait(5)
    writer.submit("never", b"yy")
    assert not writer.close(0.05)
    assert writer.dropped == 1
    gated.gate.set()
    wait_until(lambda: not writer._thread.is_alive(), timeout=5, what="writer thread to exit")
    assert gated.keys() == ["stuck"]
    assert (writer.written, writer.pending_bytes) == (1, 0)


def test_concurrent_submitters(gated: GatedStore) -> None:
    writer = AsyncWriter(gated)

    def submit_many(t: int) -> None:
        for i in range(25):
            assert writer.submit(f"t{t}/{i:03d}", b"v")

    threads = [threading.Thread(target=submit_many, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert writer.flush(20)
    assert writer.written == 100 and len(gated.keys()) == 100
    for t in range(4):  # each submitter's own order is kept
        mine = [k for k in gated.order if k.startswith(f"t{t}/")]
        assert mine == sorted(mine)
    assert writer.close(5)


def test_a_put_that_need_not_be_durable_is_still_whole_and_atomic(store: DirectoryStore) -> None:
    store.put("m/1", b"x" * 1000, durable=False)
    assert store.get("m/1") == b"x" * 1000 and temp_files(store.root) == []
