"""common/metrics_endpoint.py: a real prometheus_client HTTP server on loopback (port 0), and
what happens when the port cannot be had; common/security.py's count of refused connections."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from typing import Any

import pytest
from squall.common import metrics_endpoint, security
from squall.common.settings import Settings


class RecordedLog:
    """The log a service hands over, keeping (level, event, fields)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def info(self, event: str, **fields: Any) -> None:
        self.lines.append(("info", event, fields))

    def error(self, event: str, **fields: Any) -> None:
        self.lines.append(("error", event, fields))


def test_the_endpoint_serves_the_process_metrics_on_get_only_and_no_keys(tmp_path) -> None:  # type: ignore[no-untyped-def]
    public, secret = security.new_keypair()
    settings = Settings(curve_public_key=public, curve_secret_key=secret)
    log = RecordedLog()
    endpoint = metrics_endpoint.start(settings, log, "scheduler")
    assert endpoint is not None
    try:
        assert endpoint.url.startswith("http://127.0.0.1:") and endpoint.url.endswith("/metrics")
        assert ("info", "metrics_listening", {"url": endpoint.url}) in log.lines
        body = urllib.request.urlopen(endpoint.url, timeout=5).read().decode()
        assert 'squall_auth_refused_total{service="scheduler"}' in body
        assert "process_resident_memory_bytes" in body and "python_info" in body
        assert secret not in body and public not in body
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(urllib.request.Request(endpoint.url, data=b"x", method="POST"), timeout=5)
        assert refused.value.code == 405
        ready = tmp_path / "scheduler.ready"
        metrics_endpoint.write_url_file(str(ready), endpoint)
        assert (tmp_path / "scheduler.ready.metrics").read_text() == endpoint.url
    finally:
        endpoint.close()


def test_a_port_taken_is_logged_as_an_error_and_the_service_goes_on_without_metrics() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        log = RecordedLog()
        assert metrics_endpoint.start(Settings(metrics_port=port), log, "executor") is None
    [(level, event, fields)] = log.lines
    assert (level, event) == ("error", "metrics_unavailable")
    assert str(port) in fields["reason"] and "SQUALL_METRICS_PORT" in fields["fix"]


def test_port_minus_one_means_no_endpoint() -> None:
    log = RecordedLog()
    assert metrics_endpoint.start(Settings(metrics_port=-1), log, "executor") is None
    assert log.lines == []


def test_a_key_not_the_clusters_is_refused_and_counted() -> None:
    public, _ = security.new_keypair()
    other, _ = security.new_keypair()
    provider = security._ClusterKeyOnly(public)
    before = security.AUTH_REFUSALS.count
    assert provider.callback("*", public.encode("ascii"))
    assert not provider.callback("*", other.encode("ascii"))
    assert security.AUTH_REFUSALS.count == before + 1
