"""squall.services.scheduler (cancellation.py): a run cancelled by its driver, or whose driver is
gone, stops at once: queued jobs dropped, executors told to stop its jobs in flight, the run ended;
late reports about it are dropped; other runs (of other drivers, and of the same driver) go on."""

from __future__ import annotations

from squall.common.core import Log, Send, ToShuffleMeta
from squall.common.plan import Aggregator, GeneratorSource, LogicalPlan, NarrowNode, ShuffleNode, SourceNode, StateNode
from squall.common.protocol import (
    CancelJobs,
    CancelRun,
    ForgetJob,
    ForgetStates,
    JobDone,
    JobFailed,
    JobSpec,
    LaunchGroup,
    LaunchTasks,
    ReleaseJob,
    RunDone,
    SubmitJobs,
    TaskFailed,
    TaskFinished,
)
from squall.services.scheduler.events import ConnectionDropped, ExecutorConnected, ProbeDrivers
from squall.services.scheduler.state import PROBE_WINDOW

from tests.unit.scheduler_runs import (
    DRIVER,
    drive,
    driver_gone,
    failed,
    finish_group,
    groups,
    logs,
    receive,
    sends,
    state,
    submit,
    tick,
    two_stage,
)

OTHER = b"other-driver"


def cancel_jobs(actions) -> dict[str, list[str]]:
    """The job ids CancelJobs messages name, by executor id (peer == id in these tests)."""
    found: dict[str, list[str]] = {}
    for a in actions:
        if isinstance(a, Send) and isinstance(a.msg, CancelJobs):
            found.setdefault(a.peer.decode(), []).extend(a.msg.job_ids)
    return found


def test_cancel_stops_the_groups_in_flight_on_every_executor_they_use_and_ends_the_run():
    s = state("e0", "e1", "e2")
    submitted = submit(s, jobs=9, group_size=2)
    in_flight = groups(submitted)
    wire_ids = sorted({t.job_id for launch in in_flight for m in launch.values() for t in m.tasks})
    actions = receive(s, CancelRun(run_id="r"), 0.5)
    assert cancel_jobs(actions) == {eid: wire_ids for eid in ("e0", "e1", "e2")}
    assert ToShuffleMeta(ForgetJob(job_ids=wire_ids)) in actions
    assert not sends(actions, LaunchGroup) and not sends(actions, ReleaseJob)  # the 5 queued jobs never start
    assert sends(actions, RunDone, peer=DRIVER) == [RunDone(run_id="r", groups=[])]
    assert not s.runs and not s.drizzle.prescheduled


def test_late_reports_of_a_cancelled_run_find_nothing_and_are_dropped():
    s = state("e0", "e1")
    in_flight = groups(submit(s, jobs=4, group_size=2))
    receive(s, CancelRun(run_id="r"), 0.5)
    for launch in in_flight:
        assert finish_group(s, launch, 1.0) == []  # results and GroupDone of every executor
    assert failed(s, "e0", "r.0") == []  # no JobFailed for the driver
    assert receive(s, CancelRun(run_id="r"), 1.5) == []  # cancelling twice: nothing left to cancel


def test_cancel_names_only_the_jobs_still_in_flight():
    s = state("e0")
    first = groups(submit(s, jobs=3, group_size=1))[0]
    finish_group(s, first, 1.0)  # r.0 is done and released; the next group is dispatched
    actions = receive(s, CancelRun(run_id="r"), 1.5)
    assert list(cancel_jobs(actions)) == ["e0"] and "r.0" not in cancel_jobs(actions)["e0"]
    assert sends(actions, RunDone, peer=DRIVER)


def test_cancelling_one_run_leaves_the_other_runs_of_the_same_and_other_drivers_alone():
    s = state("e0", "e1")
    submit(s, jobs=4, group_size=2, run_id="r")
    same_driver = submit(s, jobs=3, group_size=1, run_id="q")
    other = receive(s, SubmitJobs(run_id="o", jobs=[JobSpec(job_id=f"o.{i}", plan=two_stage()) for i in range(3)],
                                       group_size=1), 0.0, peer=OTHER)
    actions = receive(s, CancelRun(run_id="r"), 0.5)
    assert all(job.startswith("r.") for jobs in cancel_jobs(actions).values() for job in jobs)
    assert set(s.runs) == {"q", "o"}
    for run_id, submitted, driver in (("q", same_driver, DRIVER), ("o", other, OTHER)):
        _, everything = drive(s, submitted)
        assert sorted(m.job_id for m in sends(everything, JobDone, peer=driver)) == [f"{run_id}.{i}" for i in range(3)]
        assert sends(everything, RunDone, peer=driver)[0].run_id == run_id
        assert not sends(everything, JobFailed)
    assert not s.runs


def test_cancel_in_bsp_mode_stops_the_job_and_late_reports_free_the_slots():
    s = state("e0", "e1")
    actions = submit(s, jobs=2, group_size=1, preschedule=False, plan=two_stage(maps=4, reduces=2))
    running = [(a.peer.decode(), t) for a in actions if isinstance(a, Send) and isinstance(a.msg, LaunchTasks) for t in a.msg.tasks]
    assert len(running) == 2 and len(s.bsp.pending) == 2  # one slot each: two map tasks wait
    actions = receive(s, CancelRun(run_id="r"), 0.5)
    assert cancel_jobs(actions) == {"e0": ["r.0"], "e1": ["r.0"]}
    assert not s.bsp.pending and not s.bsp.jobs and not s.runs
    assert sends(actions, RunDone, peer=DRIVER)
    # The executors report the stopped tasks: the slots come free for another driver's job.
    eid, stopped = running[0]
    freed = receive(s, TaskFinished(executor_id=eid, job_id="r.0", stage_id=0, partition=stopped.partition, attempt=0,
                                         has_result=False, output_bytes=0, elapsed=0.1), 1.0, payloads=[])
    assert freed == []
    eid, dropped = running[1]
    receive(s, TaskFailed(executor_id=eid, job_id="r.0", stage_id=0, partition=dropped.partition, attempt=0, kind="fetch",
                             error_type="Cancelled", message="released"), 1.0)
    assert all(not r.running for r in s.executors.values())
    other = receive(s, SubmitJobs(run_id="o", jobs=[JobSpec(job_id="o.0", plan=two_stage(maps=2, reduces=1))],
                                       preschedule=False), 2.0, peer=OTHER)
    assert len([t for m in sends(other, LaunchTasks) for t in m.tasks]) == 2


def stateful_plan(batch: int, state_id: str) -> LogicalPlan:
    return LogicalPlan(nodes=[
        SourceNode(source=GeneratorSource(fn="fn", partitions=2, batch=batch)),
        NarrowNode(parent=0, fn="fn"),
        ShuffleNode(parent=1, partitions=2, aggregator=Aggregator(kind="group")),
        StateNode(parent=2, fn="add", state_id=state_id),
    ])


def test_a_lost_driver_has_its_runs_cancelled_its_stream_state_forgotten_and_hears_nothing():
    s = state("e0", "e1")
    stream = [JobSpec(job_id=f"g.{b}", plan=stateful_plan(b, "counts")) for b in range(2)]
    receive(s, SubmitJobs(run_id="g", jobs=stream, code={"fn": b"f", "add": b"a"}, group_size=2), 0.0, peer=DRIVER)
    submit(s, jobs=2, group_size=1, run_id="r")
    other = receive(s, SubmitJobs(run_id="o", jobs=[JobSpec(job_id="o.0", plan=two_stage())]), 0.0, peer=OTHER)
    assert s.drivers() == {DRIVER, OTHER}
    actions = driver_gone(s, DRIVER, 1.0)
    stopped = {job for jobs in cancel_jobs(actions).values() for job in jobs}
    assert stopped == {"g.0", "g.1", "r.0", "r.1"}
    assert [a.msg for a in actions if isinstance(a, Send) and isinstance(a.msg, ForgetStates)] == [ForgetStates(state_ids=["counts"])] * 2
    assert "counts" not in s.book.states
    assert not [a for a in actions if isinstance(a, Send) and a.peer == DRIVER]  # it is gone: nothing is sent to it
    assert set(s.runs) == {"o"} and s.drivers() == {OTHER}
    _, everything = drive(s, other)
    assert [m.job_id for m in sends(everything, JobDone, peer=OTHER)] == ["o.0"]


def test_a_driver_stays_known_for_its_stream_state_between_runs_until_the_stream_forgets_it():
    s = state("e0")
    jobs = [JobSpec(job_id="g.0", plan=stateful_plan(0, "counts"))]
    drive(s, receive(s, SubmitJobs(run_id="g", jobs=jobs, code={"fn": b"f", "add": b"a"}), 0.0, peer=DRIVER))
    assert not s.runs and s.drivers() == {DRIVER}  # a stream between two groups
    receive(s, ForgetStates(state_ids=["counts"]))
    assert s.drivers() == set()
    assert driver_gone(s, DRIVER, 2.0) == []


def test_a_dropped_connection_has_the_drivers_probed_for_a_while_and_the_gone_ones_cancelled():
    s = state("e0", "e1")
    for eid, record in s.executors.items():  # their watch connections are up: silence is no death
        s.handle(ExecutorConnected(executor_id=eid, joined=record.joined, now=0.0))
    submit(s, jobs=4, group_size=1)
    assert tick(s, 0.1) == []  # no connection dropped: nobody is asked
    assert s.handle(ConnectionDropped(now=1.0)) == [ProbeDrivers((DRIVER,))]
    assert tick(s, 1.0 + PROBE_WINDOW / 2) == [ProbeDrivers((DRIVER,))]  # the ROUTER may forget the peer a moment late
    assert tick(s, 1.0 + PROBE_WINDOW * 2) == []
    actions = driver_gone(s, DRIVER, 1.6)
    assert logs(actions, "driver_gone") == [Log("warning", "driver_gone", {"driver": DRIVER.hex()})]
    assert set(cancel_jobs(actions)) == {"e0", "e1"} and not s.runs
    assert not sends(actions, peer=DRIVER)  # it hears nothing more
    assert s.handle(ConnectionDropped(now=2.0)) == []  # nothing held for any driver: no probe
