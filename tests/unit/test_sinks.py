"""squall.sinks without a cluster: atomic, idempotent batch files, and a best-effort publisher."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import msgspec
import pytest
import zmq
from squall.common.security import new_keypair
from squall.common.serialization import loads_block
from squall.common.settings import Settings

from squall.sinks import DirectorySink, PubSink, ReplayMismatchError, SinkError, subscribe
from tests.conftest import fast_settings
from tests.polling import wait_until

RECORDS = [("a", 1), ("b", [2, 3]), {"k": None}, 4.5, "text"]


def files(path: Path) -> list[str]:
    return sorted(os.listdir(path))


# ---------------------------------------------------------------- DirectorySink


def test_a_jsonl_batch_is_committed_whole_and_round_trips(tmp_path: Path) -> None:
    with DirectorySink(tmp_path) as sink:
        sink(42, RECORDS)
        assert files(tmp_path) == ["batch-000000000042.jsonl"]  # no temporary file left
        assert sink.read_batch(42) == [["a", 1], ["b", [2, 3]], {"k": None}, 4.5, "text"]  # tuples become lists
        assert sink.committed_batches() == [42]
    lines = (tmp_path / "batch-000000000042.jsonl").read_text().splitlines()
    assert lines[0] == '["a",1]' and len(lines) == len(RECORDS)


def test_a_pickle_batch_keeps_python_types(tmp_path: Path) -> None:
    with DirectorySink(tmp_path, format="pickle") as sink:
        sink(0, RECORDS)
        sink(1, [])
        assert files(tmp_path) == ["batch-000000000000.pickle", "batch-000000000001.pickle"]
        assert sink.read_batch(0) == RECORDS
        assert sink.read_batch(1) == []


def test_lexical_order_of_files_is_batch_order(tmp_path: Path) -> None:
    batches = [10, 2, 100_000, 0, 9, 123_456_789_012]
    with DirectorySink(tmp_path) as sink:
        for b in batches:
            sink(b, [b])
        assert sink.committed_batches() == sorted(batches)
        assert files(tmp_path) == [sink.file_for(b).name for b in sorted(batches)]


def test_a_replayed_batch_with_the_same_records_leaves_exactly_one_copy(tmp_path: Path) -> None:
    with DirectorySink(tmp_path) as sink:
        sink(3, RECORDS)
        before = sink.file_for(3).stat()
        sink(3, list(RECORDS))
        sink(3, RECORDS)
        assert files(tmp_path) == ["batch-000000000003.jsonl"]
        after = sink.file_for(3).stat()
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # the committed file is kept


@pytest.mark.parametrize("fmt", ["jsonl", "pickle"])
def test_a_replay_with_equal_records_in_different_bytes_is_accepted(tmp_path: Path, fmt: str) -> None:
    shared = "key" * 3
    with DirectorySink(tmp_path, format=fmt) as sink:
        sink(0, [{"a": 1, "b": 2}, shared, shared])
        sink(0, [{"b": 2, "a": 1}, shared, "".join(["key"] * 3)])  # dict order, object sharing differ
        assert sink.read_batch(0) == [{"a": 1, "b": 2}, shared, shared]


@pytest.mark.parametrize("fmt", ["jsonl", "pickle"])
def test_a_replay_with_different_records_raises_and_keeps_the_committed_file(tmp_path: Path, fmt: str) -> None:
    with DirectorySink(tmp_path, format=fmt) as sink:
        sink(7, [1, 2, 3])
        with pytest.raises(ReplayMismatchError, match=r"batch 7 .*different records.*sha256"):
            sink(7, [1, 2, 4])
        assert sink.read_batch(7) == [1, 2, 3]
        assert files(tmp_path) == [sink.file_for(7).name]


@pytest.mark.parametrize("bad", [object(), float("nan"), {1, 2}])
def test_a_record_json_cannot_hold_raises_type_error_naming_the_batch_and_writes_nothing(tmp_path: Path, bad: object) -> None:
    with DirectorySink(tmp_path) as sink:
        with pytest.raises(TypeError, match="batch 5: record 1 cannot be written as JSON"):
            sink(5, [1, bad, 3])
        assert files(tmp_path) == []
        assert sink.committed_batches() == []


def test_a_record_pickle_cannot_hold_raises_type_error_naming_the_batch(tmp_path: Path) -> None:
    with DirectorySink(tmp_path, format="pickle") as sink:
        with pytest.raises(TypeError, match="batch 5: records cannot be pickled"):
            sink(5, [threading.Lock()])
        assert files(tmp_path) == []


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_a_failed_write_names_batch_and_path_and_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    def disk_full(*args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with DirectorySink(tmp_path) as sink:
        monkeypatch.setattr(os, failing, disk_full)
        with pytest.raises(SinkError, match=r"batch 9: cannot write .*batch-000000000009\.jsonl: .*No space left") as info:
            sink(9, RECORDS)
        assert isinstance(info.value.__cause__, OSError)
        monkeypatch.undo()
        assert files(tmp_path) == []
        sink(9, RECORDS)  # the disk has room again: the same batch commits
        assert sink.committed_batches() == [9]


def test_a_missing_directory_is_a_sink_error_naming_the_batch(tmp_path: Path) -> None:
    sink = DirectorySink(tmp_path / "out")
    (tmp_path / "out").rmdir()
    with pytest.raises(SinkError, match="batch 0: cannot write"):
        sink(0, [1])
    sink.close()


def test_temporary_files_of_a_crashed_writer_are_removed_on_opening(tmp_path: Path) -> None:
    (tmp_path / ".batch-000000000001.jsonl.x1y2.tmp").write_text("half a bat")
    (tmp_path / "notes.txt").write_text("not ours")
    with DirectorySink(tmp_path) as sink:
        assert files(tmp_path) == ["notes.txt"]
        assert sink.committed_batches() == []


def test_a_closed_sink_refuses_batches_and_closing_twice_is_fine(tmp_path: Path) -> None:
    with DirectorySink(tmp_path) as sink:
        sink(0, [1])
    sink.close()
    with pytest.raises(SinkError, match="closed"):
        sink(1, [2])
    assert sink.committed_batches() == [0]


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="format"):
        DirectorySink(tmp_path, format="csv")
    with DirectorySink(tmp_path) as sink:
        for bad in (-1, 10**12, "3"):
            with pytest.raises(ValueError, match="batch index"):
                sink(bad, [])  # type: ignore[arg-type]


# ---------------------------------------------------------------- PubSink and subscribe


def first_batch_through(sink: PubSink, sub, records: list) -> tuple[int, list]:  # type: ignore[no-untyped-def]
    """Publish batch 0 until the subscriber has joined and got it (ZeroMQ's slow joiner)."""

    def publish_and_receive():  # type: ignore[no-untyped-def]
        sink(0, records)
        return sub.receive(timeout=0.02)

    return wait_until(publish_and_receive, timeout=5, what="the subscriber to join")


PLAIN = Settings(plaintext=True)  # loopback only, said explicitly
KEYED = fast_settings()  # the test session's cluster keys


def test_a_keyed_sink_serves_only_subscribers_holding_its_key_pair() -> None:
    with PubSink("tcp://127.0.0.1:*", settings=KEYED) as sink, subscribe(sink.endpoint, settings=KEYED, timeout=5) as sub:
        assert first_batch_through(sink, sub, [("x", 0)]) == (0, [("x", 0)])
        public, secret = new_keypair()  # a stranger: its own pair, and the sink's public key (no secret)
        stranger = zmq.Context.instance().socket(zmq.SUB)
        stranger.setsockopt(zmq.LINGER, 0)
        stranger.curve_publickey, stranger.curve_secretkey = public.encode(), secret.encode()
        stranger.curve_serverkey = KEYED.curve_public_key.encode()
        stranger.setsockopt(zmq.SUBSCRIBE, b"")
        stranger.connect(sink.endpoint)
        try:
            for b in range(1, 20):  # over a second of publishing: a handshake would have finished
                sink(b, [("y", b)])
                assert not stranger.poll(60), "a stranger received a batch"
        finally:
            stranger.close()


def test_a_sink_without_keys_is_refused_unless_plaintext_on_loopback() -> None:
    with pytest.raises(SinkError, match="squall keys"):
        PubSink("tcp://127.0.0.1:*", settings=Settings())
    with pytest.raises(SinkError, match="loopback"):
        PubSink("tcp://0.0.0.0:*", settings=PLAIN)


def test_a_subscriber_receives_published_batches_in_order() -> None:
    with PubSink("tcp://127.0.0.1:*", settings=PLAIN) as sink, subscribe(sink.endpoint, settings=PLAIN, timeout=5) as sub:
        assert sink.endpoint.startswith("tcp://127.0.0.1:") and not sink.endpoint.endswith("*")
        assert first_batch_through(sink, sub, [("x", 0)]) == (0, [("x", 0)])
        big = list(range(5000))  # large enough to be lz4-compressed
        for b in range(1, 6):
            sink(b, big if b == 3 else [("x", b)])
        got: list[tuple[int, list]] = []
        while not got or got[-1][0] != 5:
            item = sub.receive(timeout=5)
            assert item is not None, f"batch 5 never came; got {[b for b, _ in got]}"
            if item[0] != 0:  # extra copies of the warm-up batch may still be queued
                got.append(item)
        assert [b for b, _ in got] == [1, 2, 3, 4, 5]
        assert got[2][1] == big and got[0][1] == [("x", 1)]
        assert sink.dropped == 0


def test_the_header_frame_is_msgpack_batch_and_count() -> None:
    with PubSink("tcp://127.0.0.1:*", settings=PLAIN, topic=b"t") as sink:
        raw = zmq.Context.instance().socket(zmq.SUB)
        raw.setsockopt(zmq.LINGER, 0)
        raw.setsockopt(zmq.SUBSCRIBE, b"t")
        raw.connect(sink.endpoint)
        try:
            wait_until(sink.has_subscribers, timeout=5, what="the subscription")
            sink(12, ["a", "b"])
            assert raw.poll(5000)
            topic, header, payload = raw.recv_multipart()
        finally:
            raw.close()
    assert topic == b"t"
    assert msgspec.msgpack.decode(header) == {"batch": 12, "count": 2}
    assert loads_block(payload) == ["a", "b"]


def test_has_subscribers_follows_subscribers_joining_and_leaving() -> None:
    with PubSink("tcp://127.0.0.1:*", settings=PLAIN, topic=b"prices") as sink:
        assert not sink.has_subscribers()
        with subscribe(sink.endpoint, settings=PLAIN, topic=b"other"):
            sub = subscribe(sink.endpoint, settings=PLAIN, topic=b"pri")  # a prefix of our topic: it gets our batches
            wait_until(sink.has_subscribers, timeout=5, what="the subscription")
            sub.close()
            wait_until(lambda: not sink.has_subscribers(), timeout=5, what="the unsubscription")


def test_a_subscription_skips_topics_that_only_share_its_prefix_and_times_out() -> None:
    with PubSink("tcp://127.0.0.1:*", settings=PLAIN, topic=b"squall-other") as other, PubSink("tcp://127.0.0.1:*", settings=PLAIN) as ours:
        with subscribe(other.endpoint, settings=PLAIN, timeout=0.05) as sub:
            sub._sock.connect(ours.endpoint)  # one subscription, two publishers
            wait_until(lambda: other.has_subscribers() and ours.has_subscribers(), timeout=5, what="both publishers")
            other(1, ["not for us"])
            ours(2, ["ours"])
            assert sub.receive(timeout=5) == (2, ["ours"])
            assert sub.receive() is None
            assert list(sub) == []  # iteration ends after `timeout` of silence


def test_a_slow_subscriber_makes_batches_drop_without_blocking_the_sink() -> None:
    payload = [os.urandom(1 << 20)]  # 1 MiB that lz4 cannot shrink
    with PubSink("tcp://127.0.0.1:*", settings=PLAIN, high_water_mark=1, linger=0) as sink:
        slow = zmq.Context.instance().socket(zmq.SUB)
        slow.setsockopt(zmq.LINGER, 0)
        slow.setsockopt(zmq.RCVHWM, 1)
        slow.setsockopt(zmq.SUBSCRIBE, b"")
        slow.connect(sink.endpoint)
        try:
            wait_until(sink.has_subscribers, timeout=5, what="the slow subscriber")
            batches = iter(range(10_000))
            wait_until(lambda: sink(next(batches), payload) or sink.dropped, timeout=10, what="a dropped batch")
        finally:
            slow.close()
    assert sink.dropped >= 1


def test_a_closed_pub_sink_refuses_batches() -> None:
    sink = PubSink("tcp://127.0.0.1:*", settings=PLAIN)
    sink.close()
    with pytest.raises(SinkError, match="closed"):
        sink(0, [])


def test_a_bad_address_is_refused_without_leaking_a_socket() -> None:
    with pytest.raises(zmq.ZMQError):
        PubSink("nonsense://here", settings=KEYED)
