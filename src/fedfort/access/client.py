"""A small client of the operator API (what ``fedfort operator ACTION`` uses).

It sends the bearer token in the ``Authorization`` header, over HTTPS verified against the
federation's ``ca.pem`` (``ca``), or plain HTTP to a loopback operator API. A refusal raises
:class:`~fedfort.errors.AccessDenied` with the server's reason code.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Final

from fedfort import jsonio
from fedfort.errors import AccessDenied, ConfigError, FedfortError

__all__ = ["ACTION_ROUTES", "OperatorClient", "OperatorError"]

#: CLI action -> (method, path)
ACTION_ROUTES: Final[dict[str, tuple[str, str]]] = {
    "status": ("GET", "/v1/status"),
    "start": ("POST", "/v1/run/start"),
    "stop": ("POST", "/v1/run/stop"),
    "pause": ("POST", "/v1/run/pause"),
    "resume": ("POST", "/v1/run/resume"),
    "rollback": ("POST", "/v1/model/rollback"),
    "rotate-keys": ("POST", "/v1/keys/rotate"),
    "revoke": ("POST", "/v1/clients/revoke"),
    "dashboard": ("GET", "/v1/dashboard"),
    "metrics": ("GET", "/metrics"),
    "audit-export": ("GET", "/v1/audit/export"),
    "audit-verify": ("GET", "/v1/audit/verify"),
    "report": ("GET", "/v1/report"),
}


class OperatorError(FedfortError):
    """The operator API answered with an error other than a refusal (409, 400, 500...)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class OperatorClient:
    """Calls the operator API at ``url`` with ``token``."""

    def __init__(
        self, url: str, token: str | None, *, ca: str | Path | None = None, timeout_s: float = 90.0
    ) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s
        self._context: ssl.SSLContext | None = None
        if self.url.startswith("https://"):
            try:
                self._context = ssl.create_default_context(cafile=None if ca is None else str(ca))
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"cannot load the CA certificate {ca}: {exc}") from exc
        elif not self.url.startswith("http://"):
            raise ConfigError(f"the operator API URL must start with https://, got {url!r}")

    def request(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> tuple[int, bytes]:
        """``(status, body)`` of one call; raises on 401/403 and on other errors >= 400."""
        data = None if method == "GET" else jsonio.dumps(body or {}).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s, context=self._context) as r:
                return int(r.status), r.read()
        except urllib.error.HTTPError as exc:
            payload = exc.read()
            try:
                message = str(json.loads(payload).get("error", ""))
            except (ValueError, AttributeError):
                message = payload.decode("utf-8", "replace").strip()
            if exc.code in (401, 403):
                raise AccessDenied(exc.code, message, f"{method} {path} refused") from None
            raise OperatorError(exc.code, message) from None
        except (urllib.error.URLError, OSError) as exc:
            raise ConfigError(f"cannot reach the operator API at {self.url}: {exc}") from exc

    def call(self, action: str, body: dict[str, Any] | None = None) -> tuple[int, bytes]:
        """Take one of :data:`ACTION_ROUTES`."""
        if action not in ACTION_ROUTES:
            raise ConfigError(f"unknown action {action!r}: one of {', '.join(ACTION_ROUTES)}")
        method, path = ACTION_ROUTES[action]
        return self.request(method, path, body)
