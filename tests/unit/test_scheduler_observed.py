"""What the scheduler shows people (observed.py): the snapshot behind the dashboard and `squall
status`, and the figures behind its metrics, driven through the core's handle()."""

from __future__ import annotations

import msgspec
from squall.common.protocol import GetSnapshot, Heartbeat, JobSpec, Snapshot, StreamProgress, SubmitJobs

from tests.unit.scheduler_runs import DRIVER, groups, lose, receive, sends, state, submit, two_stage

OFFSET = 1_000_000.0  # wall clock minus the core's clock in these tests


def observed_state(*eids: str):  # type: ignore[no-untyped-def]
    s = state(*eids)
    s.observed.clock_offset = OFFSET
    return s


def snapshot(s, now: float) -> dict:  # type: ignore[no-untyped-def]
    (reply,) = sends(receive(s, GetSnapshot(), now, peer=b"cli"), Snapshot)
    return msgspec.json.decode(reply.json)


def progress(s, batch: int, latency: float, now: float, run_id: str = "r", **fields) -> None:  # type: ignore[no-untyped-def]
    receive(s, StreamProgress(stream_id="s1", run_id=run_id, batch=batch, latency=latency, **fields), now, peer=DRIVER)


def test_every_key_is_there_on_an_empty_cluster():
    shown = snapshot(observed_state(), 1.0)
    assert set(shown) == {"time", "scheduler", "executors", "streams", "runs", "persisted", "events"}
    assert shown["time"] == OFFSET + 1.0 and shown["executors"] == shown["streams"] == shown["runs"] == []


def test_executors_show_what_their_heartbeats_tell():
    s = observed_state("e0", "e1")
    receive(s, Heartbeat(executor_id="e0", incarnation="e0-1", latency_tasks=2, batch_tasks=1, suspended_tasks=1, memory_bytes=5_000,
                         persisted_bytes=300, persisted={"d1": 300}), 0.5, peer=b"hb-e0")
    receive(s, Heartbeat(executor_id="e1", incarnation="e1-1", persisted_bytes=200, persisted={"d1": 200}), 0.5, peer=b"hb-e1")
    shown = snapshot(s, 0.7)
    e0 = next(e for e in shown["executors"] if e["id"] == "e0")
    assert (e0["latency_tasks"], e0["batch_tasks"], e0["suspended_tasks"], e0["memory_bytes"], e0["persisted_bytes"]) == (2, 1, 1, 5000, 300)
    assert abs(e0["last_beat_age"] - 0.2) < 1e-9
    assert shown["persisted"] == [{"dataset": "d1", "executors": 2, "bytes": 500}]
    assert [e["kind"] for e in shown["events"]] == ["executor_joined", "executor_joined"]


def test_a_streams_batches_carry_their_scheduling_delay_and_processing_time():
    s = observed_state("e0", "e1")
    end = OFFSET + 1.0  # batch 0's interval ends at core time 1.0; its group goes out at 1.3
    specs = [JobSpec(job_id="r.0", plan=two_stage(), not_before=end, batch=0)]
    receive(s, SubmitJobs(run_id="r", jobs=specs, code={"fn": b"f", "add": b"a"}, group_size=1), 1.3, peer=DRIVER)
    progress(s, 0, latency=0.5, now=1.5, input_records=100, output_records=3, group_size=1, window_latencies=[0.7, 0.9])
    (stream,) = snapshot(s, 1.6)["streams"]
    (point,) = stream["points"]
    assert abs(point["scheduling_delay"] - 0.3) < 1e-6 and abs(point["processing_time"] - 0.2) < 1e-6
    assert point["window_latency"] == 0.9 and stream["batches"] == 1 and stream["last_batch"] == 0
    assert point["source_lag"] is None and stream["source_lag"] is None  # the progress told no lag
    o = s.observed
    assert (o.batches_completed, o.input_records, o.output_records) == (1, 100, 3)
    assert o.batch_latency.count == 1 and o.window_latency.count == 2 and o.scheduling_delay.sum > 0.29
    progress(s, 1, latency=0.1, now=1.7, source_lag=42)
    (stream,) = snapshot(s, 1.8)["streams"]
    assert [p["source_lag"] for p in stream["points"]] == [None, 42] and stream["source_lag"] == 42


def test_runs_in_flight_show_jobs_done_and_each_stages_tasks_from_heartbeats():
    s = observed_state("e0", "e1")
    launched = groups(submit(s, jobs=4, group_size=2, priority="batch"))
    first = launched[0]
    job_id = next(t.job_id for m in first.values() for t in m.tasks)
    receive(s, Heartbeat(executor_id="e0", incarnation="e0-1", batch_done={f"{job_id}:0": 2}), 0.2, peer=b"hb-e0")
    (run,) = snapshot(s, 0.3)["runs"]
    assert run["jobs"] == 4 and run["jobs_done"] == 0 and run["priority"] == "batch" and run["kind"] == "jobs"
    stage0, stage1 = run["stages"]
    in_flight = len({t.job_id for launch in launched for m in launch.values() for t in m.tasks})  # groups kept in flight
    assert stage0["done"] == 2 and stage0["tasks"] == stage1["tasks"] == 3 * in_flight


def test_a_loss_then_the_replayed_batches_delivered_is_one_recovery_with_its_duration():
    s = observed_state("e0", "e1", "e2")
    specs = [JobSpec(job_id=f"r.{b}", plan=two_stage(), not_before=OFFSET + 0.1 * (b + 1), batch=b) for b in range(2)]
    receive(s, SubmitJobs(run_id="r", jobs=specs, code={"fn": b"f", "add": b"a"}, group_size=2), 0.0, peer=DRIVER)
    lose(s, "e1", 1.0)
    assert s.observed.executor_losses == 1
    progress(s, 0, latency=0.9, now=1.2)
    assert s.observed.recoveries == 0  # batch 1 was replayed too, and is not in yet
    progress(s, 1, latency=1.1, now=1.5)
    assert s.observed.recoveries == 1 and abs(s.observed.recovery_duration.sum - 0.5) < 1e-6
    kinds = [e["kind"] for e in snapshot(s, 1.6)["events"]]
    assert kinds[-3:] == ["executor_lost", "replaying", "recovered"]


def test_what_it_keeps_stays_bounded_however_many_streams_and_batches():
    s = observed_state("e0")
    for i in range(5_000):
        receive(s, StreamProgress(stream_id=f"s{i % 50}", run_id=f"r{i}", batch=i, latency=0.01), float(i), peer=DRIVER)
    shown = snapshot(s, 6_000.0)
    assert len(shown["streams"]) <= 32 and all(len(x["points"]) <= 300 for x in shown["streams"])


def test_a_streams_source_lag_is_kept_per_stream_and_summed_for_the_gauge():
    s = observed_state("e0")
    progress(s, 0, latency=0.1, now=1.0)
    assert snapshot(s, 1.1)["streams"][0]["source_lag"] is None  # its source cannot tell
    progress(s, 1, latency=0.1, now=1.2, source_lag=40)
    receive(s, StreamProgress(stream_id="s2", run_id="r2", batch=0, latency=0.1, source_lag=2), 1.3, peer=DRIVER)
    assert [row["source_lag"] for row in snapshot(s, 1.4)["streams"]] == [40, 2]
    assert s.observed.source_lag() == 42
    progress(s, 2, latency=0.1, now=1.5, source_lag=0)
    assert s.observed.source_lag() == 2
