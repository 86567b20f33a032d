"""A service's Prometheus endpoint: prometheus_client's HTTP server on
settings.metrics_bind:settings.metrics_port (0: a free port; -1: none), serving this process's own
registry at /metrics.

What it serves is read when scraped: each service registers a collector that reads its core's
counters then (services/*/metrics.py), so the hot path pays for plain integer increments only.
The handler answers GET (and OPTIONS) only, and nothing it serves holds settings or key material.
A port that cannot be bound is an error in the log, not a reason to stop: the service runs on
without metrics.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector, start_http_server
from prometheus_client.core import Metric
from prometheus_client.registry import Collector
from squall.common import metric_families, security, transport
from squall.common.settings import Settings

# Bind addresses that listen on every interface: the URL names this host instead.
_ANY_ADDRESS = {"0.0.0.0", "::", ""}


@dataclass
class MetricsEndpoint:
    registry: CollectorRegistry  # the service registers its collector here
    url: str  # http://host:port/metrics
    _server: Any
    _thread: threading.Thread

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class AuthRefusedCollector(Collector):
    """squall_auth_refused_total: connections the CurveZMQ handler refused (common/security.py)."""

    def __init__(self, service: str) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        yield metric_families.counter("squall_auth_refused", "Connections refused by CurveZMQ authentication (a key not the cluster's).",
                                      self.service, security.AUTH_REFUSALS.count)


def start(settings: Settings, log: Any, service: str, advertise_host: str = "") -> MetricsEndpoint | None:
    """Serve this process's metrics; None when settings.metrics_port is -1 or the port cannot be
    bound (logged as metrics_unavailable). Logs metrics_listening with the URL. `advertise_host`
    names this host in the URL when the endpoint binds every interface (default: the hostname)."""
    if settings.metrics_port < 0:
        return None
    registry = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    registry.register(AuthRefusedCollector(service))
    try:
        server, thread = start_http_server(settings.metrics_port, settings.metrics_bind, registry=registry)
    except OSError as exc:
        log.error("metrics_unavailable", reason=f"cannot listen on {settings.metrics_bind}:{settings.metrics_port}: {exc}",
                  fix="set SQUALL_METRICS_PORT to a free port (0: any; -1: no metrics) or SQUALL_METRICS_BIND to an address of this host")
        return None
    port = server.server_address[1]
    host = settings.metrics_bind if settings.metrics_bind not in _ANY_ADDRESS else (advertise_host or socket.gethostname())
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    url = f"http://{host}:{port}/metrics"
    log.info("metrics_listening", url=url)
    return MetricsEndpoint(registry, url, server, thread)


def write_url_file(ready_file: str | None, endpoint: MetricsEndpoint | None) -> None:
    """Beside a ready file, `<ready_file>.metrics` holds the metrics URL (LocalCluster reads it).
    Written before the ready file itself, so whoever sees that one finds this one."""
    if ready_file and endpoint is not None:
        transport.write_ready_file(ready_file + ".metrics", endpoint.url)
