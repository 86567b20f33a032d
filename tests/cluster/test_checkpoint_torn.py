"""A writer SIGKILLed mid-put never leaves a torn checkpoint: readers see the old object or the new one.

A real child process rewrites one key with large self-describing objects (length + sha256 of the
body in a header) and is killed at random moments, half of them while a temp file is on disk,
i.e. between open() and rename(), the window where a non-atomic writer would tear the object,
the other half at a random moment after the writer has replaced the object once.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from squall.common.checkpoint_store import DirectoryStore

from tests.polling import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]

REPO = Path(__file__).resolve().parents[2]
KEY = "job/stage/part-0"
HEADER = struct.Struct(">4sQ32s")  # magic, body length, sha256(body)
MAGIC = b"SQCK"

CHILD = r"""
import hashlib, os, random, struct, sys
from squall.common.checkpoint_store import DirectoryStore

store = DirectoryStore(sys.argv[1])
rng = random.Random(os.getpid())
while True:
    body = rng.randbytes(8 << 20)
    store.put(sys.argv[2], struct.pack(">4sQ32s", b"SQCK", len(body), hashlib.sha256(body).digest()) + body)
"""


def verify(blob: bytes) -> None:
    """Fail unless `blob` is one whole object as the child wrote it."""
    assert len(blob) >= HEADER.size, f"torn: only {len(blob)} bytes"
    magic, length, digest = HEADER.unpack_from(blob)
    body = memoryview(blob)[HEADER.size :]
    assert magic == MAGIC, "torn: bad magic"
    assert len(body) == length, f"torn: body has {len(body)} bytes, header says {length}"
    assert hashlib.sha256(body).digest() == digest, "torn: body does not match its hash"


def temp_files(root: str) -> list[str]:
    return [name for _, _, names in os.walk(root) for name in names if name.endswith(".tmp")]


def start_writer(root: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", CHILD, root, KEY], cwd=REPO, stderr=subprocess.PIPE)


def kill(child: subprocess.Popen[bytes]) -> None:
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    assert child.returncode == -signal.SIGKILL, f"writer died on its own: {child.stderr.read().decode() if child.stderr else ''}"


def test_sigkill_mid_put_never_tears(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "ck")
    rng = random.Random()
    final = os.path.join(store.root, *KEY.split("/"))
    mid_write_kills = 0
    for round_ in range(8):
        child = start_writer(store.root)
        try:
            if round_ == 0:  # the child has started writing once a first version exists
                wait_until(lambda: store.keys() == [KEY], timeout=30, what="first checkpoint version")
            if round_ % 2 == 0:  # kill while a temp file is on disk: inside a put
                wait_until(lambda: temp_files(store.root), timeout=30, interval=0.001, what="a put in progress")
            else:  # or at an arbitrary moment once this writer has replaced the object at least once
                before = os.stat(final).st_ino
                wait_until(lambda ino=before: os.stat(final).st_ino != ino, timeout=30, what="a new version")
                time.sleep(rng.uniform(0.0, 0.1))  # picks the kill moment; not waiting for a condition
            kill(child)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(10)
        leftovers = temp_files(store.root)
        mid_write_kills += bool(leftovers)
        blob = store.get(KEY)
        assert blob is not None  # a first version existed before any kill, and a kill never removes it
        verify(blob)
        assert store.keys() == [KEY], f"round {round_}: listing shows more than the key: {store.keys()}"
        assert store.keys("job/") == [KEY]
        assert store.sweep_temp(older_than=-1.0) == len(leftovers)
        assert temp_files(store.root) == []
    assert mid_write_kills >= 4, f"only {mid_write_kills} kills landed inside a put"
