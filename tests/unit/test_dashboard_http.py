"""The scheduler's dashboard over real HTTP: what each route serves, what it refuses, and that no
response carries a setting or key. The server listens on a free loopback port and serves a fixed
published snapshot."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator

import msgspec
import pytest
import structlog
from squall.common import security
from squall.common.settings import Settings
from squall.services.scheduler.dashboard import ASSETS, Dashboard, start_dashboard

SNAPSHOT = {
    "time": 1_800_000_000.0,
    "scheduler": {"address": "tcp://127.0.0.1:7077", "uptime": 12.5, "dashboard": "", "metrics": ""},
    "executors": [{"id": "executor-0", "address": "tcp://127.0.0.1:5000", "metrics": "", "slots": 2,
                   "latency_tasks": 1, "batch_tasks": 0, "suspended_tasks": 0, "memory_bytes": 1 << 26,
                   "persisted_bytes": 0, "stalled": False, "slowness": 1.0, "last_beat_age": 0.02}],
    "streams": [], "runs": [], "persisted": [], "events": [],
}
LOG = structlog.get_logger()


@pytest.fixture(scope="module")
def server() -> Iterator[Dashboard]:
    board = Dashboard("127.0.0.1", 0, LOG)
    yield board
    board.close()  # waits for the serving thread's next poll (half a second): once per module


@pytest.fixture
def dashboard(server: Dashboard) -> Dashboard:
    server.publish(msgspec.json.encode(SNAPSHOT))
    return server


def request(board: Dashboard, method: str, path: str) -> tuple[http.client.HTTPResponse, bytes]:
    port = board.httpd.server_address[1]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response, response.read()
    finally:
        conn.close()


def test_the_page_and_its_assets_are_served(dashboard: Dashboard) -> None:
    response, body = request(dashboard, "GET", "/")
    assert response.status == 200
    assert response.getheader("Content-Type") == "text/html; charset=utf-8"
    assert b'src="static/dashboard.js"' in body
    for name, content_type in ASSETS.items():
        response, body = request(dashboard, "GET", f"/static/{name}")
        assert response.status == 200, name
        assert response.getheader("Content-Type") == content_type
        assert len(body) == int(response.getheader("Content-Length", "-1")) > 0


def test_the_snapshot_is_the_published_json_uncached(dashboard: Dashboard) -> None:
    response, body = request(dashboard, "GET", "/api/snapshot?ignored=1")
    assert response.status == 200
    assert response.getheader("Content-Type") == "application/json"
    assert response.getheader("Cache-Control") == "no-store"
    assert json.loads(body) == SNAPSHOT
    dashboard.publish(b'{"time": 2.0}')
    assert json.loads(request(dashboard, "GET", "/api/snapshot")[1]) == {"time": 2.0}


def test_every_response_carries_the_security_headers_and_no_cors(dashboard: Dashboard) -> None:
    for method, path in [("GET", "/"), ("GET", "/api/snapshot"), ("GET", "/static/uPlot.min.css"), ("GET", "/nope"),
                         ("POST", "/api/snapshot")]:
        response, _ = request(dashboard, method, path)
        assert response.getheader("Content-Security-Policy") == "default-src 'self'", path
        assert response.getheader("X-Content-Type-Options") == "nosniff", path
        assert response.getheader("Access-Control-Allow-Origin") is None, path
        assert "Python" not in (response.getheader("Server") or ""), path


@pytest.mark.parametrize("path", [
    "/static/", "/static/missing.js", "/static/../dashboard.py", "/static/..%2F..%2Fcommon%2Fsettings.py",
    "/static/%2e%2e/dashboard.py", "/../../etc/passwd", "/static//etc/passwd", "/index.html", "/api", "/api/snapshot/",
    "/static/VERSION", "/static/uPlot.LICENSE/",
])
def test_unknown_and_traversal_paths_are_404(dashboard: Dashboard, path: str) -> None:
    response, body = request(dashboard, "GET", path)
    assert response.status == 404
    assert body == b"not found\n"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"])
def test_anything_but_get_is_405(dashboard: Dashboard, method: str) -> None:
    response, _ = request(dashboard, method, "/api/snapshot")
    assert response.status == 405
    assert response.getheader("Allow") == "GET"


def test_no_response_reveals_settings_or_keys() -> None:
    public, secret = security.new_keypair()
    settings = Settings(curve_public_key=public, curve_secret_key=secret, dashboard_port=0)
    board = start_dashboard(settings.dashboard_bind, settings.dashboard_port, LOG)
    assert board is not None
    try:
        board.publish(msgspec.json.encode(SNAPSHOT))
        paths = ["/", "/api/snapshot", "/nope", *(f"/static/{name}" for name in ASSETS)]
        bodies = b"".join(request(board, "GET", path)[1] for path in paths)
        for secret_text in (public, secret, "curve", "SQUALL_"):
            assert secret_text.encode() not in bodies
    finally:
        board.close()


def test_port_minus_one_means_no_dashboard_and_a_taken_port_is_logged_not_raised() -> None:
    assert start_dashboard("127.0.0.1", -1, LOG) is None
    first = Dashboard("127.0.0.1", 0, LOG)
    try:
        with structlog.testing.capture_logs() as logs:
            assert start_dashboard("127.0.0.1", first.httpd.server_address[1], LOG) is None
        (entry,) = logs
        assert entry["event"] == "dashboard_unavailable" and entry["log_level"] == "error"
        assert "dashboard_port" in entry["settings"]
    finally:
        first.close()


def test_the_url_names_where_it_listens(dashboard: Dashboard) -> None:
    assert dashboard.url == f"http://127.0.0.1:{dashboard.httpd.server_address[1]}/"
