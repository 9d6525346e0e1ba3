"""``/metrics``: the HTTP server of :class:`~fedfort.monitoring.MetricsServer`.

With a guard (``[access]``) a scrape needs a bearer token allowed ``metrics.read`` (401 without,
403 for a role without it; every decision audited by the guard), over TLS when given. Without
one the server is bound to loopback and answers only requests whose ``Host`` names a loopback
address or ``localhost`` (the dashboard's check, :func:`~fedfort.monitoring.serving.host_allowed`),
so a web page cannot read it through DNS rebinding. Only ``GET /metrics`` exists.
"""

from __future__ import annotations

import logging
import ssl
from typing import Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from fedfort.monitoring.guarding import RequestGuard
from fedfort.monitoring.serving import (
    QuietRequestHandler,
    ThreadedHTTPServer,
    host_allowed,
    request_decision,
)

__all__ = ["GuardedMetricsHTTP", "MetricsSource"]

logger = logging.getLogger(__name__)


class MetricsSource(Protocol):
    """What the server needs of its owner (a :class:`~fedfort.monitoring.MetricsServer`)."""

    registry: CollectorRegistry
    guard: RequestGuard | None
    tls: ssl.SSLContext | None


class GuardedMetricsHTTP(ThreadedHTTPServer):
    """``/metrics`` behind access control (and TLS when given), or the loopback Host check."""

    def __init__(self, host: str, port: int, owner: MetricsSource) -> None:
        self.owner = owner
        self.bound_host = host
        super().__init__(host, port, _GuardedHandler)

    def tls_context(self) -> ssl.SSLContext | None:
        return self.owner.tls


class _GuardedHandler(QuietRequestHandler):
    server: GuardedMetricsHTTP
    server_version = "fedfort-metrics"

    def do_GET(self) -> None:
        owner = self.server.owner
        if not host_allowed(self.server.bound_host, self.headers.get("Host")):
            self._send(403, b"forbidden: unexpected Host header\n", "text/plain; charset=utf-8")
            return
        if self.path.split("?", 1)[0] != "/metrics":
            self._send(404, b"not found\n", "text/plain; charset=utf-8")
            return
        decision = (
            None
            if owner.guard is None
            else request_decision(
                owner.guard, "metrics.read", self.headers, str(self.client_address[0])
            )
        )
        if decision is not None and not decision.allowed:
            extra = (
                (("WWW-Authenticate", 'Bearer realm="fedfort"'),) if decision.status == 401 else ()
            )
            body = f"{decision.reason}\n".encode()
            self._send(decision.status, body, "text/plain; charset=utf-8", extra)
            return
        self._send(200, generate_latest(owner.registry), CONTENT_TYPE_LATEST)

    def _send(
        self, status: int, body: bytes, content_type: str, extra: tuple[tuple[str, str], ...] = ()
    ) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            for name, value in extra:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            logger.debug("metrics client went away before the response was sent")
