"""Results straight from the executors to the driver, on a real cluster: what the driver's
result socket admits, and a driver the executors cannot reach failing its jobs clearly instead
of waiting for ever. (That results bypass the scheduler: test_drizzle.py counts its messages;
replays after an executor's loss: test_recovery.py, test_faults.py.)"""

from __future__ import annotations

import operator

import pytest
import zmq
from squall.common import protocol, security, transport
from squall.common.protocol import Ping

import squall
from squall import LocalCluster
from squall.client import CONTROL
from tests.cluster.helpers import run_with_deadline
from tests.conftest import fast_settings
from tests.polling import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(90)]


def test_the_result_socket_admits_only_the_clusters_members_and_shrugs_off_what_is_no_result(cluster: LocalCluster) -> None:
    with cluster.connect() as ctx:
        results = ctx.client.results
        assert results is not None and ctx.client.result_address.startswith("tcp://127.0.0.1:")
        stranger = zmq.Context.instance().socket(zmq.DEALER)
        public, secret = security.new_keypair()
        stranger.curve_publickey, stranger.curve_secretkey = public.encode(), secret.encode()
        stranger.curve_serverkey = fast_settings().curve_public_key.encode()
        member = transport.new_socket(zmq.Context.instance(), zmq.DEALER, cluster.settings)
        try:
            stranger.connect(ctx.client.result_address)
            member.connect(ctx.client.result_address)
            try:
                stranger.send_multipart(protocol.encode(Ping(nonce=1)), flags=zmq.NOBLOCK)  # type: ignore[arg-type]
            except zmq.Again:
                pass  # its handshake failed: nothing to queue for
            member.send_multipart(protocol.encode(Ping(nonce=2)))  # type: ignore[arg-type]
            member.send_multipart([b"not a message"])
            # Messages are read while a driver thread waits for the scheduler's answers.
            wait_until(lambda: ctx.status() and results.rejected >= 2, timeout=10, what="the member's messages read")
            assert results.rejected == 2  # the stranger's never got in
            # A result of a run nobody waits for (a late replay's) is dropped, not kept.
            late = protocol.ResultPartition(executor_id="e", job_id="gone-1.0~1", partition=0, attempt=1, partitions=1)
            member.send_multipart(protocol.encode(late, [b"\x00block"]))  # type: ignore[arg-type]
            data = ctx.range(40, partitions=4).map(lambda x: (x % 2, x)).reduce_by_key(operator.add, 2)
            assert sorted(data.collect()) == [(0, sum(range(0, 40, 2))), (1, sum(range(1, 40, 2)))]
            wait_until(lambda: not results.sock.poll(0), timeout=10, what="the late result read")
            assert not ctx.client._boxes[CONTROL], ctx.client._boxes[CONTROL]
        finally:
            stranger.close(0)
            member.close(0)


def test_results_the_driver_never_gets_fail_their_job_naming_driver_host(cluster: LocalCluster) -> None:
    """A driver_host executors cannot reach (TEST-NET-1): the scheduler hears the results were
    sent; the driver waits result_wait for them, then fails the job saying what to set."""
    unreachable = cluster.settings.replace(driver_host="192.0.2.1", result_wait=1.0)
    with squall.connect(cluster.address, unreachable) as ctx:
        assert ctx.client.result_address.startswith("tcp://192.0.2.1:")
        finished, outcome, took = run_with_deadline(lambda: ctx.range(10, partitions=2).map(lambda x: x + 1).collect(), timeout=30)
    assert finished, "the job hung"
    assert isinstance(outcome, squall.JobError) and outcome.kind == "results_lost", repr(outcome)
    assert "driver_host" in str(outcome) and "SQUALL_RESULT_WAIT" in str(outcome)
    with cluster.connect() as ctx:  # the cluster is unharmed
        assert ctx.range(10, partitions=2).map(lambda x: x + 1).collect() == list(range(1, 11))
