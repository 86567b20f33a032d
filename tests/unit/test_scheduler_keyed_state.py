"""squall.services.scheduler.state with keyed state (streams): partitions stay with their owner, state
is checkpointed every K groups, map outputs that feed state are checkpointed, and an owner's death
rebuilds its partitions on the survivors from their checkpoints (keyed_state.StateBook)."""

from __future__ import annotations

from squall.common.plan import Aggregator, GeneratorSource, LogicalPlan, NarrowNode, ShuffleNode, SourceNode, StateNode
from squall.common.protocol import (
    JobDone,
    JobFailed,
    JobSpec,
    PruneCheckpoints,
    RegisterExecutor,
    RunDone,
    StateCheckpointed,
    SubmitJobs,
)
from squall.common.settings import Settings
from squall.services.scheduler.state import SchedulerState

from tests.unit.scheduler_runs import DRIVER, checked, finish_group, groups, jobs_of, lose, receive, sends

CODE = {"gen": b"g" * 10, "fn": b"f" * 10, "update": b"u" * 10}
EVERY = 3


def state(*eids: str, replay: str = "parallel", rebalance: bool = True) -> SchedulerState:
    settings = Settings(shuffle_meta_address="tcp://meta:1", checkpoint_every_groups=EVERY, replay=replay, rebalance_state=rebalance)
    s = checked(settings)
    for eid in eids:
        receive(s, RegisterExecutor(executor_id=eid, incarnation=f"{eid}-1", data_address=f"tcp://{eid}:1", slots=1), 0.0, peer=eid.encode())
    return s


def stateful_plan(batch: int, partitions: int = 4, sources: int = 2) -> LogicalPlan:
    return LogicalPlan(nodes=[
        SourceNode(source=GeneratorSource(fn="gen", partitions=sources, batch=batch)),
        NarrowNode(parent=0, fn="fn"),
        ShuffleNode(parent=1, partitions=partitions, aggregator=Aggregator(kind="group")),
        StateNode(parent=2, fn="update", state_id="sum"),
    ])


def run_batches(s: SchedulerState, first: int, count: int, run_id: str, sources: int = 2) -> list:
    """One stream group of `count` batches (as squall.stream submits it), completed."""
    jobs = [JobSpec(job_id=f"{run_id}.{b}", plan=stateful_plan(b, sources=sources)) for b in range(first, first + count)]
    actions = receive(s, SubmitJobs(run_id=run_id, jobs=jobs, code=CODE, group_size=count, first_batch=first), 0.0, peer=DRIVER)
    launched = groups(actions)
    for g in launched:
        actions += finish_group(s, g)
    return launched


def owners(launch) -> dict[int, str]:
    return {t.partition: eid for eid, m in launch.items() for t in m.tasks if t.stage_id == 1}


def test_without_rebalancing_stateful_partitions_stay_with_their_owner_even_when_executors_join():
    s = state("e0", "e1", rebalance=False)
    (first,) = run_batches(s, 0, 1, "g0", sources=3)
    receive(s, RegisterExecutor(executor_id="e2", incarnation="e2-1", data_address="tcp://e2:1", slots=1), 0.0, peer=b"e2")
    (later,) = run_batches(s, 1, 1, "g1", sources=3)
    assert owners(first) == owners(later) == {0: "e0", 1: "e1", 2: "e0", 3: "e1"}
    assert "e2" in later  # the newcomer takes map work from the next group on


def test_state_is_checkpointed_at_the_end_of_every_kth_group_and_map_outputs_feeding_it_always():
    s = state("e0", "e1")
    flagged = []
    for g in range(2 * EVERY):
        (launch,) = run_batches(s, 2 * g, 2, f"g{g}")
        tasks = [t for m in launch.values() for t in m.tasks]
        flagged += sorted({t.batch for t in tasks if t.checkpoint_state})
        assert {t.map_checkpoint for t in tasks if t.stage_id == 0} == {f"maps/sum/{b:012d}/0-{p}" for b in (2 * g, 2 * g + 1) for p in (0, 1)}
    assert flagged == [2 * EVERY - 1, 4 * EVERY - 1]  # the last batch of groups 3 and 6


def test_checkpoints_prune_the_plans_kept_for_replay_and_the_map_checkpoints():
    s = state("e0", "e1")
    for b in range(4):
        run_batches(s, b, 1, f"g{b}")
    book = s.book.states["sum"]
    assert sorted(book.retained) == [0, 1, 2, 3]
    assert receive(s, StateCheckpointed(executor_id="e0", checkpoints=[("sum", 0, 2), ("sum", 2, 2)])) == []
    actions = receive(s, StateCheckpointed(executor_id="e1", checkpoints=[("sum", 1, 2), ("sum", 3, 1)]))
    assert sends(actions, PruneCheckpoints) == [PruneCheckpoints(state_id="sum", before=2)]  # oldest is batch 1
    assert sorted(book.retained) == [2, 3]


def test_an_owners_death_rebuilds_its_partitions_on_every_survivor_before_the_next_batch():
    s = state("e0", "e1", "e2")
    for b in range(5):
        run_batches(s, b, 1, f"g{b}")
    receive(s, StateCheckpointed(executor_id="e1", checkpoints=[("sum", 1, 2)]))  # partition 1 saved after batch 2
    lose(s, "e1", 1.0)  # owned partition 1 (and 4 % 3 = 1 -> only partition 1 of 4)
    assert s.book.states["sum"].owners[1] in {"e0", "e2"}
    jobs = [JobSpec(job_id="g5.5", plan=stateful_plan(5))]
    actions = receive(s, SubmitJobs(run_id="g5", jobs=jobs, code=CODE, group_size=1, first_batch=5), 0.0, peer=DRIVER)
    rebuild, nxt = groups(actions)
    assert {t.batch for m in rebuild.values() for t in m.tasks} == {3, 4}  # from the checkpoint (batch 2) on
    assert all(job.endswith("~r1") for job in jobs_of(rebuild))
    stateful = [t for m in rebuild.values() for t in m.tasks if t.stage_id == 1]
    assert {(t.batch, t.partition, t.replay_only) for t in stateful} == {(3, 1, True), (4, 1, True)}  # only the lost partition
    new_owner = s.book.states["sum"].owners[1]
    assert [(r.state_id, r.partition, r.up_to) for r in rebuild[new_owner].restores] == [("sum", 1, 4)]
    maps = [t for m in rebuild.values() for t in m.tasks if t.stage_id == 0]
    assert len({eid for eid, m in rebuild.items() if any(t.stage_id == 0 for t in m.tasks)}) == 2  # replay spread
    assert all(t.attempt > 0 and t.push_to[1] and not t.push_to[0] for t in maps)  # pushes only to the rebuilt partition
    assert owners(nxt)[1] == new_owner
    done = finish_group(s, rebuild) + finish_group(s, nxt)
    assert [m.job_id for m in sends(done, JobDone, peer=DRIVER)] == ["g5.5"]  # the rebuild delivers nothing


def test_single_survivor_replay_puts_every_lost_partition_on_one_executor():
    s = state("e0", "e1", "e2", replay="single")
    run_batches(s, 0, 1, "g0")
    lose(s, "e0", 1.0)  # owned partitions 0 and 3
    assert {s.book.states["sum"].owners[p] for p in (0, 3)} == {"e1"}


def test_a_rebuild_whose_plans_are_gone_fails_the_stream_with_the_reason():
    s = state("e0", "e1")
    for b in range(3):
        run_batches(s, b, 1, f"g{b}")
    s.book.states["sum"].retained.pop(1)
    lose(s, "e1", 1.0)
    jobs = [JobSpec(job_id="g3.3", plan=stateful_plan(3))]
    fails = sends(receive(s, SubmitJobs(run_id="g3", jobs=jobs, code=CODE, group_size=1, first_batch=3), 0.0, peer=DRIVER), JobFailed)
    assert [(f.job_id, f.kind) for f in fails] == [("g3.3", "executor_lost")] and "batch 1" in fails[0].message
    assert "g3" not in s.runs  # the run ended (RunDone), nothing left behind


def test_a_stream_resuming_on_a_restarted_scheduler_rebuilds_every_partition_from_its_checkpoint():
    s = state("e0", "e1")  # a fresh scheduler: it has never seen the state
    replays = [JobSpec(job_id=f"g9.r{b}", plan=stateful_plan(b), replay_only=True, batch=b) for b in (5, 6)]
    jobs = [JobSpec(job_id="g9.7", plan=stateful_plan(7))]
    msg = SubmitJobs(run_id="g9", jobs=[*replays, *jobs], code=CODE, group_size=1, first_batch=7, resume_states={"sum": 4})
    rebuild, nxt = groups(receive(s, msg, 0.0, peer=DRIVER))
    restores = sorted((r.partition, r.up_to) for m in rebuild.values() for r in m.restores)
    assert restores == [(p, 6) for p in range(4)]  # every partition, from its newest checkpoint up to batch 6
    assert {(t.batch, t.replay_only) for m in rebuild.values() for t in m.tasks if t.stage_id == 1} == {(5, True), (6, True)}
    assert {t.batch for m in nxt.values() for t in m.tasks} == {7}
    done = finish_group(s, rebuild) + finish_group(s, nxt)
    assert [m.job_id for m in sends(done, JobDone, peer=DRIVER)] == ["g9.7"]  # replays deliver nothing
    (run_done,) = [m for m in sends(done, RunDone, peer=DRIVER)]
    assert run_done.checkpoints == {"sum": 4}  # what a driver resumes from next time


def test_resume_information_is_ignored_for_a_state_the_scheduler_is_running():
    s = state("e0", "e1")
    run_batches(s, 0, 1, "g0")
    jobs = [JobSpec(job_id="g1.1", plan=stateful_plan(1))]
    launched = groups(receive(s, SubmitJobs(run_id="g1", jobs=jobs, code=CODE, group_size=1, first_batch=1,
                                                  resume_states={"sum": -1}), 0.0, peer=DRIVER))
    assert len(launched) == 1 and not any(m.restores for m in launched[0].values())


def test_map_output_checkpoints_can_be_turned_off():
    s = checked(Settings(shuffle_meta_address="tcp://meta:1", checkpoint_map_outputs=False))
    receive(s, RegisterExecutor(executor_id="e0", incarnation="e0-1", data_address="tcp://e0:1", slots=1), 0.0, peer=b"e0")
    (launch,) = run_batches(s, 0, 1, "g0")
    assert all(t.map_checkpoint == "" for m in launch.values() for t in m.tasks)
