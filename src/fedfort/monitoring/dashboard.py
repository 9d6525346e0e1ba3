"""The live dashboard of a run directory, served over HTTP from a background thread.

:class:`DashboardServer` serves one page (``static/dashboard.html`` with its script and style
sheet, all package files: no CDN, no external font, nothing fetched from elsewhere) and the JSON
it polls. The page draws the run's accuracy, loss, privacy spending and reputation as inline SVG
charts, and tables of clients, rejections, model versions and lifecycle events; it re-renders
every ``refresh_s`` seconds and says whether the run is still running or finished.

Routes (``GET`` and ``HEAD``; any other method is answered ``405``, an unknown path ``404``):

- ``/`` the page, ``/dashboard.js`` its script, ``/dashboard.css`` its style sheet;
- ``/api/run`` :func:`~fedfort.monitoring.run_state.read_run` of the run directory as JSON (a
  failure is a ``500`` with ``{"error": message}``);
- ``/metrics`` the Prometheus exposition of ``metrics`` (``404`` when there is none);
- ``/healthz`` ``ok``; ``/favicon.ico`` an empty ``204``.

Everything is read from the run directory (SQLite readers do not block the run writing it), so
the same server works inside a running federation
(:func:`fedfort.access.setup.start_monitoring`), for a finished run, and from another process
(``fedfort dashboard RUN``, :func:`serve_dashboard`).
The audit log's verification (a signature check per entry) is cached and redone only when the
audit or checkpoint database files changed, at most once a second, and less often when a check
is slow, so that a long log of a live run costs at most a tenth of a core; the rest of the
state is cheap and re-read on every request.

Non-finite numbers (a diverged model's loss) are sent as the strings ``"NaN"``, ``"Infinity"``
and ``"-Infinity"``, because JSON has no literal for them.

The data shown may be chosen by an attacker (client ids, rejection details), so the page only
ever inserts text with ``textContent``; responses carry a strict ``Content-Security-Policy``
(``default-src 'self'``, no inline script or style), ``X-Content-Type-Options: nosniff`` and
``Cache-Control: no-store``. A server bound to a loopback address answers only requests whose
``Host`` names a loopback address or ``localhost``, so a web page cannot reach it through DNS
rebinding.

With access control (``guard``, from ``[access]``), every route but ``/healthz``,
``/favicon.ico`` and ``/login`` needs a credential allowed ``dashboard.view`` (``/metrics``:
``metrics.read``): an ``Authorization: Bearer`` header, or the HttpOnly, ``SameSite=Strict``
session cookie set by ``POST /login`` (a form at ``GET /login``; ``/logout`` clears it). A
browser without one is sent to ``/login``; other clients get ``401``, a role without the
permission ``403``. Every decision is audited (docs/access-control.md).
"""

from __future__ import annotations

import logging
import math
import sqlite3
import threading
import time
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from fedfort import jsonio
from fedfort.errors import ConfigError, FedfortError
from fedfort.monitoring.guarding import RequestGuard
from fedfort.monitoring.run_state import read_run
from fedfort.monitoring.serving import (
    BackgroundServer,
    QuietRequestHandler,
    ThreadedHTTPServer,
    check_exposure,
    host_allowed,
    request_decision,
)
from fedfort.monitoring.signin import (
    LOGIN_PAGE,
    PUBLIC_ROUTES,
    SESSION_S,
    login,
    refusal,
    session_cookie,
)

if TYPE_CHECKING:
    import ssl

    from prometheus_client import CollectorRegistry

__all__ = ["DashboardServer", "RunStateReader", "json_ready", "serve_dashboard"]

logger = logging.getLogger(__name__)

#: the package folder holding the page, its script and its style sheet
STATIC_DIR: Final = "static"
#: placeholder in ``dashboard.html`` replaced by the polling interval in milliseconds
_REFRESH_PLACEHOLDER: Final = "{{REFRESH_MS}}"

#: files whose size and mtime decide whether the audit log is verified again
_WATCHED_FILES: Final = (
    "audit.sqlite",
    "audit.sqlite-wal",
    "checkpoints.sqlite",  # holds the witnessed audit head the verification compares with
    "checkpoints.sqlite-wal",
)
#: a file modified this recently may change again without its mtime changing (coarse clocks)
_RACY_S: Final = 2.0
#: the most of its time a live dashboard spends verifying a long audit log
_MAX_VERIFY_SHARE: Final = 0.1

_CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
_SECURITY_HEADERS: Final = (
    ("Cache-Control", "no-store"),
    ("Content-Security-Policy", _CSP),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
)
_TEXT: Final = "text/plain; charset=utf-8"
_JSON: Final = "application/json"


_LOGIN_CSP: Final = _CSP.replace("form-action 'none'", "form-action 'self'")


def json_ready(value: Any) -> Any:
    """``value`` with every non-finite float replaced by ``"NaN"``, ``"Infinity"``..."""
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    return value


def _asset(name: str) -> bytes:
    """A file of the page, from the installed package."""
    try:
        return (files("fedfort.monitoring") / STATIC_DIR / name).read_bytes()
    except OSError as exc:
        raise FedfortError(
            f"the dashboard's {name} is missing from the installed fedfort package ({exc}); "
            "reinstall fedfort"
        ) from exc


class RunStateReader:
    """:func:`read_run` of one run directory, with the audit verification cached.

    The audit part (verification, lifecycle events, and whether the log says the run ended) is
    taken from a full ``read_run(verify=True)``, done again only when one of the run's
    database files changed size or mtime, and then at most once per ``verify_interval_s`` or
    per the last verification's duration divided by ``verify_share``, whichever is longer (so
    a long log of a live run costs at most that share of a core; ``None``: no such limit).
    Every other call reads the rest with ``read_run(verify=False)`` and adds the cached part.
    Thread-safe.
    """

    def __init__(
        self,
        run_dir: str | Path,
        *,
        verify_interval_s: float = 1.0,
        verify_share: float | None = _MAX_VERIFY_SHARE,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.verify_interval_s = verify_interval_s
        self.verify_share = verify_share
        self._lock = threading.Lock()
        self._cached: dict[str, Any] | None = None
        self._signature: tuple[tuple[int, int] | None, ...] = ()
        self._verified_at = 0.0
        self._gap = verify_interval_s
        self._racy = True
        #: how many times the audit log was verified (for tests and diagnostics)
        self.verifications = 0

    def _stat(self) -> tuple[tuple[int, int] | None, ...]:
        out: list[tuple[int, int] | None] = []
        for name in _WATCHED_FILES:
            try:
                st = (self.run_dir / name).stat()
            except OSError:
                out.append(None)
            else:
                # an empty write-ahead log holds nothing (readers create one when it is missing)
                out.append(None if st.st_size == 0 else (st.st_size, st.st_mtime_ns))
        return tuple(out)

    def read(self) -> dict[str, Any]:
        """The state of the run, as :func:`read_run` gives it (what ``/api/run`` serves)."""
        with self._lock:
            signature = self._stat()
            now = time.monotonic()
            stale = self._cached is None or (
                now - self._verified_at >= self._gap
                and (signature != self._signature or self._racy)
            )
            if stale:
                state = read_run(self.run_dir, verify=True)
                elapsed = time.monotonic() - now
                share = self.verify_share
                self._gap = max(self.verify_interval_s, 0.0 if share is None else elapsed / share)
                self.verifications += 1
                self._cached = {
                    "audit": state["audit"],
                    "events": state["events"],
                    "finished": state["run"]["status"] == "finished",
                }
                self._signature, self._verified_at = signature, now
                wall = time.time_ns()
                self._racy = any(s is not None and wall - s[1] < _RACY_S * 1e9 for s in signature)
                return state
            cached = self._cached
        assert cached is not None
        state = read_run(self.run_dir, verify=False)
        state["audit"] = cached["audit"]
        state["events"] = cached["events"]
        if cached["finished"]:
            state["run"]["status"] = "finished"
        return state


class _HTTPServer(ThreadedHTTPServer):
    def __init__(self, host: str, port: int, dashboard: DashboardServer) -> None:
        self.dashboard = dashboard
        super().__init__(host, port, _Handler)

    def tls_context(self) -> ssl.SSLContext | None:
        return self.dashboard.tls


class _Handler(QuietRequestHandler):
    """Routes of the dashboard; every response is built whole before any byte is sent."""

    server: _HTTPServer
    server_version = "fedfort-dashboard"

    def do_GET(self) -> None:
        self._respond(head=False)

    def do_HEAD(self) -> None:
        self._respond(head=True)

    def do_POST(self) -> None:
        self._login()

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        if self.command in ("GET", "HEAD"):
            return True
        guarded = self.server.dashboard.guard is not None
        if guarded and self.command == "POST" and urlsplit(self.path).path == "/login":
            return True
        # every other method (POST, PUT, DELETE, made-up ones...) is not allowed
        self._send(405, b"method not allowed\n", _TEXT, head=False, extra=(("Allow", "GET, HEAD"),))
        return False

    def _host_allowed(self) -> bool:
        return host_allowed(self.server.dashboard.host, self.headers.get("Host"))

    def _login(self) -> None:
        """``POST /login``: a valid viewer token becomes the HttpOnly session cookie."""
        dashboard = self.server.dashboard
        assert dashboard.guard is not None
        try:
            length = min(int(self.headers.get("Content-Length") or 0), 4096)
        except ValueError:
            length = 0
        decision, token = login(
            dashboard.guard, self.rfile.read(length), str(self.client_address[0])
        )
        if not decision.allowed:
            body = f"sign-in refused: {decision.reason}\n".encode()
            self._send(decision.status, body, _TEXT, head=False)
            return
        cookie = session_cookie(token, max_age=SESSION_S, secure=dashboard.tls is not None)
        self._send(303, b"", _TEXT, head=False, extra=(("Location", "/"), cookie))

    def _guarded(self, path: str, head: bool) -> bool:
        """Whether the request may go on (a refusal has been answered when not)."""
        dashboard = self.server.dashboard
        if dashboard.guard is None or path in PUBLIC_ROUTES:
            return True
        action = "metrics.read" if path == "/metrics" else "dashboard.view"
        decision = request_decision(
            dashboard.guard, action, self.headers, str(self.client_address[0])
        )
        if decision.allowed:
            return True
        status, body, extra = refusal(decision, path, self.command)
        self._send(status, body, _TEXT, head=head, extra=extra)
        return False

    def _respond(self, *, head: bool) -> None:
        if not self._host_allowed():
            self._send(403, b"forbidden: unexpected Host header\n", _TEXT, head=head)
            return
        path = urlsplit(self.path).path
        dashboard = self.server.dashboard
        if dashboard.guard is not None and path in ("/login", "/logout"):
            if path == "/login":
                self._send(200, LOGIN_PAGE, "text/html; charset=utf-8", head=head, csp=_LOGIN_CSP)
            else:
                cookie = session_cookie("", max_age=0, secure=dashboard.tls is not None)
                self._send(303, b"", _TEXT, head=head, extra=(("Location", "/login"), cookie))
            return
        if not self._guarded(path, head):
            return
        try:
            status, body, content_type = self.server.dashboard.route(path)
        except (FedfortError, sqlite3.Error, OSError) as exc:
            logger.debug("dashboard %s failed: %s", path, exc)
            status, body, content_type = 500, _error_body(exc), _JSON
        except Exception as exc:
            logger.exception("dashboard %s failed", path)
            status, body, content_type = 500, _error_body(exc), _JSON
        self._send(status, body, content_type, head=head)

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str,
        *,
        head: bool,
        extra: tuple[tuple[str, str], ...] = (),
        csp: str = _CSP,
    ) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (*_SECURITY_HEADERS, *extra):
                if name == "Content-Security-Policy":
                    value = csp
                self.send_header(name, value)
            self.end_headers()
            if not head:
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            logger.debug("dashboard client went away before the response was sent")


def _error_body(exc: BaseException) -> bytes:
    message = str(exc) or type(exc).__name__
    return jsonio.dumps({"error": message}).encode()


class DashboardServer(BackgroundServer):
    """Serves the live dashboard of one run directory over HTTP (a background thread).

        ``address`` is ``host:port``; port 0 picks a free port (read :attr:`port` or :attr:`url`
        after :meth:`start`). A malformed address raises :class:`~fedfort.errors.ConfigError` here,
        one that cannot be bound (in use, unknown host) raises it from :meth:`start`. ``metrics``,
        the run's Prometheus registry, is also served at ``/metrics``. The page polls every
        ``refresh_s`` seconds. ``guard`` (an :class:`~fedfort.access.guard.AccessGuard` or any
    :class:`~fedfort.monitoring.guarding.RequestGuard`) puts every
        route behind access control; ``tls`` serves HTTPS (required with a guard off loopback).
        Usable as a context manager.
    """

    what = "the dashboard"

    def __init__(
        self,
        run_dir: str | Path,
        address: str = "127.0.0.1:0",
        *,
        metrics: CollectorRegistry | None = None,
        refresh_s: float = 1.0,
        guard: RequestGuard | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        if not (isinstance(refresh_s, int | float) and math.isfinite(refresh_s) and refresh_s > 0):
            raise ConfigError(
                f"the dashboard's refresh_s must be a positive number, got {refresh_s}"
            )
        super().__init__(address, 8321, guard=guard)
        check_exposure(self.what, self.host, guard, tls)
        self.tls = tls
        self.run_dir = Path(run_dir)
        self.metrics = metrics
        self.refresh_s = float(refresh_s)
        self.state = RunStateReader(self.run_dir)
        self._assets: dict[str, tuple[bytes, str]] = {}

    def _load_assets(self) -> None:
        refresh_ms = str(max(1, round(self.refresh_s * 1000)))
        html = _asset("dashboard.html").decode("utf-8").replace(_REFRESH_PLACEHOLDER, refresh_ms)
        self._assets = {
            "/": (html.encode("utf-8"), "text/html; charset=utf-8"),
            "/dashboard.js": (_asset("dashboard.js"), "text/javascript; charset=utf-8"),
            "/dashboard.css": (_asset("dashboard.css"), "text/css; charset=utf-8"),
        }

    def route(self, path: str) -> tuple[int, bytes, str]:
        """``(status, body, content type)`` of a ``GET`` of ``path``; raises on failure."""
        asset = self._assets.get(path)
        if asset is not None:
            return 200, asset[0], asset[1]
        if path == "/api/run":
            state = json_ready(self.state.read())
            return 200, jsonio.dumps(state, non_finite="null").encode("utf-8"), _JSON
        if path == "/metrics":
            if self.metrics is None:
                return 404, b"no metrics here: this dashboard serves a run directory only\n", _TEXT
            return 200, generate_latest(self.metrics), CONTENT_TYPE_LATEST
        if path == "/healthz":
            return 200, b"ok\n", _TEXT
        if path == "/favicon.ico":  # browsers ask for it; answer without a console error
            return 204, b"", _TEXT
        return 404, b"not found\n", _TEXT

    def _bind(self, host: str, port: int) -> tuple[Any, threading.Thread]:
        self._load_assets()
        server = _HTTPServer(host, port, self)
        return server, server.serve_in_background("dashboard")


def run_directory(run_dir: str | Path) -> Path:
    """``run_dir`` as a path, refused unless it is a directory (the ``--out`` of a run)."""
    run = Path(run_dir)
    if not run.is_dir():
        raise ConfigError(f"{run} is not a directory: give the directory of a run (its --out)")
    return run


def serve_dashboard(
    run_dir: str | Path,
    address: str = "127.0.0.1:8321",
    *,
    guard: RequestGuard | None = None,
    tls: ssl.SSLContext | None = None,
) -> None:
    """Serve the dashboard of ``run_dir`` until interrupted.

    Prints the URL; returns on ``KeyboardInterrupt`` (Ctrl-C). The run may still be writing,
    or not have committed anything yet: the page says so and keeps polling. ``fedfort
    dashboard RUN`` calls it through :func:`fedfort.access.setup.serve_dashboard`, which builds
    ``guard`` and ``tls`` from ``[access]``.
    """
    run = run_directory(run_dir)
    server = DashboardServer(run, address, guard=guard, tls=tls)
    try:
        server.start()
        print(f"fedfort: dashboard of {run} at {server.url} (Ctrl-C to stop)", flush=True)
        while True:
            time.sleep(0.25)
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
