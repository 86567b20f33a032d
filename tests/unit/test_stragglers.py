"""Stragglers in Drizzle mode: executor speeds from group reports and the smaller share a slow
executor gets next (speeds.py), and speculative copies of late jobs (speculation.py), driven
through the scheduler's pure core: each job answers the driver exactly once, whichever attempt
finishes first."""

from __future__ import annotations

from collections import Counter

from squall.common.plan import Aggregator, GeneratorSource, LogicalPlan, NarrowNode, ShuffleNode, SourceNode, StateNode
from squall.common.protocol import (
    GroupDone,
    Heartbeat,
    JobDone,
    JobFailed,
    JobSpec,
    LaunchGroup,
    RegisterExecutor,
    ReleaseJob,
    ResultPartition,
    SubmitJobs,
    TaskFailed,
)
from squall.common.settings import Settings
from squall.services.scheduler.events import ExecutorConnected
from squall.services.scheduler.membership import ExecutorRecord
from squall.services.scheduler.speculation import MIN_SAMPLES
from squall.services.scheduler.speeds import ExecutorSpeeds
from squall.services.scheduler.state import SchedulerState

from tests.unit.scheduler_runs import CODE, DRIVER, checked, groups, lose, receive, sends, submit, tick, two_stage


def record(eid: str) -> ExecutorRecord:
    return ExecutorRecord(executor_id=eid, incarnation="1", peer=eid.encode(), data_address=f"tcp://{eid}:1", slots=1, pid=1, last_seen=0.0)


def state(*eids: str, **settings: object) -> SchedulerState:
    """Executors registered and watched (alive however long a test's clock runs)."""
    s = checked(Settings(shuffle_meta_address="tcp://meta:1", reduce_placement="spread", **settings))  # type: ignore[arg-type]
    for eid in eids:
        receive(s, RegisterExecutor(executor_id=eid, incarnation=f"{eid}-1", data_address=f"tcp://{eid}:1", slots=1), 0.0, peer=eid.encode())
        s.handle(ExecutorConnected(executor_id=eid, joined=s.executors[eid].joined, now=0.0, stimulus_id="test"))
    return s


# --- executor speeds ------------------------------------------------------------------------------


def test_slowness_is_seconds_per_task_over_the_median_and_idle_reports_say_nothing():
    speeds = ExecutorSpeeds()
    for eid in ("e0", "e1", "e2"):
        speeds.observe(eid, tasks=10, busy=0.01)
    speeds.observe("e3", tasks=10, busy=0.05)
    speeds.observe("e3", tasks=4, busy=0.0)  # every task released before it ran
    assert speeds.slowness("e0") == 1.0
    assert speeds.slowness("e3") == 5.0
    assert speeds.slow(["e0", "e1", "e3"]) == {"e3"}
    assert speeds.slowness("unknown") == 1.0


def test_the_estimate_follows_an_executor_back_to_speed():
    speeds = ExecutorSpeeds()
    for eid in ("e0", "e1", "e2"):
        speeds.observe(eid, tasks=10, busy=0.01)
    speeds.observe("e2", tasks=10, busy=0.1)
    assert "e2" in speeds.slow(["e0", "e1", "e2"])
    for _ in range(6):
        speeds.observe("e2", tasks=10, busy=0.01)
    assert speeds.slow(["e0", "e1", "e2"]) == set()


def test_placement_order_is_untouched_until_an_executor_is_slow():
    speeds = ExecutorSpeeds()
    order = [record(e) for e in ("e2", "e0", "e1")]
    assert speeds.weighted(order) == order
    for eid in ("e0", "e1", "e2"):
        speeds.observe(eid, tasks=10, busy=0.01)
    assert speeds.weighted(order) == order


def test_a_slow_executor_takes_a_share_in_proportion_to_its_speed_but_never_none():
    speeds = ExecutorSpeeds()
    for eid in ("e0", "e1", "e2"):
        speeds.observe(eid, tasks=10, busy=0.01)
    speeds.observe("e3", tasks=10, busy=0.05)
    cycle = [r.executor_id for r in speeds.weighted([record(e) for e in ("e0", "e1", "e2", "e3")])]
    counts = Counter(cycle)
    assert counts == {"e0": 4, "e1": 4, "e2": 4, "e3": 1}
    assert set(cycle[:3]) == {"e0", "e1", "e2"}  # a stage of three partitions avoids it altogether


def test_a_slow_report_shrinks_the_executors_share_of_the_next_group():
    s = state("e0", "e1", "e2", "e3")
    plan = two_stage(maps=8, reduces=8)
    first, second = groups(submit(s, jobs=4, group_size=1, plan=plan))
    assert {eid: len(m.tasks) for eid, m in first.items()} == {"e0": 4, "e1": 4, "e2": 4, "e3": 4}
    actions = []
    for eid, msg in first.items():
        for t in msg.tasks:
            if t.stage_id == 1:
                actions += receive(s, ResultPartition(executor_id=eid, job_id=t.job_id, partition=t.partition), 0.1, payloads=[b"r"])
        busy = 0.2 if eid == "e3" else 0.04  # e3 took five times as long per task
        actions += receive(s, GroupDone(group_id=msg.group_id, executor_id=eid, tasks=len(msg.tasks), busy=busy), 0.1)
    (third,) = groups(actions)
    shares = {eid: len(m.tasks) for eid, m in third.items()}
    assert shares.get("e3", 0) < min(shares[e] for e in ("e0", "e1", "e2"))
    assert sum(shares.values()) == 16


def test_an_executor_whose_beats_come_late_takes_no_stateless_task_until_they_are_on_time():
    s = state("e0", "e1", "e2", "e3")

    def beat(eid: str, stalled: float, now: float) -> None:
        receive(s, Heartbeat(executor_id=eid, incarnation=f"{eid}-1", stalled=stalled), now, peer=b"hb-" + eid.encode())

    for n in range(5):
        for eid in ("e0", "e1", "e2"):
            beat(eid, 0.001, 0.1 + n * 0.1)
        beat("e3", 0.0 if n == 2 else 0.03, 0.1 + n * 0.1)  # stopped for most of every moment: most beats 30 ms late
    plan = two_stage(maps=8, reduces=8)
    (first, _) = groups(submit(s, jobs=2, group_size=1, plan=plan))
    assert "e3" not in first and sum(len(m.tasks) for m in first.values()) == 16
    for n in range(3):  # three beats on time: most of its last five are
        beat("e3", 0.0, 0.6 + n * 0.1)
    (again, _) = groups(submit(s, jobs=2, group_size=1, plan=plan, run_id="r2"))
    assert "e3" in again


def test_stalled_executors_are_left_out_only_beside_executors_that_are_not():
    records = [record(e) for e in ("a", "b", "c")]
    for r in records:
        r.late_beats.extend([0.02] * 5)  # the whole machine is slow: nobody is left out
    assert ExecutorSpeeds.without_stalled(records) == records
    records[0].late_beats.extend([0.0] * 5)
    records[1].late_beats.extend([0.0] * 5)
    assert ExecutorSpeeds.without_stalled(records) == records[:2]


def test_a_busy_machine_waking_one_executor_15_ms_late_is_no_stall():
    # Beats carry the longest of many wake-ups: on a loaded machine one process is a few to 15 ms
    # late now and then, and must keep its work; a stopped one is late by tens of ms every beat.
    records = [record(e) for e in ("a", "b", "c")]
    records[0].late_beats.extend([0.015] * 5)
    records[1].late_beats.extend([0.001] * 5)
    records[2].late_beats.extend([0.001] * 5)
    assert ExecutorSpeeds.without_stalled(records) == records
    records[0].late_beats.extend([0.035] * 5)
    assert ExecutorSpeeds.without_stalled(records) == records[1:]


def test_one_late_beat_is_a_hiccup_not_a_stall():
    fresh = record("a")
    fresh.late_beats.append(0.05)  # starting up: one beat late, and too few to judge
    assert fresh.stall == 0.0
    fresh.late_beats.extend([0.0, 0.0, 0.05, 0.0])
    assert fresh.stall == 0.0


# --- speculation ----------------------------------------------------------------------------------


def complete(s: SchedulerState, launch: dict[str, LaunchGroup], now: float, skip: str = "") -> list:
    """Every result partition and GroupDone of a launched group, but those of executor `skip`."""
    actions = []
    for eid, msg in launch.items():
        if eid == skip:
            continue
        for t in msg.tasks:
            if not t.push_to:
                actions += receive(s, ResultPartition(executor_id=eid, job_id=t.job_id, partition=t.partition), now, payloads=[b"r"])
        actions += receive(s, GroupDone(group_id=msg.group_id, executor_id=eid, tasks=len(msg.tasks), busy=0.0), now)
    return actions


def with_history(s: SchedulerState, jobs: int, plan: LogicalPlan | None = None) -> tuple[list[dict[str, LaunchGroup]], list, float]:
    """A run of `jobs` one-job groups whose first MIN_SAMPLES + 1 finish 10 ms after they start:
    returns the groups still in flight, every action, and the time."""
    actions = receive(s, SubmitJobs(run_id="r", jobs=[JobSpec(job_id=f"r.{i}", plan=plan or two_stage()) for i in range(jobs)],
                                    code=CODE, group_size=1), 0.0, peer=DRIVER)
    pending = groups(actions)
    now = 0.0
    for _ in range(MIN_SAMPLES + 1):
        now += 0.01
        more = complete(s, pending.pop(0), now)
        actions += more
        pending += groups(more)
    return pending, actions, now


def answers(actions) -> Counter[str]:
    return Counter(m.job_id for m in sends(actions, peer=DRIVER) if isinstance(m, JobDone | JobFailed))


def test_a_late_job_is_copied_away_from_the_executor_holding_it_and_answers_once():
    s = state("e0", "e1", "e2")
    (late,), actions, now = with_history(s, jobs=MIN_SAMPLES + 2)
    job_id = next(t.job_id for m in late.values() for t in m.tasks)
    actions += complete(s, late, now + 0.005, skip="e0")  # e0 holds one of its reducers, and is slow
    assert not groups(tick(s, now + 0.02))  # 20 ms: not yet 3x the median of 10-20 ms
    spec = tick(s, now + 0.5)
    (copy,) = groups(spec)
    assert set(copy) == {"e1", "e2"}
    copy_id = next(t.job_id for m in copy.values() for t in m.tasks)
    assert copy_id.startswith(job_id + "~")
    assert not groups(tick(s, now + 0.6))  # one copy per job
    won = complete(s, copy, now + 0.55)
    assert [m.job_id for m in sends(won, JobDone)] == [job_id]
    assert job_id in {j for m in sends(won, ReleaseJob) for j in m.job_ids}  # the first attempt's queued tasks go
    # e0 comes back with the first attempt's last partition and its report: ignored, no failure.
    actions += spec + won + complete(s, late, now + 0.7)
    assert answers(actions)[job_id] == 1
    assert not sends(actions, JobFailed)
    assert all(count == 1 for count in answers(actions).values())
    assert len(answers(actions)) == MIN_SAMPLES + 2  # every job answered, and the run is over
    assert not s.runs


def test_when_the_first_attempt_wins_the_copy_is_released_and_its_results_ignored():
    s = state("e0", "e1", "e2")
    (late,), actions, now = with_history(s, jobs=MIN_SAMPLES + 2)
    job_id = next(t.job_id for m in late.values() for t in m.tasks)
    (copy,) = groups(tick(s, now + 0.5))
    first = complete(s, late, now + 0.51)
    assert [m.job_id for m in sends(first, JobDone)] == [job_id]
    copy_id = next(t.job_id for m in copy.values() for t in m.tasks)
    assert copy_id in {j for m in sends(first, ReleaseJob) for j in m.job_ids}
    actions += first + complete(s, copy, now + 0.6)
    assert answers(actions)[job_id] == 1 and not sends(actions, JobFailed)
    assert not s.runs


def test_a_failing_copy_is_given_up_silently_and_the_job_answers_from_its_first_attempt():
    s = state("e0", "e1", "e2")
    (late,), actions, now = with_history(s, jobs=MIN_SAMPLES + 2)
    job_id = next(t.job_id for m in late.values() for t in m.tasks)
    (copy,) = groups(tick(s, now + 0.5))
    eid, msg = next(iter(copy.items()))
    t = msg.tasks[0]
    failed = receive(s, TaskFailed(executor_id=eid, job_id=t.job_id, stage_id=t.stage_id, partition=t.partition, attempt=t.attempt,
                                   kind="task", error_type="MemoryError", message="out of memory", traceback=""), now + 0.51)
    assert not sends(failed, JobFailed)
    actions += failed + complete(s, copy, now + 0.52) + complete(s, late, now + 0.6)
    assert answers(actions)[job_id] == 1 and sends(actions, JobDone)[-1].job_id == job_id
    assert not sends(actions, JobFailed) and not s.runs


def test_losing_an_executor_while_a_copy_runs_replays_the_job_once():
    s = state("e0", "e1", "e2")
    (late,), actions, now = with_history(s, jobs=MIN_SAMPLES + 2)
    job_id = next(t.job_id for m in late.values() for t in m.tasks)
    actions += complete(s, late, now + 0.005, skip="e0")
    (copy,) = groups(tick(s, now + 0.5))
    replayed = lose(s, "e1", now + 0.51)  # holds tasks of both attempts
    (replay,) = groups(replayed)
    actions += replayed + complete(s, replay, now + 0.515) + complete(s, copy, now + 0.52, skip="e1")
    assert answers(actions)[job_id] == 1 and not sends(actions, JobFailed)
    assert not s.runs


def test_jobs_with_keyed_state_are_never_copied():
    plan = LogicalPlan(nodes=[
        SourceNode(source=GeneratorSource(fn="gen", partitions=2, batch=0)),
        NarrowNode(parent=0, fn="fn"),
        ShuffleNode(parent=1, partitions=3, aggregator=Aggregator(kind="group")),
        StateNode(parent=2, fn="update", state_id="sum"),
    ])
    s = state("e0", "e1", "e2")
    code = {**CODE, "gen": b"g" * 10, "update": b"u" * 10}
    receive(s, SubmitJobs(run_id="warm", jobs=[], code=code, group_size=1), 0.0, peer=DRIVER)
    (late,), _, now = with_history(s, jobs=MIN_SAMPLES + 2, plan=plan)
    assert not groups(tick(s, now + 5.0))


def test_speculation_off_copies_nothing():
    s = state("e0", "e1", "e2", speculation=False)
    (late,), _, now = with_history(s, jobs=MIN_SAMPLES + 2)
    assert not groups(tick(s, now + 5.0))
