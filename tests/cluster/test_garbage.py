"""Nothing a peer sends can crash a service: every bad message gets an ErrorReply, and the service
(and the cluster) keeps working."""

from __future__ import annotations

import operator
import random

import msgspec
import pytest
from squall.common import protocol
from squall.common.plan import CollectionSource, LogicalPlan, NarrowNode, RangeSource, SourceNode, code_key
from squall.common.protocol import (
    Blocks,
    ErrorReply,
    FetchBlocks,
    JobFailed,
    JobSpec,
    MapOutputs,
    Ping,
    RunDone,
    SubmitJobs,
)
from squall.common.serialization import dumps_function

import squall
from squall import LocalCluster
from tests.cluster.helpers import ping, raw_dealer, recv_message, request, run_with_deadline
from tests.conftest import fast_settings

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(60)]

SERVICES = ["scheduler", "shuffle_meta", "executor"]
SERVICE_NAME = {"scheduler": "scheduler", "shuffle_meta": "shuffle_meta", "executor": "executor"}
SUBMIT = SubmitJobs(run_id="garbage-1", jobs=[JobSpec(job_id="garbage-1.0", plan=LogicalPlan(nodes=[]))])
# A well-formed message each service does not handle.
UNHANDLED = {
    "scheduler": MapOutputs(request_id=1, locations=[]),
    "shuffle_meta": SUBMIT,
    "executor": SUBMIT,
}


def address_of(cluster: LocalCluster, ctx: squall.Context, service: str) -> str:
    if service == "scheduler":
        return cluster.address
    if service == "shuffle_meta":
        return cluster.shuffle_meta_address
    return ctx.status().executors[0].data_address


def header(msg: protocol.Message) -> bytes:
    return protocol.encode(msg)[0]  # type: ignore[return-value]


def garbage(kind: str, service: str) -> list[bytes]:
    if kind.startswith("random"):
        seed = int(kind.rsplit("-", 1)[1])
        rng = random.Random(seed)
        return [rng.randbytes(rng.choice([1, 17, 300, 4000]))]
    if kind == "empty frame":
        return [b""]
    if kind == "truncated header":
        return [header(Ping(nonce=123456789))[:-3]]
    if kind == "extra payload frames":
        return [header(Ping(nonce=1)), b"payload", b""]
    if kind == "missing payload frames":
        return [msgspec.msgpack.encode(Blocks(request_id=1, map_partitions=[0, 1]))]
    if kind == "unknown tag":
        return [msgspec.msgpack.encode({"type": "LaunchMissiles", "nonce": 1})]
    if kind == "wrong field type":
        return [msgspec.msgpack.encode({"type": "Ping", "nonce": "one"})]
    if kind == "not a map":
        return [msgspec.msgpack.encode([1, 2, 3])]
    if kind == "unhandled type":
        return [header(UNHANDLED[service])]
    raise AssertionError(kind)


KINDS = [
    "random-0",
    "random-1",
    "random-2",
    "empty frame",
    "truncated header",
    "extra payload frames",
    "missing payload frames",
    "unknown tag",
    "wrong field type",
    "not a map",
    "unhandled type",
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("service", SERVICES)
def test_bad_message_gets_error_reply_and_service_keeps_serving(cluster, ctx, service, kind):  # type: ignore[no-untyped-def]
    sock = raw_dealer(address_of(cluster, ctx, service), cluster.settings)
    try:
        reply = request(sock, garbage(kind, service))
        assert isinstance(reply, ErrorReply), reply
        assert reply.reason
        if kind == "unhandled type":
            assert type(UNHANDLED[service]).__name__ in reply.reason
        else:
            assert reply.reason.startswith("protocol error")
        assert ping(sock).service == SERVICE_NAME[service]
    finally:
        sock.close(0)
    assert ctx.range(20, partitions=3).map(lambda x: (x % 2, x)).reduce_by_key(operator.add).count() == 2


@pytest.mark.parametrize("service", SERVICES)
def test_burst_of_garbage_is_answered_one_by_one(cluster, ctx, service):  # type: ignore[no-untyped-def]
    sock = raw_dealer(address_of(cluster, ctx, service), cluster.settings)
    try:
        n = 600  # more than one drain batch (256)
        for i in range(n):
            sock.send_multipart(garbage(f"random-{i}", service))
        replies = [recv_message(sock)[0] for _ in range(n)]
        assert all(isinstance(r, ErrorReply) for r in replies)
        assert ping(sock).service == SERVICE_NAME[service]
    finally:
        sock.close(0)
    assert ctx.range(10, partitions=2).collect() == list(range(10))


def test_executor_answers_fetch_of_unknown_blocks_with_error(cluster, ctx):  # type: ignore[no-untyped-def]
    sock = raw_dealer(address_of(cluster, ctx, "executor"), cluster.settings)
    try:
        fetch = FetchBlocks(request_id=4242, job_id="no-such-job", shuffle_id=1, reduce_partition=0, map_partitions=[0, 3])
        reply = request(sock, [header(fetch)])
        assert isinstance(reply, ErrorReply)
        assert reply.request_id == 4242
        assert "no block" in reply.reason
    finally:
        sock.close(0)


def submit_raw(cluster: LocalCluster, plan: LogicalPlan, job_id: str, code: dict[str, bytes] | None = None) -> JobFailed:
    """Submit a hand-made plan (with the code it names) on a raw socket; return the job's JobFailed."""
    sock = raw_dealer(cluster.address, cluster.settings)
    try:
        sock.send_multipart([header(SubmitJobs(run_id=job_id, jobs=[JobSpec(job_id=job_id, plan=plan)], code=code or {}))])
        failed = None
        while True:
            msg, _ = recv_message(sock, timeout=10)
            if isinstance(msg, JobFailed):
                assert msg.job_id == job_id
                failed = msg
            elif isinstance(msg, RunDone):
                assert failed is not None, "the run ended without failing the job"
                return failed
    finally:
        sock.close(0)


def narrow(parent: int, blob: bytes) -> tuple[NarrowNode, dict[str, bytes]]:
    return NarrowNode(parent=parent, fn=code_key(blob)), {code_key(blob): blob}


def test_plans_the_planner_rejects_fail_the_job(cluster, ctx):  # type: ignore[no-untyped-def]
    failed = submit_raw(cluster, LogicalPlan(nodes=[]), "bad-plan-1")
    assert failed.kind == "plan"
    node, code = narrow(1, b"x")
    forward = LogicalPlan(nodes=[SourceNode(source=RangeSource(0, 10, 1, 2)), node])
    failed = submit_raw(cluster, forward, "bad-plan-2", code)
    assert failed.kind == "plan" and "does not come before" in failed.message
    assert ctx.range(4, partitions=2).collect() == [0, 1, 2, 3]


def test_garbage_code_and_data_in_a_plan_fail_the_job_not_the_executor(cluster, ctx):  # type: ignore[no-untyped-def]
    source = SourceNode(source=RangeSource(0, 10, 1, 4))
    node, code = narrow(0, b"\x80\x05garbage")
    failed = submit_raw(cluster, LogicalPlan(nodes=[source, node]), "bad-code", code)
    assert failed.kind == "task" and failed.error_type == "SerializationError"
    bad_slices = CollectionSource(slices=[b"\x01not lz4", b"\x07", b""])
    failed = submit_raw(cluster, LogicalPlan(nodes=[SourceNode(source=bad_slices)]), "bad-data")
    assert failed.kind == "task" and failed.error_type == "SerializationError"
    # a pickled function that is not a partition function fails as a task error
    not_a_pipeline, code = narrow(0, dumps_function(len))
    failed = submit_raw(cluster, LogicalPlan(nodes=[source, not_a_pipeline]), "bad-shape", code)
    assert failed.kind == "task" and failed.error_type == "TypeError"
    assert len(ctx.status().executors) == 4
    assert ctx.range(12, partitions=4).map(lambda x: x * 2).collect() == [x * 2 for x in range(12)]


# --- size limit ----------------------------------------------------------------------------------

LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def small_cluster():  # type: ignore[no-untyped-def]
    settings = fast_settings(max_message_bytes=LIMIT, scheduler_silence_timeout=2.0, shuffle_fetch_timeout=2.0)
    with LocalCluster(executors=2, settings=settings) as c:
        yield c


@pytest.mark.parametrize("service", SERVICES)
def test_oversized_frame_disconnects_the_peer_not_the_service(small_cluster, service):  # type: ignore[no-untyped-def]
    with small_cluster.connect() as ctx:
        address = address_of(small_cluster, ctx, service)
        rude = raw_dealer(address, small_cluster.settings)
        try:
            rude.send_multipart([header(Ping(nonce=1)) + b"\x00" * (200 * 1024)])
            fresh = raw_dealer(address, small_cluster.settings)
            try:
                assert ping(fresh, nonce=99).service == SERVICE_NAME[service]
            finally:
                fresh.close(0)
        finally:
            rude.close(0)
        assert ctx.range(30, partitions=4).map(lambda x: (x % 3, 1)).reduce_by_key(operator.add).count() == 3


@pytest.mark.parametrize("service", SERVICES)
def test_message_over_the_limit_in_small_frames_gets_error_reply(small_cluster, service):  # type: ignore[no-untyped-def]
    with small_cluster.connect() as ctx:
        sock = raw_dealer(address_of(small_cluster, ctx, service), small_cluster.settings)
        try:
            frames = [header(Ping(nonce=5))] + [b"\x00" * (30 * 1024)] * 3  # each frame under the limit
            reply = request(sock, frames)
            assert isinstance(reply, ErrorReply)
            assert "exceeds the limit" in reply.reason
            assert ping(sock).service == SERVICE_NAME[service]
        finally:
            sock.close(0)


def clear_size_error(outcome: object) -> bool:
    text = str(outcome).lower()
    return any(s in text for s in ("max_message_bytes", "exceeds", "too large"))


def test_job_larger_than_the_limit_fails_instead_of_hanging(small_cluster):  # type: ignore[no-untyped-def]
    ctx = small_cluster.connect()  # not closed: a hung call may still be using it
    finished, outcome, _ = run_with_deadline(ctx.parallelize(range(100_000), 2).count, timeout=4.0)
    assert finished, "the driver hung submitting a job larger than max_message_bytes"
    assert isinstance(outcome, squall.SquallError | ValueError) and clear_size_error(outcome), repr(outcome)


def test_result_larger_than_the_limit_fails_with_a_clear_error(small_cluster):  # type: ignore[no-untyped-def]
    with small_cluster.connect() as ctx:
        payload = lambda x: random.Random(x).randbytes(100_000)  # noqa: E731 - incompressible
        finished, outcome, _ = run_with_deadline(ctx.range(1, partitions=1).map(payload).collect, timeout=8.0)
        assert finished
        assert isinstance(outcome, squall.JobError), repr(outcome)
        assert not isinstance(outcome, squall.ExecutorLostError), repr(outcome)
        assert clear_size_error(outcome), repr(outcome)


def test_shuffle_block_larger_than_the_limit_fails_with_a_clear_error(small_cluster):  # type: ignore[no-untyped-def]
    with small_cluster.connect() as ctx:
        big = lambda x: (0, random.Random(x).randbytes(100_000))  # noqa: E731 - all to one reducer
        ds = ctx.range(4, partitions=4).map(big).group_by_key(1).map(lambda kv: len(kv[1]))
        finished, outcome, _ = run_with_deadline(ds.collect, timeout=8.0)
        assert finished
        assert isinstance(outcome, squall.JobError), repr(outcome)
        assert clear_size_error(outcome), repr(outcome)
