"""The scheduler's live dashboard: a read-only HTTP server on a thread of its own.

It serves the page (squall/dashboard_assets: index.html, its script and style, a vendored uPlot)
and `/api/snapshot`, the JSON the scheduler's loop last published. The HTTP thread never touches
the scheduler's core: the loop hands it finished bytes (`publish`), and a request reads whatever
bytes reference is current, so a slow or hostile browser cannot delay a micro-batch.

GET only (anything else: 405); unknown paths 404. The assets are a fixed set of names read once at
start, so no request path ever reaches the file system. It is given no settings beyond where to
listen, so no response can reveal key material.
"""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

# The files the page is made of (in squall/dashboard_assets), and the Content-Type each is served with.
ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "uPlot.iife.min.js": "text/javascript; charset=utf-8",
    "uPlot.min.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
# On every response. The page loads scripts, styles and data from this server only; nothing in
# it may be framed by another site or sniffed into another type.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
# What /api/snapshot serves before the loop first publishes: an empty JSON object.
NOTHING_YET = b"{}"


def load_assets() -> dict[str, bytes]:
    """The dashboard's files, from the installed squall package."""
    folder = resources.files("squall") / "dashboard_assets"
    return {name: (folder / name).read_bytes() for name in ASSETS}


class Dashboard:
    """The HTTP server, listening from construction on; `publish` replaces the snapshot served.

    Raises OSError when it cannot bind `bind`:`port` (port 0: a free one)."""

    def __init__(self, bind: str, port: int, log: Any) -> None:
        self.log = log
        self.assets = load_assets()
        self.snapshot = NOTHING_YET  # replaced whole, never changed in place: readers need no lock
        server_class = _IPv6Server if ":" in bind else ThreadingHTTPServer
        self.httpd = server_class((bind, port), _Handler)
        self.httpd.dashboard = self  # type: ignore[attr-defined]  # how a handler finds us
        self.url = f"http://{_url_host(bind)}:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="dashboard", daemon=True)
        self.thread.start()

    def publish(self, snapshot: bytes) -> None:
        """Serve these JSON bytes at /api/snapshot from now on (called from the scheduler's loop)."""
        self.snapshot = snapshot

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _IPv6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def _url_host(bind: str) -> str:
    """The host to put in the dashboard's URL: a wildcard bind is reached by this host's name."""
    if bind in ("", "0.0.0.0", "::"):
        return socket.gethostname()
    return f"[{bind}]" if ":" in bind else bind


class _Handler(BaseHTTPRequestHandler):
    # No version of Python or of the server in the Server header.
    server_version = "squall"
    sys_version = ""
    # A connection that sends nothing for this long is closed: an idle or stalled client does
    # not hold a thread for ever.
    timeout = 30

    def do_GET(self) -> None:
        dashboard: Dashboard = self.server.dashboard  # type: ignore[attr-defined]
        path = urlsplit(self.path).path
        if path == "/":
            self._reply(200, ASSETS["index.html"], dashboard.assets["index.html"])
        elif path == "/api/snapshot":
            self._reply(200, "application/json", dashboard.snapshot, {"Cache-Control": "no-store"})
        elif path.startswith("/static/") and path[len("/static/"):] in ASSETS:
            name = path[len("/static/"):]
            self._reply(200, ASSETS[name], dashboard.assets[name])
        else:
            self._reply(404, "text/plain; charset=utf-8", b"not found\n")

    def __getattr__(self, name: str) -> Any:
        # BaseHTTPRequestHandler dispatches method M to do_M and answers 501 when there is none:
        # every method but GET (found before this is asked) is answered 405 instead.
        if name.startswith("do_"):
            return self._not_allowed
        raise AttributeError(name)

    def _not_allowed(self) -> None:
        self._reply(405, "text/plain; charset=utf-8", b"read-only: GET only\n", {"Allow": "GET"})

    def _reply(self, status: int, content_type: str, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in {**SECURITY_HEADERS, **(headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        # One line a second from every open page would drown the scheduler's log: debug only.
        self.server.dashboard.log.debug("dashboard_request", request=format % args)  # type: ignore[attr-defined]


def start_dashboard(bind: str, port: int, log: Any) -> Dashboard | None:
    """The dashboard on bind:port (settings dashboard_bind, dashboard_port), or None: when port is
    -1 (none wanted), or when it cannot listen there, which is logged as an error and the
    scheduler goes on without it."""
    if port == -1:
        return None
    try:
        dashboard = Dashboard(bind, port, log)
    except OSError as exc:
        log.error("dashboard_unavailable", bind=bind, port=port, reason=str(exc),
                  settings="dashboard_bind, dashboard_port (SQUALL_DASHBOARD_BIND, SQUALL_DASHBOARD_PORT; -1: no dashboard)")
        return None
    log.info("dashboard_listening", url=dashboard.url)
    return dashboard
