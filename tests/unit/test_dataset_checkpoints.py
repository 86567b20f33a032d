"""Dataset checkpoints in a checkpoint store (squall.common.dataset_checkpoints), and an executor's
task reading one back in place of a lineage: records come back as written, in order; a partition
missing, cut short or changed fails with an error naming it; a process without a store says so."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from squall.common import dataset_checkpoints
from squall.common.checkpoint_store import DirectoryStore
from squall.common.dataset_checkpoints import DatasetCheckpointError, partition_key, read_partition, write_partition
from squall.common.plan import CheckpointSource, ResultWrite, StageSpec
from squall.common.serialization import loads_block
from squall.services.executor.tasks import CodeCache, run_task

pytestmark = pytest.mark.timeout(30)

CHECKPOINT = "ck0123"


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[DirectoryStore]:
    installed = DirectoryStore(tmp_path / "checkpoints")
    dataset_checkpoints.install(installed)
    yield installed
    dataset_checkpoints.install(None)


def test_records_come_back_as_written_in_order(store: DirectoryStore) -> None:
    records = [(i % 7, f"value {i}", [i] * 3) for i in range(5000)]  # large: the block is compressed
    write_partition(CHECKPOINT, 3, iter(records))
    write_partition(CHECKPOINT, 4, iter([]))
    assert store.keys("datasets/") == [f"datasets/{CHECKPOINT}/00003", f"datasets/{CHECKPOINT}/00004"]
    assert list(read_partition(CHECKPOINT, 3)) == records
    assert list(read_partition(CHECKPOINT, 4)) == []


def test_a_missing_partition_names_its_key_and_store(store: DirectoryStore) -> None:
    write_partition(CHECKPOINT, 0, [1, 2])
    with pytest.raises(DatasetCheckpointError, match=f"partition 1 of dataset checkpoint {CHECKPOINT} is missing") as caught:
        read_partition(CHECKPOINT, 1)
    assert partition_key(CHECKPOINT, 1) in str(caught.value) and store.root in str(caught.value)


@pytest.mark.parametrize("damage, why", [
    (lambda data: data[:10], "shorter than its header"),
    (lambda data: data[:-1], "where [0-9]+ were written"),
    (lambda data: data[:-1] + bytes([data[-1] ^ 1]), "checksum differs"),
    (lambda data: b"XXXX" + data[4:], "not a dataset checkpoint"),
])
def test_a_damaged_partition_fails_saying_so(store: DirectoryStore, damage, why: str) -> None:  # type: ignore[no-untyped-def]
    write_partition(CHECKPOINT, 2, list(range(100)))
    key = partition_key(CHECKPOINT, 2)
    store.put(key, damage(store.get(key)))
    with pytest.raises(DatasetCheckpointError, match=why) as caught:
        read_partition(CHECKPOINT, 2)
    assert f"{key} in the checkpoint store {store.root} is damaged" in str(caught.value)


def test_without_a_store_both_ways_say_there_is_none() -> None:
    dataset_checkpoints.install(None)
    with pytest.raises(DatasetCheckpointError, match="no checkpoint store"):
        write_partition(CHECKPOINT, 0, [1])
    with pytest.raises(DatasetCheckpointError, match="no checkpoint store"):
        read_partition(CHECKPOINT, 0)


def test_a_task_reads_a_checkpointed_partition_as_its_input(store: DirectoryStore) -> None:
    for partition in range(2):
        write_partition(CHECKPOINT, partition, [(partition, x) for x in range(3)])
    spec = StageSpec(partitions=2, input=CheckpointSource(checkpoint_id=CHECKPOINT, partitions=2), ops=[], output=ResultWrite())
    out = run_task(spec, 1, [], CodeCache({}))
    assert loads_block(out.blocks[0]) == [(1, 0), (1, 1), (1, 2)]
