"""Dataset.checkpoint() on a real cluster: the dataset gives the same records, read from the
executors' checkpoint store and never from its old lineage (a lineage that now fails if it runs),
in the batch process and on the executor's own thread; it keeps its partitioning; it survives the
loss of an executor that wrote part of it; and a checkpoint missing or damaged in the store fails
the job with a TaskError naming it."""

from __future__ import annotations

import operator
import os
import signal
from pathlib import Path

import pytest
from squall.common.plan import CheckpointSource, CoGroupNode, PersistNode, SourceNode

import squall
from squall import LocalCluster, TaskError
from tests.cluster.helpers import executor_pid
from tests.conftest import fast_settings
from tests.polling import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(90)]


def guarded(stop: Path, x: int) -> tuple[int, int]:
    """A step of the lineage that fails once `stop` exists: after the checkpoint, nothing may run it."""
    if stop.exists():
        raise RuntimeError("the lineage ran after the checkpoint")
    return (x % 5, x)


def checkpoint_files(cluster: LocalCluster, ds: squall.Dataset) -> list[Path]:
    source = ds.nodes[0]
    assert isinstance(source, SourceNode) and isinstance(source.source, CheckpointSource)
    return sorted((Path(cluster.settings.checkpoint_root) / "datasets" / source.source.checkpoint_id).iterdir())


@pytest.mark.parametrize("priority", ["batch", "latency"])  # written by the batch process, or the executor itself
def test_a_checkpointed_dataset_gives_the_same_records_without_its_lineage(ctx, tmp_path: Path, priority: str) -> None:  # type: ignore[no-untyped-def]
    stop = tmp_path / "stop"
    pairs = ctx.range(60, partitions=4).map(lambda x: guarded(stop, x))
    sums = pairs.reduce_by_key(operator.add, partitions=3)
    expected = sorted({k: sum(x for x in range(60) if x % 5 == k) for k in range(5)}.items())
    assert len(sums.nodes) == 3 and len(pairs.nodes) == 2

    assert pairs.checkpoint(priority) is pairs and sums.checkpoint(priority) is sums
    stop.touch()

    assert len(pairs.nodes) == len(sums.nodes) == 1
    assert (sums.partitions, sums.hash_partitions) == (3, 3)
    assert pairs.collect() == [(x % 5, x) for x in range(60)]  # partition after partition, as computed
    assert sorted(sums.collect()) == expected  # a batch task: in the executor's batch process
    assert sorted(ctx.run_jobs([sums])[0]) == expected  # a latency task: on the executor's thread
    assert sorted(sums.map_values(lambda v: -v).collect()) == [(k, -v) for k, v in expected]

    other = ctx.range(5, partitions=2).map(lambda k: (k, str(k))).reduce_by_key(operator.add, partitions=3)
    joined = sums.join(other)
    cogroup = next(node for node in joined.nodes if isinstance(node, CoGroupNode))
    assert cogroup.shuffled == [False, False]  # still partitioned by key: read partition to partition
    assert sorted(joined.collect()) == [(k, (v, str(k))) for k, v in expected]


def test_bad_priority_raises_before_anything_runs(ctx) -> None:  # type: ignore[no-untyped-def]
    ds = ctx.range(10, partitions=2).map(lambda x: x + 1)
    with pytest.raises(ValueError, match="priority"):
        ds.checkpoint(priority="urgent")  # type: ignore[arg-type]
    assert len(ds.nodes) == 2


def test_a_persisted_dataset_stays_persisted_under_its_id(ctx, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    stop = tmp_path / "stop"
    ds = ctx.range(20, partitions=2).map(lambda x: guarded(stop, x)).persist()
    dataset_id = ds.nodes[-1].dataset_id
    assert ds.checkpoint() is ds
    stop.touch()
    assert ds.is_persisted and len(ds.nodes) == 2
    assert isinstance(ds.nodes[1], PersistNode) and ds.nodes[1].dataset_id == dataset_id
    expected = [(x % 5, x) for x in range(20)]
    assert ds.collect() == expected
    assert ds.unpersist() is ds and len(ds.nodes) == 1
    assert ds.collect() == expected  # from the checkpoint alone


def test_a_missing_or_damaged_checkpoint_fails_the_job_naming_it(cluster: LocalCluster, ctx) -> None:  # type: ignore[no-untyped-def]
    ds = ctx.range(30, partitions=3).checkpoint()
    first, second, _ = checkpoint_files(cluster, ds)
    whole = second.read_bytes()
    second.write_bytes(whole[:-1] + bytes([whole[-1] ^ 0xFF]))
    with pytest.raises(TaskError) as caught:
        ds.collect()
    assert caught.value.error_type == "DatasetCheckpointError" and caught.value.partition == 1
    assert f"datasets/{first.parent.name}/00001" in str(caught.value) and "checksum differs" in str(caught.value)

    second.write_bytes(whole)
    first.unlink()
    with pytest.raises(TaskError, match=f"partition 0 of dataset checkpoint {first.parent.name} is missing"):
        ctx.run_jobs([ds.filter(lambda x: x != 1)])


def test_a_checkpoint_survives_the_executor_that_wrote_part_of_it(tmp_path: Path) -> None:
    stop = tmp_path / "stop"
    writers = tmp_path / "writers"
    writers.mkdir()

    def step(x: int) -> tuple[int, int]:
        (writers / str(executor_pid())).touch()  # the task that maps a record writes its partition too
        return guarded(stop, x)

    with LocalCluster(executors=3, settings=fast_settings()) as cluster, cluster.connect() as ctx:
        ds = ctx.range(90, partitions=9).map(step).checkpoint()
        stop.touch()
        names = {pid: name for name, pid in cluster.pids.items()}
        victim = next(int(p.name) for p in sorted(writers.iterdir()) if int(p.name) in names)
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: len(ctx.status().executors) == 2, timeout=10, what=f"the scheduler to drop {names[victim]}")
        assert ds.collect() == [(x % 5, x) for x in range(90)]
        assert sorted(ds.reduce_by_key(operator.add).collect()) == sorted(
            {k: sum(x for x in range(90) if x % 5 == k) for k in range(5)}.items())
