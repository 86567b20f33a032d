"""What the executor's pure core costs per task, with no sockets, threads or user code.

One ExecutorState takes Drizzle groups of two-stage micro-batches (2 map tasks pushing to 4
reducers, all on this executor) and plays the runner: each RunTask it returns is completed at
once with a small output. The time per task is the core's own bookkeeping (launch, inputs, task
states, group reports): the floor under every task an executor runs, whatever the user code.

    python -m bench.executor_core [--groups 20] [--group-size 100] [--repeat 5]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time

from squall.common.core import Event
from squall.common.plan import Aggregator, RangeSource, ResultWrite, ShuffleRead, ShuffleWrite, StageSpec
from squall.common.protocol import LaunchGroup, TaskDescriptor
from squall.common.settings import Settings
from squall.services.executor.events import FromScheduler, TaskCompleted
from squall.services.executor.instructions import RunTask
from squall.services.executor.state import ExecutorState
from squall.services.executor.tasks import TaskOutput

from bench import machine

ME = "tcp://127.0.0.1:1"
MAPS, REDUCERS = 2, 4
GROUP = Aggregator(kind="group")
MAP = StageSpec(partitions=MAPS, input=RangeSource(start=0, stop=10, step=1, partitions=MAPS), ops=["fn"],
                output=ShuffleWrite(shuffle_id=7, partitions=REDUCERS, aggregator=GROUP))
REDUCE = StageSpec(partitions=REDUCERS, input=ShuffleRead(shuffle_id=7, map_partitions=MAPS, aggregator=GROUP), ops=[],
                   output=ResultWrite())
MAP_OUTPUT = TaskOutput(blocks=[b"block"] * REDUCERS, is_result=False)
RESULT = TaskOutput(blocks=[b"rows"], is_result=True)


def launch(group_id: int, size: int) -> LaunchGroup:
    map_key, reduce_key = MAP.key(), REDUCE.key()
    tasks = []
    for batch in range(size):
        job_id = f"g{group_id}-b{batch}"
        tasks += [TaskDescriptor(job_id=job_id, stage_id=0, partition=p, stage_key=map_key, batch=batch, push_to=[ME] * REDUCERS)
                  for p in range(MAPS)]
        tasks += [TaskDescriptor(job_id=job_id, stage_id=1, partition=p, stage_key=reduce_key, batch=batch) for p in range(REDUCERS)]
    return LaunchGroup(group_id=group_id, tasks=tasks, stages={map_key: MAP, reduce_key: REDUCE}, code={"fn": b"code"})


def seconds_per_task(groups: list[LaunchGroup]) -> float:
    """Feed the groups through a fresh core, completing every task it hands out."""
    core = ExecutorState("bench", ME, Settings())
    core.registration.registered = True
    tasks, now = 0, 0.0
    started = time.perf_counter()
    for msg in groups:
        event: Event = FromScheduler(msg=msg, now=now)
        while True:
            runs = [i for i in core.handle(event) if type(i) is RunTask]
            if not runs:
                break
            task = runs[0].task  # the core hands out one task at a time: the runner's
            tasks += 1
            event = TaskCompleted(task=task, outcome=MAP_OUTPUT if task.stage_id == 0 else RESULT, now=now)
    return (time.perf_counter() - started) / tasks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=20)
    parser.add_argument("--group-size", type=int, default=100, help="micro-batches per group (default 100)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    print(machine.header("bench.executor_core", argv))
    groups = [launch(g, args.group_size) for g in range(args.groups)]
    tasks = args.groups * args.group_size * (MAPS + REDUCERS)
    print(f"{args.groups} groups of {args.group_size} two-stage micro-batches ({MAPS} maps, {REDUCERS} reducers), "
          f"{tasks:,} tasks a run, {args.repeat} runs, collector off while timing\n")
    gc.collect()
    gc.disable()
    try:
        runs = [seconds_per_task(groups) * 1e6 for _ in range(args.repeat)]
    finally:
        gc.enable()
    print(f"{'us per task (median)':>22} {'min':>6} {'max':>6}")
    print(f"{statistics.median(runs):>22.1f} {min(runs):>6.1f} {max(runs):>6.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
