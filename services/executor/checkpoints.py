"""An executor's checkpoints: keyed state snapshots and the map outputs that feed keyed state.

Writes go through squall.common.checkpoint_store.AsyncWriter, so no task waits for the disk. A state
snapshot is pickled on the loop thread right after its batch (the table cannot change under it:
the partition's next batch has not been handed out yet), then written in the background; when the
write is durable, the loop is woken to tell the scheduler (`written()`). Each partition keeps its
two newest snapshots, so a snapshot the scheduler has not heard of yet never replaces the only
one it knows. Keys:

    state/<state id>/<partition>/<batch>         a partition's table after that batch
    maps/<state id>/<batch>/<stage>-<partition>  a map task's blocks (squall.services.scheduler.groups)
"""

from __future__ import annotations

import pickle
import threading
import time
from collections import deque
from typing import Any

import cloudpickle
import msgspec
from squall.common import transport
from squall.common.checkpoint_store import AsyncWriter, CheckpointStore, DirectoryStore
from squall.common.histogram import Histogram

KEEP_STATE_SNAPSHOTS = 2
_blocks_decoder = msgspec.msgpack.Decoder(list[bytes])


def state_prefix(state_id: str, partition: int) -> str:
    return f"state/{state_id}/{partition:05d}/"


class Checkpointer:
    def __init__(self, root: str, log: Any, store: CheckpointStore | None = None) -> None:
        self.log = log
        self.root = root  # where the executor's batch process opens the same store (dataset checkpoints)
        self.store = store if store is not None else DirectoryStore(root)
        self.writer = AsyncWriter(self.store, on_error=self._write_failed)
        self.wakeup = transport.Wakeup()  # the loop polls wakeup.fd for written()
        self._written: deque[tuple[str, int, int]] = deque()
        # For the metrics endpoint, counted on the writer thread as each write lands: how long a
        # state snapshot took from its batch's end (pickling included) to durable, and the bytes
        # of every checkpoint written (state snapshots and map outputs).
        self.state_write_seconds = Histogram()
        self.bytes_written = 0

    # --- writing (never blocks on the disk) -------------------------------------------------------

    def tracked(self) -> dict[str, int]:
        return {"written": len(self._written)}

    def write_map_output(self, key: str, blocks: list[bytes]) -> None:
        """Not fsynced: a replay needs it after its writer dies, which the page cache survives;
        after a machine dies the map task is recomputed from its source instead."""
        data = msgspec.msgpack.encode(blocks)
        self.writer.submit(key, data, on_done=lambda _key: self._count(len(data)), durable=False)

    def _count(self, size: int) -> None:
        self.bytes_written += size

    def write_state(self, state_id: str, partition: int, batch: int, table: dict[Any, Any]) -> None:
        started = time.monotonic()
        try:
            data = pickle.dumps(table, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # noqa: BLE001 - values of classes pickle cannot find by name
            try:
                data = cloudpickle.dumps(table, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as exc:  # noqa: BLE001
                self.log.error("state_not_checkpointed", state=state_id, partition=partition, batch=batch, error=repr(exc))
                return
        prefix = state_prefix(state_id, partition)

        def done(key: str) -> None:  # on the writer thread, once the snapshot is durable
            for old in self.store.keys(prefix)[:-KEEP_STATE_SNAPSHOTS]:
                self.store.delete(old)
            self._written.append((state_id, partition, batch))
            self.wakeup.signal()
            self.state_write_seconds.observe(time.monotonic() - started)
            self._count(len(data))

        self.writer.submit(f"{prefix}{batch:012d}", data, on_done=done)

    def written(self) -> list[tuple[str, int, int]]:
        """State snapshots made durable since the last call: (state id, partition, batch)."""
        self.wakeup.drain()
        out = []
        while self._written:
            out.append(self._written.popleft())
        return out

    def _write_failed(self, key: str, exc: BaseException) -> None:
        self.log.error("checkpoint_write_failed", key=key, error=repr(exc))

    # --- reading (recovery) -------------------------------------------------------------------

    def load_state(self, state_id: str, partition: int, up_to: int) -> tuple[int, dict[Any, Any]] | None:
        """The newest snapshot of the partition at or before batch `up_to`, or None. Raises
        ValueError when one exists but cannot be read."""
        prefix = state_prefix(state_id, partition)
        candidates = [k for k in self.store.keys(prefix) if int(k[len(prefix):]) <= up_to]
        if not candidates:
            return None
        key = candidates[-1]
        data = self.store.get(key)
        if data is None:
            raise ValueError(f"checkpoint {key} vanished while it was being read")
        try:
            return int(key[len(prefix):]), pickle.loads(data)
        except Exception as exc:
            raise ValueError(f"checkpoint {key} cannot be loaded: {type(exc).__name__}: {exc}") from exc

    def read_map_output(self, key: str) -> list[bytes] | None:
        data = self.store.get(key)
        if data is None:
            return None
        try:
            return _blocks_decoder.decode(data)
        except msgspec.DecodeError:
            self.log.warning("map_checkpoint_unreadable", key=key)
            return None

    # --- clean-up (in the background) ---------------------------------------------------------

    def prune_maps(self, state_id: str, before: int) -> None:
        """Delete the map-output checkpoints of the state's batches before `before`."""
        prefix = f"maps/{state_id}/"

        def prune() -> None:
            batches = sorted({k[len(prefix):].split("/", 1)[0] for k in self.store.keys(prefix)})
            for batch in batches:
                if int(batch) < before:
                    self.store.delete(f"{prefix}{batch}/")

        self._background(prune)

    def forget(self, state_ids: list[str]) -> None:
        def forget() -> None:
            self.writer.flush(timeout=10.0)  # the stream's last checkpoints land first, then all go
            for state_id in state_ids:
                self.store.delete(f"state/{state_id}/")
                self.store.delete(f"maps/{state_id}/")

        self._background(forget)

    def _background(self, fn: Any) -> None:
        def run() -> None:
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 - clean-up is best effort
                self.log.warning("checkpoint_cleanup_failed", error=repr(exc))

        threading.Thread(target=run, name="checkpoint-cleanup", daemon=True).start()

    def close(self) -> None:
        self.writer.close(timeout=2.0)
