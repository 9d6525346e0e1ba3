"""The operator API: HTTPS endpoints for run control, rollback, keys, revocation and reads.

:class:`OperatorServer` serves the actions of :class:`~fedfort.access.operations.Operations`
over HTTPS on a background thread (like the dashboard), on its own address, apart from the
federation's gRPC port: browsers, ``curl`` and Prometheus speak HTTP with bearer tokens, the
clients' port stays for clients only, and the operator address can be firewalled to an admin
network. TLS uses the federation's PKI (the server's certificate; clients verify it against
``ca.pem``); a connection may present a certificate of the federation (checked against the
same CA during the handshake), which identifies it but never grants an operator role.

Every request names one action of the matrix; :class:`~fedfort.access.guard.AccessGuard`
decides and audits before anything runs. Routes (JSON unless said otherwise)::

    GET  /v1/status            run.status        POST /v1/run/start     run.start
    GET  /v1/dashboard         dashboard.view    POST /v1/run/stop      run.stop
    GET  /metrics              metrics.read      POST /v1/run/pause     run.pause
    GET  /v1/audit/export      audit.export      POST /v1/run/resume    run.resume
    GET  /v1/audit/verify      audit.verify      POST /v1/model/rollback  {"version", "reason"}
    GET  /v1/report (HTML)     report.read       POST /v1/keys/rotate   keys.rotate
                                                 POST /v1/clients/revoke {"client"|"serial"}

Answers: 401 (no or bad credential, with ``WWW-Authenticate: Bearer``), 403 (not permitted),
404/405 (no such route or method), 400 (malformed body), 409 (the action cannot be taken now,
e.g. resume a run that is not paused; nothing changed), 202 (queued: runs before the next
round), 200 with the result.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from fedfort import jsonio
from fedfort.access.operations import Operations
from fedfort.errors import ConfigError, FedfortError
from fedfort.monitoring.guarding import RequestGuard
from fedfort.monitoring.serving import (
    BackgroundServer,
    QuietRequestHandler,
    ThreadedHTTPServer,
    is_loopback,
)
from fedfort.server.control import CommandPending

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["ROUTES", "OperatorServer", "server_tls_context"]

logger = logging.getLogger(__name__)

_JSON: Final = "application/json"
_MAX_BODY: Final = 64 * 1024

Handler = Callable[[Operations, dict[str, Any]], tuple[int, bytes, str]]


def _json(value: Any, status: int = 200) -> tuple[int, bytes, str]:
    return status, jsonio.dumps(value, sort_keys=True, non_finite="null").encode("utf-8"), _JSON


#: (method, path) -> (action, handler)
ROUTES: Final[dict[tuple[str, str], tuple[str, Handler]]] = {
    ("GET", "/v1/status"): ("run.status", lambda o, b: _json(o.status())),
    ("POST", "/v1/run/start"): ("run.start", lambda o, b: _json(o.start())),
    ("POST", "/v1/run/stop"): ("run.stop", lambda o, b: _json(o.stop())),
    ("POST", "/v1/run/pause"): ("run.pause", lambda o, b: _json(o.pause())),
    ("POST", "/v1/run/resume"): ("run.resume", lambda o, b: _json(o.resume())),
    ("POST", "/v1/model/rollback"): (
        "model.rollback",
        lambda o, b: _json(o.rollback(b.get("version"), b.get("reason"))),
    ),
    ("POST", "/v1/keys/rotate"): ("keys.rotate", lambda o, b: _json(o.rotate_keys())),
    ("POST", "/v1/clients/revoke"): (
        "clients.revoke",
        lambda o, b: _json(o.revoke_client(b.get("client"), b.get("serial"))),
    ),
    ("GET", "/v1/dashboard"): ("dashboard.view", lambda o, b: _json(o.dashboard())),
    ("GET", "/v1/audit/export"): (
        "audit.export",
        lambda o, b: (200, o.audit_export(), "application/x-ndjson"),
    ),
    ("GET", "/v1/audit/verify"): ("audit.verify", lambda o, b: _json(o.audit_verify())),
    ("GET", "/v1/report"): (
        "report.read",
        lambda o, b: (200, o.report(), "text/html; charset=utf-8"),
    ),
}
_PATHS: Final = {path for _, path in ROUTES} | {"/metrics"}


def server_tls_context(cert: str | Path, key: str | Path, ca: str | Path | None) -> ssl.SSLContext:
    """TLS 1.2+ server context with ``cert``/``key``; with ``ca``, clients may present a
    certificate of that CA (optional; a certificate of another CA fails the handshake)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(cert), str(key))
        if ca is not None:
            context.load_verify_locations(cafile=str(ca))
            context.verify_mode = ssl.CERT_OPTIONAL
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the operator API's TLS credentials: {exc}") from exc
    return context


class _Server(ThreadedHTTPServer):
    def __init__(self, host: str, port: int, api: OperatorServer) -> None:
        self.api = api
        super().__init__(host, port, _Handler)

    def tls_context(self) -> ssl.SSLContext | None:
        return self.api.tls


class _Handler(QuietRequestHandler):
    server: _Server
    server_version = "fedfort-operator"

    def do_GET(self) -> None:
        self._respond("GET")

    def do_POST(self) -> None:
        self._respond("POST")

    def _peer_certificate(self) -> bytes | None:
        """The DER of the client certificate the TLS handshake accepted, if any."""
        if not isinstance(self.request, ssl.SSLSocket):
            return None
        return self.request.getpeercert(binary_form=True) or None

    def _respond(self, method: str) -> None:
        path = self.path.split("?", 1)[0]
        api = self.server.api
        if path not in _PATHS:
            self._send(404, b'{"error": "not found"}', _JSON)
            return
        if path == "/metrics":
            route: tuple[str, Handler] | None = (
                ("metrics.read", api.metrics_route) if method == "GET" else None
            )
        else:
            route = ROUTES.get((method, path))
        if route is None:
            self._send(405, b'{"error": "method not allowed"}', _JSON)
            return
        action, handler = route
        try:
            decision = api.guard.check(
                action,
                authorization=self.headers.get("Authorization"),
                peer_certificate=self._peer_certificate(),
                remote=str(self.client_address[0]),
            )
        except Exception:  # the decision could not be audited: fail closed
            logger.exception("operator API: cannot audit an access decision")
            self._send(503, b'{"error": "access decision could not be audited"}', _JSON)
            return
        if not decision.allowed:
            extra = (
                (("WWW-Authenticate", 'Bearer realm="fedfort"'),) if decision.status == 401 else ()
            )
            body = jsonio.dumps({"error": decision.reason, "action": action}).encode()
            self._send(decision.status, body, _JSON, extra)
            return
        try:
            status, payload, content_type = handler(api.operations, self._body(method))
        except CommandPending as exc:
            status, payload, content_type = _json({"queued": True, "detail": str(exc)}, 202)
        except _BadBody as exc:
            status, payload, content_type = _json({"error": str(exc)}, 400)
        except ConfigError as exc:
            status, payload, content_type = _json({"error": str(exc)}, 409)
        except FedfortError as exc:
            status, payload, content_type = _json({"error": str(exc)}, 500)
        except Exception as exc:
            logger.exception("operator API %s failed", action)
            status, payload, content_type = _json({"error": type(exc).__name__}, 500)
        self._send(status, payload, content_type)

    def _body(self, method: str) -> dict[str, Any]:
        if method != "POST":
            return {}
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise _BadBody("Content-Length is not a number") from None
        if not 0 <= length <= _MAX_BODY:
            raise _BadBody(f"the body must be at most {_MAX_BODY} bytes")
        raw = self.rfile.read(length) if length else b"{}"
        try:
            body = json.loads(raw or b"{}")
        except (ValueError, UnicodeDecodeError):
            raise _BadBody("the body is not JSON") from None
        if not isinstance(body, dict):
            raise _BadBody("the body must be a JSON object")
        return body

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str,
        extra: tuple[tuple[str, str], ...] = (),
    ) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            for name, value in extra:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            logger.debug("operator API client went away before the response was sent")


class _BadBody(FedfortError):
    """A request body the operator API cannot read (answered 400, nothing runs)."""


class OperatorServer(BackgroundServer):
    """The operator API of one run on a background thread; see the module docstring.

    ``tls`` (:func:`server_tls_context`) is required unless ``address`` is a loopback address;
    ``metrics`` is the run's Prometheus registry, served at ``/metrics`` to ``metrics.read``.
    """

    what = "the operator API"
    path = ""

    def __init__(
        self,
        operations: Operations,
        guard: RequestGuard,
        address: str = "127.0.0.1:0",
        *,
        tls: ssl.SSLContext | None = None,
        metrics: CollectorRegistry | None = None,
    ) -> None:
        super().__init__(address, 8443, guard=guard)
        self.tls = tls
        if tls is None and not is_loopback(self.host):
            raise ConfigError(
                f"the operator API on {address} must use TLS: give it the server's certificate "
                "(access.tls_cert and access.tls_key, or fedfort server --pki) or bind to "
                "127.0.0.1"
            )
        self.operations = operations
        self.guard: RequestGuard = guard
        self.metrics = metrics

    def metrics_route(self, operations: Operations, body: dict[str, Any]) -> tuple[int, bytes, str]:
        del operations, body
        if self.metrics is None:
            return _json({"error": "this operator API serves no metrics"}, 404)
        return 200, generate_latest(self.metrics), CONTENT_TYPE_LATEST

    def _bind(self, host: str, port: int) -> tuple[Any, threading.Thread]:
        server = _Server(host, port, self)
        return server, server.serve_in_background("operator")
