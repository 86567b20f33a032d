"""`squall chaos --source redis`: a trial whose records come from Redis Streams (written by a
writer process while executors are killed) and whose counts go back to Redis must end with
Redis holding exactly plain Python's counts; without a redis-server the user is told which
package provides it."""

from __future__ import annotations

import multiprocessing
import shutil
from collections import Counter
from typing import Any

import pytest

from squall import sinks
from squall.chaos import plan_faults, run_trial
from squall.chaos.redis_workload import RedisTrial, record_key, record_partition
from squall.cli import main
from squall.errors import SquallError


@pytest.mark.cluster
@pytest.mark.timeout(150)
def test_a_redis_trial_with_an_executor_killed_counts_every_record_once() -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (Debian's redis-server package; .ci/run installs it)")
    pytest.importorskip("redis", reason="the redis client library is not installed (pip install -e '.[dev]')")
    seed = 211
    result = run_trial(seed, ("kill_executor",), 1, after=2.0, source="redis")  # its own redis-server
    assert not result.hung, f"seed {seed}: the stream hung"
    assert not result.error, f"seed {seed}: {result.error}"
    assert result.differences == [], f"seed {seed}: {result.differences}"
    assert [f.kind for f in result.faults] == [f.kind for f in plan_faults(seed, ("kill_executor",), 1)]
    assert result.faults[0].detection is not None
    assert result.records is not None and result.records >= 60, result.records  # a writer at work, not a handful
    assert result.batches >= 20
    assert result.ok


@pytest.mark.timeout(30)
def test_counts_that_differ_from_plain_python_are_reported(redis_server: Any) -> None:
    """The comparison can fail: one record's count missing, and a running count behind."""
    trial = RedisTrial(redis_server.url, seed=5, prefix="check")
    trial._written = multiprocessing.get_context("spawn").Value("q", 40)  # noqa: SLF001
    trial._sink = sinks.RedisSink(redis_server.url, "check:counts")  # noqa: SLF001
    client = redis_server.client()
    for n in range(40):
        client.xadd(trial.streams[record_partition(n)], {"key": record_key(5, n), "seq": str(n)})
    counts = Counter(record_key(5, n) for n in range(40))
    short = sorted(counts)[0]
    trial._deliver(0, [(key, (n - (key == short), n - (key == short))) for key, n in counts.items()])  # noqa: SLF001
    problems = trial.differences()
    assert any(p.startswith("redis counts: 1 of") and short in p for p in problems), problems
    assert any(p.startswith("running counts: 1 keys") for p in problems), problems
    trial.close(shared=True)
    assert client.keys("check*") == []


@pytest.mark.timeout(30)
def test_source_redis_without_a_redis_server_names_the_package(monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("redis")
    monkeypatch.setenv("PATH", "")
    assert main(["chaos", "--source", "redis", "--trials", "1"]) == 1
    error = capsys.readouterr().err
    assert "no redis-server on PATH" in error and "Debian's redis-server package" in error and "--redis-url" in error
    with pytest.raises(SquallError, match="redis-server package"):
        run_trial(1, source="redis")
