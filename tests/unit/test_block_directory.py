"""shuffle_meta as the block directory: which executors hold which partitions of persisted datasets,
driven through ShuffleMetaState.handle (every event validated)."""

from __future__ import annotations

import pytest
from squall.common import protocol
from squall.common.core import Send
from squall.common.protocol import PersistedBlock, PersistedLocations
from squall.services.shuffle_meta.state import ShuffleMetaState

from tests.unit.test_shuffle_meta_state import checked, forget_executor, receive

pytestmark = pytest.mark.timeout(10)


def block(dataset_id: str, partition: int, partitions: int = 4, size: int = 100) -> PersistedBlock:
    return PersistedBlock(dataset_id, partition, partitions, size)


def register(s: ShuffleMetaState, executor_id: str, *blocks: PersistedBlock) -> list[Send]:
    msg = protocol.RegisterPersisted(executor_id=executor_id, address=f"tcp://{executor_id}:1", blocks=list(blocks))
    return receive(s, msg, peer=executor_id.encode())


def dropped(s: ShuffleMetaState, executor_id: str, *blocks: PersistedBlock) -> list[Send]:
    return receive(s, protocol.DroppedPersisted(executor_id=executor_id, blocks=list(blocks)), peer=executor_id.encode())


def look_up(s: ShuffleMetaState, *dataset_ids: str, request_id: int = 1) -> PersistedLocations:
    (reply,) = receive(s, protocol.LookupPersisted(request_id=request_id, dataset_ids=list(dataset_ids)), peer=b"scheduler")
    assert reply.peer == b"scheduler" and reply.msg.request_id == request_id
    msg: PersistedLocations = reply.msg
    return msg


def forget(s: ShuffleMetaState, *dataset_ids: str) -> list[Send]:
    return receive(s, protocol.ForgetPersisted(dataset_ids=list(dataset_ids)), peer=b"scheduler")


def test_a_look_up_is_answered_at_once_with_the_holders_of_each_partition_held():
    s = checked()
    assert register(s, "e1", block("d", 0), block("d", 2)) == []
    assert register(s, "e2", block("d", 2), block("other", 0, partitions=1)) == []
    found = look_up(s, "d", "never-persisted")
    assert found.holders == {"d": {0: ["e1"], 2: ["e1", "e2"]}}  # partitions 1 and 3: no one holds them
    assert found.partitions == {"d": 4}
    assert look_up(s).holders == {}  # nothing asked, nothing answered, but answered


def test_a_dropped_block_leaves_its_partition_and_the_last_one_its_dataset():
    s = checked()
    register(s, "e1", block("d", 0), block("d", 1))
    register(s, "e2", block("d", 1))
    assert dropped(s, "e1", block("d", 1)) == []
    assert look_up(s, "d").holders == {"d": {0: ["e1"], 1: ["e2"]}}
    dropped(s, "e1", block("d", 0))
    dropped(s, "e2", block("d", 1))
    assert look_up(s, "d") == PersistedLocations(request_id=1, holders={}, partitions={})
    assert s.tracked()["persisted_blocks"] == 0 and s.tracked()["persisted_executors"] == 0
    dropped(s, "e3", block("d", 0))  # an executor the directory never heard of: nothing to do


def test_a_lost_executor_takes_its_blocks_and_only_its_with_it():
    s = checked()
    register(s, "e1", block("d", 0), block("d", 1))
    register(s, "e2", block("d", 1), block("f", 0, partitions=2))
    forget_executor(s, "e1")
    assert look_up(s, "d", "f").holders == {"d": {1: ["e2"]}, "f": {0: ["e2"]}}
    forget_executor(s, "e2")
    assert look_up(s, "d", "f").holders == {}
    assert s.tracked()["persisted_datasets"] == 0


def test_a_forgotten_dataset_goes_and_a_late_registration_does_not_bring_it_back():
    s = checked()
    register(s, "e1", block("d", 0), block("keep", 0, partitions=1))
    register(s, "e2", block("d", 1))
    assert forget(s, "d") == []
    assert look_up(s, "d", "keep").holders == {"keep": {0: ["e1"]}}
    register(s, "e2", block("d", 2))  # kept by a task that was running when the dataset was unpersisted
    assert look_up(s, "d").holders == {}
    assert s.tracked()["persisted_blocks"] == 1 and s.tracked()["persisted_executors"] == 1


def test_a_block_of_a_partition_out_of_range_or_disagreeing_on_the_count_is_ignored():
    s = checked()
    register(s, "e1", block("d", 0, partitions=4))
    register(s, "e2", block("d", 1, partitions=3), block("d", 7, partitions=4), block("e", 5, partitions=2))
    found = look_up(s, "d", "e")
    assert found.holders == {"d": {0: ["e1"]}} and found.partitions == {"d": 4}


def test_registering_a_block_twice_lists_its_holder_once():
    s = checked()
    register(s, "e1", block("d", 0))
    register(s, "e1", block("d", 0, size=120))
    assert look_up(s, "d").holders == {"d": {0: ["e1"]}}
    assert s.tracked()["persisted_blocks"] == 1


def test_the_directory_is_apart_from_map_outputs_forgetting_a_job_keeps_blocks():
    s = checked()
    register(s, "e1", block("d", 0))
    receive(s, protocol.ForgetJob(job_ids=["j"]), peer=b"scheduler")
    assert look_up(s, "d").holders == {"d": {0: ["e1"]}}
