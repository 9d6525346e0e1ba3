"""``/metrics`` behind access control and TLS: the HTTP server :class:`MetricsServer` uses when
it has a guard or a TLS context (without either it keeps prometheus-client's own server).

A scrape needs a bearer token allowed ``metrics.read`` (401 without, 403 for a role without
it; every decision audited by the guard); only ``GET /metrics`` exists.
"""

from __future__ import annotations

import http.server
import logging
import socket
import socketserver
import ssl
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from fedfort.monitoring.serving import request_decision, tls_handshake, tls_request

if TYPE_CHECKING:
    from fedfort.access.guard import AccessGuard

__all__ = ["GuardedMetricsHTTP", "MetricsSource"]

logger = logging.getLogger(__name__)


class MetricsSource(Protocol):
    """What the server needs of its owner (a :class:`~fedfort.monitoring.MetricsServer`)."""

    registry: CollectorRegistry
    guard: AccessGuard | None
    tls: ssl.SSLContext | None


class GuardedMetricsHTTP(http.server.ThreadingHTTPServer):
    """``/metrics`` behind access control (and TLS when given)."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, host: str, port: int, owner: MetricsSource) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.owner = owner
        super().__init__((host, port), _GuardedHandler)

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = self.socket.accept()
        return tls_request(self.owner.tls, sock), addr


class _GuardedHandler(http.server.BaseHTTPRequestHandler):
    server: GuardedMetricsHTTP
    server_version = "fedfort-metrics"
    sys_version = ""
    protocol_version = "HTTP/1.0"
    timeout = 30.0

    def setup(self) -> None:
        super().setup()
        self.tls_failed = False
        try:
            tls_handshake(self.request)
        except OSError as exc:  # not TLS, a foreign certificate, a dropped connection
            logger.debug("TLS handshake failed: %s", exc)
            self.tls_failed = True

    def handle(self) -> None:
        if self.tls_failed:
            return
        try:
            super().handle()
        except OSError as exc:
            logger.debug("metrics connection failed: %s", exc)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        owner = self.server.owner
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
