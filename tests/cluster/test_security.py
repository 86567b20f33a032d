"""CurveZMQ on every socket: a peer without the cluster's key pair gets nothing processed, on
any service's socket; services refuse to start without keys, and plaintext only on loopback."""

from __future__ import annotations

import operator
import subprocess
import sys

import pytest
import zmq
from squall.common import protocol, security
from squall.common.protocol import GetMetrics, Metrics, Ping, Pong
from squall.common.settings import Settings

import squall
from squall import LocalCluster
from squall.health import check_service
from tests.cluster.helpers import raw_dealer
from tests.conftest import fast_settings

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(60)]

SERVICES = ["scheduler", "shuffle_meta", "executor"]


def address_of(cluster: LocalCluster, service: str) -> str:
    if service == "scheduler":
        return cluster.address
    if service == "shuffle_meta":
        return cluster.shuffle_meta_address
    with cluster.connect() as ctx:
        return ctx.status().executors[0].data_address


def outsider(address: str, how: str) -> zmq.Socket:
    """A DEALER without the cluster's key pair: plaintext, or CURVE with a key pair of its own
    (it knows the server's public key, which is no secret)."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if how == "own_keys":
        public, secret = security.new_keypair()
        sock.curve_publickey, sock.curve_secretkey = public.encode(), secret.encode()
        sock.curve_serverkey = fast_settings().curve_public_key.encode()
    sock.connect(address)
    return sock


def send(sock: zmq.Socket, msg: protocol.Message) -> bool:
    """Send without blocking: a DEALER whose handshake failed has no peer to queue for."""
    try:
        sock.send_multipart(protocol.encode(msg), flags=zmq.NOBLOCK)  # type: ignore[arg-type]
        return True
    except zmq.Again:
        return False


def answered(sock: zmq.Socket, timeout: float) -> bool:
    send(sock, Ping(nonce=5))
    if not sock.poll(int(timeout * 1000)):
        return False
    msg, _ = protocol.decode(sock.recv_multipart(), 1 << 20)
    return isinstance(msg, Pong)


@pytest.mark.parametrize("service", SERVICES)
@pytest.mark.parametrize("how", ["plaintext", "own_keys"])
def test_a_client_without_the_clusters_keys_gets_nothing_processed(cluster, service: str, how: str) -> None:  # type: ignore[no-untyped-def]
    address = address_of(cluster, service)
    member = raw_dealer(address, cluster.settings)
    stranger = outsider(address, how)
    try:
        assert answered(member, 5.0)  # the same socket serves the cluster's key holders
        with cluster.connect() as ctx:
            before = ctx.client.metrics() if service == "scheduler" else None
        for _ in range(3):
            send(stranger, GetMetrics())
        send(stranger, Ping(nonce=5))
        assert not stranger.poll(3000), "a stranger got a reply"  # any reply means something was processed
        if before is not None:  # nothing the stranger sent reached a handler
            with cluster.connect() as ctx:
                after = ctx.client.metrics()
            assert isinstance(after, Metrics)
            assert after.received.get("GetMetrics", 0) - before.received.get("GetMetrics", 0) == 1  # ours only
        assert answered(member, 5.0)
    finally:
        member.close(0)
        stranger.close(0)


def test_health_answers_for_each_service_only_with_the_keys(cluster) -> None:  # type: ignore[no-untyped-def]
    for service in SERVICES:
        ok, detail = check_service(service, address_of(cluster, service), 5.0, cluster.settings)
        assert ok, detail
    public, secret = security.new_keypair()
    other = fast_settings(curve_public_key=public, curve_secret_key=secret)
    ok, detail = check_service("scheduler", cluster.address, 0.5, other)
    assert not ok and "keys differ" in detail
    ok, detail = check_service("executor", cluster.address, 5.0, cluster.settings)
    assert not ok and "is a scheduler, not an executor" in detail


def test_services_refuse_to_start_without_keys_or_with_plaintext_off_loopback() -> None:
    env = fast_settings(curve_public_key="", curve_secret_key="").to_env()
    for module, extra in [("squall.services.scheduler", {}), ("squall.services.shuffle_meta", {}), ("squall.services.executor", {}),
                          ("squall.services.scheduler", {"SQUALL_PLAINTEXT": "true", "SQUALL_SCHEDULER_BIND": "tcp://0.0.0.0:0"})]:
        done = subprocess.run([sys.executable, "-m", module], env={**env, **extra, "PATH": "/usr/bin:/bin"},
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 2, (module, done.stdout, done.stderr)
        assert "refused_to_start" in done.stdout + done.stderr
        assert ("loopback" if extra else "squall keys") in done.stdout + done.stderr


def test_a_plaintext_cluster_runs_on_loopback_when_asked_for() -> None:
    settings = fast_settings(curve_public_key="", curve_secret_key="", plaintext=True)
    with LocalCluster(executors=2, settings=settings) as cluster, cluster.connect() as ctx:
        assert ctx.range(100, partitions=4).map(lambda x: (x % 3, x)).reduce_by_key(operator.add).count() == 3
        with pytest.raises(squall.ConnectionError, match="speaks plaintext"):  # a driver with keys is told why
            squall.connect(cluster.address, fast_settings(connect_timeout=5.0))


def test_keys_must_be_a_matching_pair() -> None:
    public, _ = security.new_keypair()
    _, secret = security.new_keypair()
    with pytest.raises(security.SecurityError, match="does not belong"):
        security.check(Settings(curve_public_key=public, curve_secret_key=secret), [])
    with pytest.raises(security.SecurityError, match="40-character"):
        security.check(Settings(curve_public_key="short", curve_secret_key="short"), [])
    assert security.is_loopback("tcp://127.0.0.1:*") and security.is_loopback("tcp://[::1]:5") and security.is_loopback("ipc:///x")
    assert not security.is_loopback("tcp://0.0.0.0:1") and not security.is_loopback("tcp://10.0.0.5:1")
