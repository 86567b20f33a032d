"""The test Redis itself: real, and what it acknowledged survives a kill and restart."""

from __future__ import annotations

import pytest

from tests.redis_server import RedisServer

pytestmark = [pytest.mark.timeout(30)]


def test_a_killed_and_restarted_redis_keeps_what_it_acknowledged(redis_server: RedisServer) -> None:
    client = redis_server.client()
    entry = client.xadd("events", {"v": "1"})
    redis_server.restart()
    client = redis_server.client()
    assert [e[0] for e in client.xrange("events")] == [entry]
