"""HTTP endpoints served on a background thread: the address rules and the lifecycle they share.

:class:`BackgroundServer` is the base of :class:`~fedfort.monitoring.MetricsServer` and
:class:`~fedfort.monitoring.DashboardServer`: parse ``host:port`` up front (a bad address is a
:class:`~fedfort.errors.ConfigError` at construction), bind on :meth:`~BackgroundServer.start`
(an address in use is a ``ConfigError`` there), serve on a daemon thread, and stop and free the
port on :meth:`~BackgroundServer.close`.

Access rule: without a guard (:class:`~fedfort.monitoring.guarding.RequestGuard`, built from
``[access]`` by :mod:`fedfort.access`; no ``[access]`` section, no guard) a
server may only bind a loopback address (local simulation; the dashboard then also refuses
foreign ``Host`` headers); binding any other address without access control is a
``ConfigError``. With a guard every request needs a credential whose role may take the route's
action (see docs/access-control.md); :func:`request_decision` reads it from the request.
"""

from __future__ import annotations

import http.server
import ipaddress
import logging
import socket
import socketserver
import ssl
import threading
from abc import ABC, abstractmethod
from http.cookies import CookieError, SimpleCookie
from typing import Any, Final, Protocol, Self

from fedfort.errors import ConfigError
from fedfort.monitoring.guarding import GuardDecision, RequestGuard

__all__ = [
    "SESSION_COOKIE",
    "BackgroundServer",
    "check_exposure",
    "host_allowed",
    "is_loopback",
    "parse_address",
    "request_decision",
    "tls_handshake",
    "tls_request",
]

#: the dashboard's HttpOnly cookie holding a viewer's token after ``/login``
SESSION_COOKIE: Final = "fedfort_session"


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address literal) is this machine's loopback."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_of(header: str) -> str:
    """The host name of a ``Host`` header value (no port, no IPv6 brackets)."""
    header = header.strip()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rpartition(":")[0] if header.count(":") == 1 else header


def host_allowed(bound_host: str, header: str | None) -> bool:
    """Whether a request with ``Host: header`` may be answered by a server bound to
    ``bound_host``: on a loopback address only requests naming a loopback address or
    ``localhost`` (or none), so that a web page cannot reach it through DNS rebinding (a name
    the attacker controls re-pointed at 127.0.0.1 keeps its own name in ``Host``)."""
    if not is_loopback(bound_host):
        return True
    return header is None or is_loopback(host_of(header))


def session_token(cookie_header: str | None) -> str | None:
    """The token of the :data:`SESSION_COOKIE` in a ``Cookie`` header, or ``None``."""
    if not cookie_header:
        return None
    try:
        morsel = SimpleCookie(cookie_header).get(SESSION_COOKIE)
    except CookieError:
        return None
    return None if morsel is None or not morsel.value else morsel.value


class _Headers(Protocol):
    def get(self, name: str, /) -> str | None: ...


def request_decision(
    guard: RequestGuard, action: str, headers: _Headers, remote: str
) -> GuardDecision:
    """The guard's (audited) decision on a request's ``Authorization`` header or cookie."""
    return guard.check(
        action,
        authorization=headers.get("Authorization"),
        session=session_token(headers.get("Cookie")),
        remote=remote,
    )


def parse_address(address: str, what: str, example_port: int) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` for IPv6) and check both parts."""
    usage = (
        f"{what} address must be host:port, e.g. 127.0.0.1:{example_port} or "
        f"[::1]:{example_port} (port 0 picks a free port), got {address!r}"
    )
    if not isinstance(address, str):
        raise ConfigError(usage)
    host, sep, port_text = address.strip().rpartition(":")
    if not sep or not host or not (port_text.isascii() and port_text.isdigit()):
        raise ConfigError(usage)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError as exc:
            raise ConfigError(f"{usage}: {host!r} is not an IPv6 address") from exc
    elif ":" in host or "[" in host or "]" in host or any(c.isspace() for c in host):
        raise ConfigError(usage)
    port = int(port_text)
    if port > 65535:
        raise ConfigError(f"{usage}: the port must be in 0..65535")
    return host, port


class BackgroundServer(ABC):
    """An HTTP server on a daemon thread; usable as a context manager."""

    #: what it serves, for messages ("metrics", "the dashboard")
    what = "HTTP"
    #: the path :attr:`url` points at
    path = "/"

    def __init__(
        self, address: str, example_port: int, *, guard: RequestGuard | None = None
    ) -> None:
        self.address = address
        self.host, self._requested_port = parse_address(address, self.what, example_port)
        self.guard = guard
        if guard is None and not is_loopback(self.host):
            raise ConfigError(
                f"{self.what} on {address} would be reachable from other machines without "
                "access control: configure [access] (docs/access-control.md) or bind to "
                "127.0.0.1"
            )
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @abstractmethod
    def _bind(self, host: str, port: int) -> tuple[Any, threading.Thread]:
        """Bind ``host:port`` and start serving; return the server and its running thread."""

    def start(self) -> Self:
        """Bind and serve on a daemon thread; returns ``self``. Starting twice is a no-op."""
        if self._server is None:
            try:
                self._server, self._thread = self._bind(self.host, self._requested_port)
            except OSError as exc:  # address in use, unknown host, not permitted
                raise ConfigError(f"cannot serve {self.what} on {self.address}: {exc}") from exc
        return self

    @property
    def port(self) -> int:
        """The port actually bound (the free port chosen when 0 was asked for)."""
        if self._server is None:
            raise RuntimeError(f"{self.what} is not being served: call start() first")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "https" if getattr(self, "tls", None) is not None else "http"
        return f"{scheme}://{host}:{self.port}{self.path}"

    def close(self) -> None:
        """Stop serving and release the port; safe to call more than once."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5.0)
        if self.guard is not None:
            self.guard.audit.flush()  # coalesced decisions still pending go to the log now

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


logger = logging.getLogger(__name__)


class ThreadedHTTPServer(http.server.ThreadingHTTPServer):
    """A threading HTTP(S) server whose daemon request threads it never waits on.

    The base of the dashboard's, ``/metrics``' and the operator API's servers. ``server_bind``
    skips :class:`http.server.HTTPServer`'s FQDN lookup (which can stall without DNS); accepted
    sockets are wrapped in :meth:`tls_context` by :func:`tls_request` and finish their
    handshake on the request's own thread (:class:`QuietRequestHandler`).
    """

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(
        self, host: str, port: int, handler: type[http.server.BaseHTTPRequestHandler]
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, port), handler)

    def tls_context(self) -> ssl.SSLContext | None:
        """The TLS context accepted connections are wrapped in (``None``: plain HTTP)."""
        return None

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = self.socket.accept()
        return tls_request(self.tls_context(), sock), addr

    def serve_in_background(self, name: str) -> threading.Thread:
        """Serve on a started daemon thread named ``fedfort-<name>-<port>``."""
        thread = threading.Thread(
            target=self.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"fedfort-{name}-{self.server_address[1]}",
            daemon=True,
        )
        thread.start()
        return thread


class QuietRequestHandler(http.server.BaseHTTPRequestHandler):
    """A handler that finishes TLS on its own thread and logs at debug level only.

    It names no Python version in ``Server``, answers HTTP/1.0 (one request per connection),
    and drops a client that stops sending after ``timeout`` seconds, so a slow or hostile
    client never holds a thread forever. A failed handshake or a reset connection ends the
    request quietly.
    """

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
        except OSError as exc:  # ssl.SSLError included: a reset or broken connection
            logger.debug("%s connection failed: %s", self.server_version, exc)

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)


def tls_request(tls: ssl.SSLContext | None, sock: socket.socket) -> socket.socket:
    """``sock`` wrapped for TLS without a handshake yet (done on the request's own thread by
    :func:`tls_handshake`, so a slow client cannot stall the accepting thread)."""
    if tls is None:
        return sock
    return tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)


def tls_handshake(sock: Any) -> None:
    """Finish the TLS handshake of a request socket from :func:`tls_request`."""
    if isinstance(sock, ssl.SSLSocket):
        sock.do_handshake()


def check_exposure(what: str, host: str, guard: Any, tls: ssl.SSLContext | None) -> None:
    """A guarded server off loopback must use TLS: tokens never cross a network in clear."""
    if guard is not None and tls is None and not is_loopback(host):
        raise ConfigError(
            f"{what} on {host} with access control must use TLS (access.tls_cert and "
            "access.tls_key), so that tokens never cross the network in clear"
        )
