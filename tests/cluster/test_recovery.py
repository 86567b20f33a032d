"""Recovery on real processes: an executor SIGKILLed or stopped in the middle of a stateful stream
is replayed by the survivors, and every batch's output still equals plain Python, exactly once."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from squall import LocalCluster, sources
from tests.cluster.helpers import Background, executor_pid
from tests.conftest import fast_settings
from tests.polling import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(90)]

KEYS, PARTITIONS = 11, 3


def events(partition: int, batch: int) -> list[tuple[str, int]]:
    return [(f"k{(batch * 7 + partition * 3 + i) % KEYS}", batch * 100 + partition * 10 + i) for i in range(6)]


def running_sums(batches: int) -> list[dict[str, int]]:
    """The reference: each batch's (key, running sum) for the keys it touched, in plain Python."""
    running: Counter[str] = Counter()
    out = []
    for batch in range(batches):
        touched = set()
        for p in range(PARTITIONS):
            for key, value in events(p, batch):
                running[key] += value
                touched.add(key)
        out.append({k: running[k] for k in touched})
    return out


def start_sum_stream(ctx, got: list, group_size: int | str = 2):  # type: ignore[no-untyped-def]
    lock = threading.Lock()

    def sink(batch: int, records: list) -> None:
        with lock:
            got.append((batch, dict(records)))

    return (
        ctx.stream(sources.generator(events, partitions=PARTITIONS), batch_interval=0.02, group_size=group_size)
        .update_state_by_key(lambda values, old: (old or 0) + sum(values), partitions=4)
        .foreach_batch(sink)
        .start()
    )


def check_exactly_once(got: list) -> None:
    batches = [b for b, _ in got]
    assert batches == list(range(len(got))), "a batch was lost, repeated or reordered"
    reference = running_sums(len(got))
    for batch, records in got:
        assert records == reference[batch], f"batch {batch} differs from plain Python"


def logs(cluster: LocalCluster, lines: int = 15) -> str:
    """The services' last log lines, for a failure message."""
    names = ["scheduler", *cluster.executor_names()]
    return "\n".join(f"--- {n}\n" + "\n".join(cluster.log_text(n).splitlines()[-lines:]) for n in names)


def owner_pid(cluster: LocalCluster, exclude: str = "") -> tuple[str, int]:
    name = next(n for n in cluster.executor_names() if n != exclude and cluster.processes[n].poll() is None)
    return name, cluster.pids[name]


@pytest.mark.parametrize("when", ["after_checkpoints", "before_any_checkpoint"])
def test_a_sigkilled_executors_state_is_rebuilt_and_the_stream_output_is_exactly_once(when: str) -> None:
    settings = fast_settings(checkpoint_every_groups=2)
    with LocalCluster(executors=4, settings=settings) as cluster, cluster.connect() as ctx:
        got: list = []
        stream = start_sum_stream(ctx, got)
        wait_until(lambda: len(got) >= (20 if when == "after_checkpoints" else 1), timeout=30, what="batches before the kill")
        name, pid = owner_pid(cluster)
        os.kill(pid, signal.SIGKILL)
        seen = len(got)
        try:
            wait_until(lambda: len(got) >= seen + 20, timeout=30, what="20 batches after the kill")
            stream.stop(timeout=20)
            check_exactly_once(got)
        except Exception as exc:
            raise AssertionError(f"{exc}\n{logs(cluster)}") from exc
        log = cluster.log_text("scheduler")
        assert "its connection dropped" in log and "replaying" in log
        if when == "after_checkpoints":
            assert any("state_restored" in cluster.log_text(n) and '"batch": null' not in cluster.log_text(n)
                       for n in cluster.executor_names() if n != name)


def test_a_stopped_executor_is_declared_dead_and_its_return_changes_nothing() -> None:
    settings = fast_settings(checkpoint_every_groups=2)
    with LocalCluster(executors=4, settings=settings) as cluster, cluster.connect() as ctx:
        got: list = []
        stream = start_sum_stream(ctx, got)
        wait_until(lambda: len(got) >= 10, timeout=30, what="ten batches")
        name, pid = owner_pid(cluster)
        os.kill(pid, signal.SIGSTOP)
        try:
            wait_until(lambda: len(ctx.status().executors) == 3, timeout=10, what="the stopped executor declared dead")
            seen = len(got)
            wait_until(lambda: len(got) >= seen + 10, timeout=30, what="batches without it")
        finally:
            os.kill(pid, signal.SIGCONT)
        wait_until(lambda: len(ctx.status().executors) == 4, timeout=10, what="it registers again, as new")
        seen = len(got)
        wait_until(lambda: len(got) >= seen + 10, timeout=30, what="batches after its return")
        stream.stop(timeout=20)
        check_exactly_once(got)


def test_an_executor_joining_mid_stream_takes_work_from_the_next_group(tmp_path) -> None:  # type: ignore[no-untyped-def]
    def marked_events(partition: int, batch: int) -> list[tuple[str, int]]:
        (tmp_path / f"ran-{executor_pid()}").touch()
        return events(partition, batch)

    with LocalCluster(executors=2, settings=fast_settings()) as cluster, cluster.connect() as ctx:
        got: list = []
        lock = threading.Lock()

        def sink(batch: int, records: list) -> None:
            with lock:
                got.append((batch, dict(records)))

        stream = (
            ctx.stream(sources.generator(marked_events, partitions=PARTITIONS), batch_interval=0.02, group_size=2)
            .update_state_by_key(lambda values, old: (old or 0) + sum(values), partitions=4)
            .foreach_batch(sink)
            .start()
        )
        wait_until(lambda: len(got) >= 5, timeout=30, what="five batches")
        cluster.start_executor("executor-new")
        newcomer = cluster.pids["executor-new"]
        wait_until(lambda: (tmp_path / f"ran-{newcomer}").exists(), timeout=10, what="the newcomer running source tasks")
        seen = len(got)
        wait_until(lambda: len(got) >= seen + 5, timeout=30, what="five more batches")
        stream.stop(timeout=20)
        check_exactly_once(got)


def test_a_restarted_shuffle_meta_is_rebuilt_from_the_executors_reports(tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = fast_settings(preschedule=False)  # BSP: reducers look their inputs up in shuffle_meta

    def slow(x: int) -> tuple[int, int]:
        time.sleep(0.2)
        (tmp_path / f"mapped-{x}").touch()
        return (x % 2, x)

    with LocalCluster(executors=4, settings=settings) as cluster, cluster.connect() as ctx:
        job = Background(ctx.range(8, partitions=8).map(slow).reduce_by_key(lambda a, b: a + b).collect)
        wait_until(lambda: len(list(tmp_path.glob("mapped-*"))) >= 4, timeout=20, what="the first wave of map tasks")
        os.kill(cluster.pids["shuffle_meta"], signal.SIGKILL)  # it held their outputs' locations
        cluster.processes["shuffle_meta"].wait(timeout=5)
        cluster.restart_service("shuffle_meta")
        assert job.join(timeout=30), "the job hung after shuffle_meta restarted"
        assert dict(job.outcome) == {0: sum(range(0, 8, 2)), 1: sum(range(1, 8, 2))}  # type: ignore[arg-type]
        assert any("shuffle_meta_reconnected" in cluster.log_text(n) for n in cluster.executor_names())


def test_old_checkpoints_are_collected_and_a_stopped_streams_go() -> None:
    settings = fast_settings(checkpoint_every_groups=2)
    with LocalCluster(executors=2, settings=settings) as cluster, cluster.connect() as ctx:
        root = Path(cluster.settings.checkpoint_root)
        got: list = []
        stream = start_sum_stream(ctx, got)

        def snapshots() -> dict[str, int]:
            return {str(d.relative_to(root)): len([f for f in d.iterdir() if not f.name.startswith(".")])
                    for d in root.glob("state/*/*") if d.is_dir()}

        def map_batches() -> list[int]:
            return sorted(int(d.name) for d in root.glob("maps/*/*") if d.is_dir())

        wait_until(lambda: len(got) >= 40 and len(snapshots()) == 4, timeout=30, what="checkpoints of the four partitions")
        # The two newest per partition (a third lives only between its write and the clean-up after it).
        wait_until(lambda: all(n <= 2 for n in snapshots().values()), timeout=5, what=f"two snapshots each: {snapshots()}")
        wait_until(lambda: (batches := map_batches()) and batches[0] > 10, timeout=10, what="old map-output checkpoints pruned")
        stream.stop(timeout=20)
        wait_until(lambda: not snapshots() and not map_batches(), timeout=10, what="a stopped stream's checkpoints removed")
