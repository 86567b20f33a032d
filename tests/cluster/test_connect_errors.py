"""Connecting wrongly: each mistake gets an error that says what is wrong and what to do, at once
where the cause is known (not after the connect timeout)."""

from __future__ import annotations

import time

import pytest
from squall.common import security

import squall
from squall import LocalCluster, Settings
from tests.conftest import fast_settings

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(60)]


def connect_error(address: object, settings: Settings | None) -> tuple[str, float]:
    """The ConnectionError connect() raises, and how long it took."""
    started = time.monotonic()
    with pytest.raises(squall.ConnectionError) as info:
        squall.connect(address, settings)  # type: ignore[arg-type]
    return str(info.value), time.monotonic() - started


def test_connect_takes_a_local_cluster(cluster: LocalCluster) -> None:
    with squall.connect(cluster) as ctx:
        assert ctx.range(10, partitions=2).count() == 10
    with squall.Context(cluster) as ctx:
        assert ctx.address == cluster.address
    with pytest.raises(TypeError, match="LocalCluster"):
        squall.connect(7077)  # type: ignore[arg-type]


def test_no_keys_names_cluster_connect(cluster: LocalCluster) -> None:
    message, _ = connect_error(cluster.address, Settings())
    assert "SQUALL_CURVE_PUBLIC_KEY" in message and "squall keys" in message
    assert "cluster.connect()" in message and "squall.connect(cluster)" in message


def test_plaintext_against_a_curvezmq_cluster_says_so_at_once(cluster: LocalCluster) -> None:
    message, took = connect_error(cluster.address, Settings(plaintext=True, connect_timeout=5.0))
    assert took < 2.0, f"took {took:.2f}s: the refusal is known at once"
    assert "speaks CurveZMQ" in message and "SQUALL_PLAINTEXT" in message
    assert "cluster.connect()" in message


def test_other_keys_say_the_keys_differ_at_once(cluster: LocalCluster) -> None:
    public, secret = security.new_keypair()
    message, took = connect_error(cluster.address, fast_settings(curve_public_key=public, curve_secret_key=secret))
    assert took < 2.0, f"took {took:.2f}s: the refusal is known at once"
    assert "keys differ" in message and "SQUALL_CURVE_SECRET_KEY" in message
    assert cluster.address in message


def test_nothing_listening_says_so_after_the_timeout() -> None:
    from tests.cluster.helpers import free_tcp_port

    address = f"tcp://127.0.0.1:{free_tcp_port()}"
    message, took = connect_error(address, fast_settings(connect_timeout=0.3))
    assert "no scheduler answered" in message and "nothing accepted a connection" in message


@pytest.mark.parametrize("address", ["127.0.0.1:7077", "localhost:7077", "tcp://127.0.0.1", "http://127.0.0.1:7077", "", "tcp://"])
def test_malformed_address_is_a_squall_error(address: str) -> None:
    message, took = connect_error(address, fast_settings())
    assert took < 1.0
    assert "is not a scheduler address" in message and "tcp://host:port" in message
    if address.endswith(":7077") and "://" not in address:
        assert f"did you mean tcp://{address}?" in message


def test_connecting_to_an_executor_or_shuffle_meta_is_refused(cluster: LocalCluster) -> None:
    with cluster.connect() as ctx:
        executor_address = ctx.status().executors[0].data_address
    for address, service in [(executor_address, "executor"), (cluster.shuffle_meta_address, "shuffle_meta")]:
        message, took = connect_error(address, cluster.settings)
        assert took < 2.0
        assert f"is a Squall {service}, not a scheduler" in message
        assert "cluster.address" in message


def test_a_context_used_after_its_with_block_says_it_is_closed(cluster: LocalCluster) -> None:
    with cluster.connect() as ctx:
        data = ctx.range(10, partitions=2)
    for use in (ctx.status, data.collect, lambda: ctx.range(5)):
        with pytest.raises(squall.ConnectionError, match="this context is closed"):
            use()


def test_health_says_what_is_wrong(cluster: LocalCluster) -> None:
    from squall.health import check_service

    ok, detail = check_service("executor", "localhost:7077", 1.0, cluster.settings)
    assert not ok and "is not an executor address" in detail and "did you mean tcp://localhost:7077?" in detail
    ok, detail = check_service("scheduler", cluster.address, 5.0, Settings(plaintext=True))
    assert not ok and "speaks CurveZMQ" in detail
