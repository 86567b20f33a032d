"""squall.services.executor.runner: a task runs with what its RunTask carries (inputs, the code of
its stage) and its one state table, which the runner keeps and only the loop thread replaces."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog
from squall.common.plan import StateUpdate, code_key
from squall.common.protocol import TaskDescriptor
from squall.common.serialization import dumps_block, dumps_function, loads_block
from squall.services.executor.instructions import RunTask
from squall.services.executor.reports import Failure
from squall.services.executor.runner import Runner
from squall.services.executor.tasks import TaskOutput

from tests.polling import wait_until
from tests.unit.executor_fixtures import reduce_spec


def add(values: list[int], old: int | None) -> int:
    return (old or 0) + sum(values)


BLOB = dumps_function(add)
SPEC = reduce_spec(maps=1, reduces=1, state=StateUpdate(fn=code_key(BLOB), state_id="s", kind="keyed"))


def run(batch: int, values: list[int], code: dict[str, bytes] | None = None) -> RunTask:
    task = TaskDescriptor(job_id=f"j{batch}", stage_id=1, partition=0, stage_key=SPEC.key(), batch=batch)
    return RunTask(task, SPEC, [dumps_block([("k", values)])], {code_key(BLOB): BLOB} if code is None else code)


@pytest.fixture()
def runner() -> Iterator[Runner]:
    r = Runner(structlog.get_logger())
    yield r
    r.close()


def test_a_stateful_task_updates_the_runners_table_for_its_partition(runner: Runner):
    out = runner.run_inline(run(0, [1, 2]))
    assert isinstance(out, TaskOutput) and loads_block(out.blocks[0]) == [("k", 3)]
    assert runner.states == {("s", 0): {"k": 3}}


def test_a_restored_table_replaces_the_old_one_and_the_next_batch_starts_from_it(runner: Runner):
    runner.run_inline(run(0, [1]))
    old = runner.states[("s", 0)]
    runner.restore_state(("s", 0), {"k": 100})
    runner.run_inline(run(1, [1]))
    assert runner.states[("s", 0)] == {"k": 101} and old == {"k": 1}  # the replaced table is left alone
    runner.drop_states(["s"], partition=1)
    assert ("s", 0) in runner.states
    runner.drop_states(["s"])
    assert runner.states == {}


def test_on_the_runner_thread_the_task_gets_the_same_table(runner: Runner):
    runner.submit(7, run(0, [5]))
    generation, task, outcome = wait_until(lambda: runner.done and runner.done.popleft(), timeout=10, what="the task")
    assert generation == 7 and task.batch == 0 and isinstance(outcome, TaskOutput)
    assert runner.states == {("s", 0): {"k": 5}}


def test_code_the_run_does_not_carry_is_missing_code(runner: Runner):
    out = runner.run_inline(run(0, [1], code={}))
    assert isinstance(out, Failure) and out.kind == "code" and "never sent" in out.message
