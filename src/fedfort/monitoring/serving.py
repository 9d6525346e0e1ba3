"""HTTP endpoints served on a background thread: the address rules and the lifecycle they share.

:class:`BackgroundServer` is the base of :class:`~fedfort.monitoring.MetricsServer` and
:class:`~fedfort.monitoring.DashboardServer`: parse ``host:port`` up front (a bad address is a
:class:`~fedfort.errors.ConfigError` at construction), bind on :meth:`~BackgroundServer.start`
(an address in use is a ``ConfigError`` there), serve on a daemon thread, and stop and free the
port on :meth:`~BackgroundServer.close`.
"""

from __future__ import annotations

import ipaddress
import threading
from abc import ABC, abstractmethod
from typing import Any, Self

from fedfort.errors import ConfigError

__all__ = ["BackgroundServer", "parse_address"]


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

    def __init__(self, address: str, example_port: int) -> None:
        self.address = address
        self.host, self._requested_port = parse_address(address, self.what, example_port)
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
        return f"http://{host}:{self.port}{self.path}"

    def close(self) -> None:
        """Stop serving and release the port; safe to call more than once."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5.0)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
