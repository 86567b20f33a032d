"""squall.services.executor.local_scheduler: which runnable task an executor runs next, and the barrier."""

from __future__ import annotations

from squall.common.plan import Aggregator, RangeSource, ResultWrite, ShuffleRead, ShuffleWrite, StageSpec
from squall.common.protocol import TaskDescriptor
from squall.services.executor.local_scheduler import LocalScheduler, LocalTask

GROUP = Aggregator(kind="group")
MAP = StageSpec(partitions=4, input=RangeSource(start=0, stop=8, step=1, partitions=4), ops=[],
                output=ShuffleWrite(shuffle_id=1, partitions=4, aggregator=GROUP))
REDUCE = StageSpec(partitions=4, input=ShuffleRead(shuffle_id=1, map_partitions=4, aggregator=GROUP), ops=[], output=ResultWrite())


def task(job_id: str, batch: int, reducer: bool = False, partition: int = 0, group_id: int | None = 1) -> LocalTask:
    spec = REDUCE if reducer else MAP
    descriptor = TaskDescriptor(job_id=job_id, stage_id=1 if reducer else 0, partition=partition, stage_key=spec.key(), batch=batch)
    return LocalTask(descriptor, spec, group_id)


def drain(ls: LocalScheduler, barrier: bool = False) -> list[tuple[str, int, int]]:
    order = []
    while (t := ls.pop(barrier)) is not None:
        order.append(t.key)
    return order


def test_is_reducer_follows_the_stage_input():
    assert task("j", 0, reducer=True).is_reducer and not task("j", 0).is_reducer


def test_order_is_batch_then_reducers_first_then_arrival():
    ls = LocalScheduler()
    pushed = [
        task("b1", 1, partition=0),
        task("b1", 1, reducer=True, partition=0),
        task("b0", 0, partition=2),
        task("b0", 0, partition=1),
        task("b0", 0, reducer=True, partition=3),
        task("b2", 2, reducer=True, partition=0),
    ]
    for t in pushed:
        ls.push(t)
    assert len(ls) == 6
    assert drain(ls) == [("b0", 1, 3), ("b0", 0, 2), ("b0", 0, 1), ("b1", 1, 0), ("b1", 0, 0), ("b2", 1, 0)]
    assert len(ls) == 0 and ls.pop(False) is None


def test_barrier_holds_later_mappers_while_an_earlier_reducer_is_open_here():
    ls = LocalScheduler()
    open_reducer = task("b0", 0, reducer=True)
    ls.launched(open_reducer)  # launched, still waiting for its inputs
    later_map, same_batch_map, later_reducer = task("b1", 1), task("b0", 0, partition=1), task("b1", 1, reducer=True)
    ls.launched(later_map)
    for t in (later_map, same_batch_map, later_reducer):
        ls.push(t)
    assert ls.pop(True) is same_batch_map  # its own batch is not held
    assert ls.pop(True) is later_reducer  # reducers never are
    assert ls.pop(True) is None  # b1's mapper waits for b0's reducer
    assert len(ls) == 1  # held, not lost
    ls.finished(open_reducer)
    assert ls.pop(True) is later_map


def test_without_the_barrier_nothing_is_held():
    ls = LocalScheduler()
    ls.launched(task("b0", 0, reducer=True))
    later_map = task("b5", 5)
    ls.push(later_map)
    assert ls.pop(False) is later_map


def test_barrier_waits_for_every_open_reducer_of_earlier_batches():
    ls = LocalScheduler()
    r0, r1 = task("b0", 0, reducer=True, partition=0), task("b0", 0, reducer=True, partition=1)
    r_mid = task("b1", 1, reducer=True)
    for r in (r0, r1, r_mid):
        ls.launched(r)
    m2 = task("b2", 2)
    ls.push(m2)
    ls.finished(r0)
    assert ls.pop(True) is None  # r1 of batch 0 is still open
    ls.finished(r1)
    assert ls.pop(True) is None  # and batch 1's reducer too
    ls.finished(r_mid)
    ls.finished(r_mid)  # finishing twice is harmless
    assert ls.pop(True) is m2


def reducer_then_map() -> tuple[LocalScheduler, LocalTask, LocalTask]:
    """Batch 0's reducer, launched and runnable, and batch 1's map queued behind its barrier."""
    ls = LocalScheduler()
    r0, m1 = task("b0", 0, reducer=True), task("b1", 1)
    ls.launched(r0)
    ls.push(r0)
    ls.push(m1)
    return ls, r0, m1


def test_a_running_reducer_holds_the_barrier_until_it_finishes():
    ls, r0, m1 = reducer_then_map()
    assert ls.pop(True) is r0  # runs now, but is not finished
    assert ls.pop(True) is None
    ls.finished(r0)
    assert ls.pop(True) is m1


def test_bsp_tasks_are_never_held_and_bsp_reducers_hold_nothing():
    ls = LocalScheduler()
    ls.launched(task("g0", 0, reducer=True))  # a pre-scheduled reducer of batch 0 is open
    bsp_map = task("bsp", 7, group_id=None)
    ls.push(bsp_map)
    assert ls.pop(True) is bsp_map
    ls2 = LocalScheduler()
    ls2.launched(task("bsp", 0, reducer=True, group_id=None))  # a BSP reducer does not count
    group_map = task("g1", 1)
    ls2.push(group_map)
    assert ls2.pop(True) is group_map


def test_remove_job_drops_its_runnable_tasks_only():
    ls = LocalScheduler()
    gone = [task("gone", 0, partition=p) for p in range(3)]
    kept = task("kept", 0, partition=9)
    for t in [*gone, kept]:
        ls.push(t)
    removed = ls.remove_jobs({"gone"})
    assert sorted(t.key for t in removed) == [t.key for t in gone]
    assert len(ls) == 1
    assert drain(ls) == [kept.key]
    assert ls.remove_jobs({"nothing"}) == []


def test_removing_a_runnable_reducer_releases_the_barrier():
    ls, r0, m1 = reducer_then_map()
    assert [t.key for t in ls.remove_jobs({"b0"})] == [r0.key]
    assert ls.pop(True) is m1


def test_clear_forgets_everything():
    ls = LocalScheduler()
    ls.launched(task("b0", 0, reducer=True))
    ls.push(task("b1", 1))
    ls.clear()
    assert len(ls) == 0 and ls.pop(True) is None
    m = task("b3", 3)
    ls.push(m)
    assert ls.pop(True) is m  # no reducer is open any more
