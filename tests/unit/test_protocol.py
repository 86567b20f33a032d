"""squall.common.protocol: the codec round-trips every message and turns any bad input into ProtocolError."""

from __future__ import annotations

import msgspec
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from squall.common.plan import Aggregator, LogicalPlan, NarrowNode, RangeSource, ShuffleNode, SourceNode
from squall.common.protocol import (
    Blocks,
    BlocksReady,
    CancelRun,
    ErrorReply,
    FetchBlocks,
    ForgetJob,
    ForgetStates,
    GetMetrics,
    GroupDone,
    GroupStats,
    Heartbeat,
    JobDone,
    JobFailed,
    JobSpec,
    LaunchGroup,
    LaunchTasks,
    LookupMapOutputs,
    MapLocation,
    MapOutput,
    MapOutputs,
    Metrics,
    Ping,
    Pong,
    ProtocolError,
    PruneCheckpoints,
    PushBlocks,
    RegisterExecutor,
    RegisterMapOutputs,
    ReleaseJob,
    Reregister,
    ResultPartition,
    RunDone,
    StateCheckpointed,
    StateRestore,
    SubmitJobs,
    TaskDescriptor,
    TaskFinished,
    decode,
    encode,
    fits,
    payload_bytes,
)
from squall.services.scheduler.planner import plan_job

LIMIT = 1 << 20


def plan() -> LogicalPlan:
    return LogicalPlan(
        nodes=[
            SourceNode(source=RangeSource(start=0, stop=10, step=1, partitions=2)),
            NarrowNode(parent=0, fn="fn"),
            ShuffleNode(parent=1, partitions=3, aggregator=Aggregator(kind="reduce", fn="add")),
        ]
    )


def finished(has_result: bool) -> TaskFinished:
    return TaskFinished(
        executor_id="e1", job_id="j1", stage_id=1, partition=2, attempt=0,
        has_result=has_result, output_bytes=5, elapsed=0.25,
    )


def submit(job_id: str = "j1", **fields) -> SubmitJobs:
    return SubmitJobs(run_id="r1", jobs=[JobSpec(job_id=job_id, plan=plan())], **fields)


STAGES = {s.spec.key(): s.spec for s in plan_job(plan()).stages}
TASK = TaskDescriptor(job_id="j1", stage_id=0, partition=1, stage_key="k", batch=3, push_to=["tcp://a:1", "tcp://b:1"])

ROUND_TRIPS = [
    (Ping(nonce=7), []),
    (ErrorReply(reason="nope", request_id=3), []),
    (submit(code={"fn": b"\x80pickled", "add": b"\x80add"}, group_size=5, preschedule=False, barrier=True), []),
    (CancelRun(run_id="r1"), []),
    (JobDone(job_id="j1", elapsed=0.5, partitions=[0, 2], finished_at=12.5), [b"\x00p0", b"\x00p2"]),
    (RunDone(run_id="r1", groups=[GroupStats(group_id=1, jobs=2, executors=3, launch_bytes=100, code_bytes=10, duration=0.1)]), []),
    (GetMetrics(), []),
    (Metrics(received={"SubmitJobs": 1}, sent={"LaunchGroup": 4}), []),
    (LaunchGroup(group_id=2, tasks=[TASK], stages=STAGES, code={"fn": b"blob"}, barrier=True), []),
    (GroupDone(group_id=2, executor_id="e1", tasks=4, busy=0.01), []),
    (ResultPartition(executor_id="e1", job_id="j1", partition=2), [b"\x00rows"]),
    (PushBlocks(job_id="j1", shuffle_id=2, map_partition=1, reduce_partitions=[0, 3]), [b"b0", b"b3"]),
    (BlocksReady(job_id="j1", shuffle_id=2, map_partition=1, reduce_partitions=[1], address="tcp://h:2"), []),
    (ReleaseJob(job_ids=["j1", "j2"]), []),
    (ForgetJob(job_ids=["j1"]), []),
    (RegisterExecutor(executor_id="e1", incarnation="e1-1", data_address="tcp://127.0.0.1:5000", slots=2, pid=42), []),
    (Heartbeat(executor_id="e1", incarnation="e1-1"), []),
    (JobFailed(job_id="j1", kind="task", message="boom", error_type="ZeroDivisionError", stage_id=0, partition=1), []),
    (LaunchTasks(tasks=[TaskDescriptor(job_id="j1", stage_id=0, partition=1, stage_key="k")]), []),
    (LaunchTasks(tasks=[TASK], stages=STAGES, code={"fn": b"blob"}), []),
    (ResultPartition(executor_id="e1", job_id="j1", partition=3), [b"\x00records"]),
    (Blocks(request_id=9, map_partitions=[0, 2, 5]), [b"a", b"", b"c" * 100]),
    (Blocks(request_id=9, map_partitions=[]), []),
    (finished(True), [b"result-block"]),
    (finished(False), []),
    (RegisterMapOutputs(outputs=[MapOutput(job_id="j1", shuffle_id=2, location=MapLocation(map_partition=1, executor_id="e1", address="tcp://h:1", sizes=[3, 4]))]), []),
    (LookupMapOutputs(request_id=1, job_id="j1", shuffle_id=2, expected=4, timeout=1.5), []),
    (MapOutputs(request_id=1, locations=[MapLocation(map_partition=0, executor_id="e", address="a", sizes=[])]), []),
    (FetchBlocks(request_id=1, job_id="j1", shuffle_id=2, reduce_partition=0, map_partitions=[1, 3]), []),
    (LaunchGroup(group_id=3, tasks=[TaskDescriptor(job_id="j1~2", stage_id=1, partition=0, stage_key="k", attempt=2,
                                                   checkpoint_state=True, map_checkpoint="maps/s/1/0-0", replay_only=True)],
                 restores=[StateRestore(state_id="s1", partition=0, up_to=4, first_batch=0)]), []),
    (StateCheckpointed(executor_id="e1", checkpoints=[("s1", 0, 9)]), []),
    (PruneCheckpoints(state_id="s1", before=10), []),
    (ForgetStates(state_ids=["s1"]), []),
    (ReleaseJob(job_ids=["j1"], superseded=True), []),
    (Reregister(executor_id="e1", registration=3), []),
    (Pong(nonce=1, service="scheduler", incarnation="abc"), []),
    (SubmitJobs(run_id="r2", jobs=[JobSpec(job_id="r2.r0", plan=plan(), replay_only=True, batch=7)], resume_states={"s1": 6}), []),
    (RunDone(run_id="r1", checkpoints={"s1": 5}), []),
]


@pytest.mark.parametrize(("msg", "payloads"), ROUND_TRIPS, ids=lambda v: type(v).__name__)
def test_round_trip(msg, payloads):
    frames = encode(msg, payloads)
    assert len(frames) == 1 + len(payloads)
    decoded, got = decode(frames, LIMIT)
    assert decoded == msg
    assert type(decoded) is type(msg)
    assert [bytes(payload_bytes(p)) for p in got] == payloads


def test_payload_frames_are_passed_through_untouched():
    block = memoryview(b"\x01compressed")
    msg, payloads = decode(encode(ResultPartition(executor_id="e1", job_id="j", partition=0), [block]), LIMIT)
    assert payloads[0] is block


def test_decode_accepts_zmq_frames():
    frames = [zmq.Frame(f) for f in encode(ResultPartition(executor_id="e1", job_id="j", partition=1), [b"data"])]
    msg, payloads = decode(frames, LIMIT)
    assert msg == ResultPartition(executor_id="e1", job_id="j", partition=1)
    assert bytes(payload_bytes(payloads[0])) == b"data"


def test_encode_rejects_wrong_payload_count():
    with pytest.raises(ProtocolError, match="ResultPartition needs 1 payload frames, got 0"):
        encode(ResultPartition(executor_id="e1", job_id="j", partition=0))
    with pytest.raises(ProtocolError):
        encode(finished(False), [b"unexpected"])
    with pytest.raises(ProtocolError):
        encode(Blocks(request_id=1, map_partitions=[0, 1]), [b"only one"])


# --- everything bad is a ProtocolError ------------------------------------------------------------


def test_empty_frame_list():
    with pytest.raises(ProtocolError, match="empty"):
        decode([], LIMIT)


@pytest.mark.parametrize("header", [b"", b"\xff\xfe\xfd garbage", b"\x00", b"not msgpack at all", b"\xc1"])
def test_garbage_header(header):
    with pytest.raises(ProtocolError):
        decode([header], LIMIT)


def test_truncated_header():
    header = encode(submit())[0]
    for cut in (1, len(header) // 2, len(header) - 1):
        with pytest.raises(ProtocolError):
            decode([header[:cut]], LIMIT)


def test_unknown_tag_and_non_message_header():
    with pytest.raises(ProtocolError):
        decode([msgspec.msgpack.encode({"type": "NoSuchMessage"})], LIMIT)
    with pytest.raises(ProtocolError):
        decode([msgspec.msgpack.encode([1, 2, 3])], LIMIT)


@pytest.mark.parametrize(
    ("msg", "payloads"),
    [
        (ResultPartition(executor_id="e1", job_id="j", partition=0), []),
        (ResultPartition(executor_id="e1", job_id="j", partition=0), [b"a", b"b"]),
        (finished(True), []),
        (finished(False), [b"x"]),
        (Blocks(request_id=1, map_partitions=[0, 1, 2]), [b"a", b"b"]),
        (Ping(), [b"stray"]),
        (ResultPartition(executor_id="e", job_id="j", partition=0), []),
        (PushBlocks(job_id="j", shuffle_id=0, map_partition=0, reduce_partitions=[0, 1]), [b"a"]),
        (BlocksReady(job_id="j", shuffle_id=0, map_partition=0, reduce_partitions=[0], address="a"), [b"a"]),
    ],
    ids=lambda v: type(v).__name__ if not isinstance(v, list) else f"{len(v)}frames",
)
def test_valid_header_with_wrong_payload_count(msg, payloads):
    header = msgspec.msgpack.encode(msg)
    with pytest.raises(ProtocolError, match="payload frames"):
        decode([header, *payloads], LIMIT)


def test_message_over_max_bytes():
    frames = encode(ResultPartition(executor_id="e1", job_id="j", partition=0), [b"x" * 5000])
    with pytest.raises(ProtocolError, match="exceeds the limit of 4096"):
        decode(frames, 4096)
    assert decode(frames, 10_000)[0] == ResultPartition(executor_id="e1", job_id="j", partition=0)


@pytest.mark.parametrize(
    "msg",
    [
        ResultPartition(executor_id="e1", job_id="j", partition=-1),
        SubmitJobs(run_id="", jobs=[]),
        submit(job_id=""),
        submit(group_size=0),
        SubmitJobs(run_id="r", jobs=[JobSpec(job_id="j", plan=LogicalPlan(nodes=[SourceNode(source=RangeSource(start=0, stop=1, step=1, partitions=1)), NarrowNode(parent=0, fn="")]))]),
        SubmitJobs(run_id="r", jobs=[JobSpec(job_id="j", plan=LogicalPlan(nodes=[SourceNode(source=RangeSource(start=0, stop=1, step=1, partitions=1)), NarrowNode(parent=0, fn="k" * 65)]))]),
        LaunchGroup(group_id=-1, tasks=[]),
        LaunchGroup(group_id=0, tasks=[TaskDescriptor(job_id="j", stage_id=0, partition=0, stage_key="k", batch=-1)]),
        GroupDone(group_id=0, executor_id="e", tasks=0, busy=-1.0),
        Heartbeat(executor_id="x" * 129, incarnation="i"),
        RegisterExecutor(executor_id="e", incarnation="e-1", data_address="a", slots=0),
        RegisterExecutor(executor_id="e", incarnation="e-1", data_address="a", slots=5000),
        LookupMapOutputs(request_id=1, job_id="j", shuffle_id=0, expected=0),
        LookupMapOutputs(request_id=1, job_id="j", shuffle_id=0, expected=1, timeout=-1.0),
        LaunchTasks(tasks=[TaskDescriptor(job_id="j", stage_id=-3, partition=0, stage_key="k")]),
        SubmitJobs(run_id="r", jobs=[JobSpec(job_id="j", plan=LogicalPlan(nodes=[SourceNode(source=RangeSource(start=0, stop=1, step=1, partitions=0))]))]),
    ],
    ids=lambda m: type(m).__name__,
)
def test_invalid_field_values(msg):
    # Struct constructors do not validate; the decoder must.
    header = msgspec.msgpack.encode(msg)
    payloads = [b"p"] * msg.payload_count()
    with pytest.raises(ProtocolError, match="undecodable header|invalid message"):
        decode([header, *payloads], LIMIT)


def test_post_init_error_in_nested_struct():
    # RangeSource.__post_init__ raises ValueError for step 0: it must still come out as ProtocolError.
    good = msgspec.msgpack.decode(encode(submit())[0])
    good["jobs"][0]["plan"]["nodes"][0]["source"]["step"] = 0
    with pytest.raises(ProtocolError, match="step"):
        decode([msgspec.msgpack.encode(good)], LIMIT)


def test_fits_leaves_room_for_a_header():
    assert fits(0, 1024) and fits(1024 - 256, 1024) and not fits(1024 - 255, 1024)
    big = 256 * 1024 * 1024
    assert fits(big - 16 * 1024, big) and not fits(big - 16 * 1024 + 1, big)


def test_wrong_field_type():
    raw = msgspec.msgpack.encode({"type": "Heartbeat", "executor_id": 12})
    with pytest.raises(ProtocolError):
        decode([raw], LIMIT)


# --- fuzzing ---------------------------------------------------------------------------------------


def _decode_or_protocol_error(frames: list[bytes]) -> None:
    try:
        decode(frames, 64 * 1024)
    except ProtocolError:
        pass


# A deadline per example: a frame that made the decoder loop or crawl would fail here, not hang.
@settings(max_examples=500, deadline=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=200), max_size=5))
def test_random_frames_only_raise_protocol_error(frames):
    _decode_or_protocol_error(frames)


VALID_HEADERS = [encode(m, p)[0] for m, p in ROUND_TRIPS]


@settings(max_examples=500, deadline=200, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(VALID_HEADERS),
    st.data(),
    st.lists(st.binary(max_size=20), max_size=4),
)
def test_mutated_valid_headers_only_raise_protocol_error(header, data, payloads):
    raw = bytearray(header)
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    _decode_or_protocol_error([bytes(raw[:cut]), *payloads])
