"""squall.result_assembly: one block per result partition, from one attempt, handed over once."""

from __future__ import annotations

import pytest
from squall.common.protocol import ResultPartition

from squall.result_assembly import ResultAssembly

pytestmark = pytest.mark.timeout(10)


def part(partition: int, attempt: int = 0, partitions: int = 3, job: str = "run-1.0") -> ResultPartition:
    job_id = job if attempt == 0 else f"{job}~{attempt}"
    return ResultPartition(executor_id="e", job_id=job_id, partition=partition, attempt=attempt, partitions=partitions)


def test_whole_once_every_partition_is_in_in_partition_order_at_the_last_ones_arrival():
    a = ResultAssembly()
    assert a.take(0, part(2), b"c", 1.0) is None
    assert a.take(0, part(0), b"a", 2.0) is None
    assert a.pending(0) == 2
    whole = a.take(0, part(1), b"b", 3.0)
    assert whole is not None and whole.blocks == [b"a", b"b", b"c"] and whole.finished_at == 3.0
    assert len(a) == 0  # nothing kept once handed over


def test_duplicates_and_partitions_the_job_lacks_change_nothing():
    a = ResultAssembly()
    assert a.take(0, part(0), b"a", 1.0) is None
    assert a.take(0, part(0), b"other", 1.0) is None
    assert a.take(0, part(5), b"x", 1.0) is None
    assert a.take(0, part(0, partitions=0), b"x", 1.0) is None
    assert a.pending(0) == 1
    assert a.take(0, part(1), b"b", 1.0) is None
    whole = a.take(0, part(2), b"c", 1.0)
    assert whole is not None and whole.blocks == [b"a", b"b", b"c"]


def test_a_later_attempt_supersedes_and_a_result_is_never_made_of_two_attempts():
    a = ResultAssembly()
    assert a.take(0, part(0, attempt=0), b"old0", 1.0) is None
    assert a.take(0, part(1, attempt=0), b"old1", 1.0) is None
    assert a.take(0, part(0, attempt=2), b"new0", 2.0) is None  # the replay's first block drops the old ones
    assert a.pending(0) == 1
    assert a.take(0, part(2, attempt=0), b"old2", 2.5) is None  # the old attempt's last block: ignored
    assert a.take(0, part(1, attempt=2), b"new1", 3.0) is None
    whole = a.take(0, part(2, attempt=2), b"new2", 4.0)
    assert whole is not None and whole.blocks == [b"new0", b"new1", b"new2"]


def test_jobs_are_assembled_apart_and_forget_drops_what_arrived():
    a = ResultAssembly()
    assert a.take(0, part(0, partitions=2), b"a", 1.0) is None
    assert a.take(1, part(0, partitions=1, job="run-1.1"), b"z", 1.0) is not None
    a.forget(0)
    assert len(a) == 0 and a.pending(0) == 0
