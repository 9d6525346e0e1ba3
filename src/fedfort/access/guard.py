"""Deny-by-default authorization of every request, and the audit of every decision.

:class:`AccessGuard` answers one question per request: may this credential take this action?
It authenticates the bearer token (``Authorization: Bearer fft_...`` or the dashboard's
HttpOnly session cookie) against the :class:`~fedfort.access.tokens.TokenStore`, looks the
action up in the permission matrix (:data:`fedfort.access.roles.PERMISSIONS`) and returns a
:class:`Decision`. Anything it cannot positively allow is refused: no credential, a malformed,
unknown, expired or revoked token (401), a federation member's client certificate, which never
carries an operator role, and a role or scope without the permission (403).

Every decision, allowed or denied, is written by :class:`AccessAudit` to the run's signed,
hash-chained audit log as an ``access`` entry (identity, role, action, decision, reason, HTTP
status, remote address; never the token). Decisions of the polled reads (the dashboard's
refresh, Prometheus's scrape, status) are coalesced per identity and outcome into one entry per
``window_s`` with a count, and denials beyond ``max_entries_per_window`` in a window likewise,
so a polling browser or a flood of bad requests cannot flood the log; privileged actions are
written one by one, before they run, and an action whose decision cannot be audited does not
run (fail closed).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from fedfort.access.roles import PERMISSIONS, POLLED_ACTIONS
from fedfort.access.tokens import TokenStore
from fedfort.audit import AuditLog
from fedfort.crypto.pki import (
    CertificateRefused,
    RevocationList,
    common_name,
    verify_certificate,
)
from fedfort.errors import AccessDenied

__all__ = [
    "ACCESS_KIND",
    "AccessAudit",
    "AccessGuard",
    "CertificateRoles",
    "Decision",
    "bearer_token",
]

#: the audit log's entry kind of an access decision
ACCESS_KIND: Final = "access"


@dataclass(frozen=True)
class Decision:
    """The outcome of one authorization: who, as what role, asked for what, and the answer."""

    identity: str
    role: str | None
    action: str
    allowed: bool
    reason: str
    status: int
    remote: str = ""

    def body(self) -> dict[str, Any]:
        """The audit entry's body (metadata only; the credential itself is never included)."""
        return {
            "identity": self.identity,
            "role": self.role,
            "action": self.action,
            "decision": "allow" if self.allowed else "deny",
            "reason": self.reason,
            "status": self.status,
            "remote": self.remote,
        }

    def raise_if_denied(self) -> None:
        if not self.allowed:
            raise AccessDenied(self.status, self.reason, f"{self.action} refused")


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer ...`` header value, or ``None``."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


@dataclass(frozen=True)
class CertificateRoles:
    """Roles of TLS client certificates, by common name (``access.roles``).

    A certificate earns its mapped role only when it was issued by ``ca_cert`` for client
    authentication, is in its validity window, is not in the CRL (``revoked``, re-read when it
    changes) and is not one of the federation's ``members`` (client ids): a federation client's
    certificate never carries an operator role, whatever the map says.
    """

    roles: Mapping[str, str]
    ca_cert: x509.Certificate
    revoked: RevocationList | None
    members: frozenset[str] = field(default_factory=frozenset)


class AccessAudit:
    """Writes :class:`Decision` s to an :class:`~fedfort.audit.AuditLog` (thread-safe)."""

    def __init__(
        self, log: AuditLog, *, window_s: float = 60.0, max_entries_per_window: int = 200
    ) -> None:
        self.log = log
        self.window_s = float(window_s)
        self.max_entries_per_window = int(max_entries_per_window)
        self._lock = threading.Lock()
        self._pending: dict[tuple[Any, ...], dict[str, Any]] = {}
        self._window_start = time.monotonic()
        self._written = 0

    def record(self, decision: Decision) -> None:
        """Audit ``decision``: at once, or coalesced (see the module docstring)."""
        body = decision.body()
        now = time.time()
        with self._lock:
            due = self._due_locked()
            polled = decision.action in POLLED_ACTIONS
            coalesce = polled or (
                not decision.allowed and self._written >= self.max_entries_per_window
            )
            if coalesce:
                key = tuple(body.values())
                pending = self._pending.setdefault(
                    key, {**body, "count": 0, "first_at": now, "last_at": now}
                )
                pending["count"] += 1
                pending["last_at"] = now
            else:
                self._written += 1
        if due:
            self._write(due)
        if not coalesce:
            self.log.append(ACCESS_KIND, {**body, "count": 1, "first_at": now, "last_at": now})

    def _due_locked(self) -> list[dict[str, Any]]:
        if time.monotonic() - self._window_start < self.window_s:
            return []
        return self._take_locked()

    def _take_locked(self) -> list[dict[str, Any]]:
        due = list(self._pending.values())
        self._pending.clear()
        self._window_start = time.monotonic()
        self._written = 0
        return due

    def _write(self, bodies: list[dict[str, Any]]) -> None:
        if bodies:
            self.log.append_many([(ACCESS_KIND, None, b) for b in bodies])

    def flush(self) -> None:
        """Write the coalesced decisions now (called on close and by tests)."""
        with self._lock:
            due = self._take_locked()
        self._write(due)


class AccessGuard:
    """Authenticates a request's credential and authorizes one action; audits the decision."""

    def __init__(
        self,
        tokens: TokenStore,
        audit: AccessAudit,
        *,
        certificates: CertificateRoles | None = None,
    ) -> None:
        self.tokens = tokens
        self.audit = audit
        self.certificates = certificates

    def check(
        self,
        action: str,
        *,
        authorization: str | None = None,
        session: str | None = None,
        peer_certificate: bytes | None = None,
        remote: str = "",
    ) -> Decision:
        """Decide whether the credential may take ``action``; the decision is audited.

        ``authorization`` is the ``Authorization`` header, ``session`` the dashboard cookie's
        token, ``peer_certificate`` the DER of a TLS client certificate the connection
        presented. A token, when there is one, decides; a certificate has a role only through
        :class:`CertificateRoles` (a federation member's never has one).
        """
        decision = self._decide(action, authorization, session, peer_certificate, remote)
        self.audit.record(decision)
        return decision

    def _decide(
        self,
        action: str,
        authorization: str | None,
        session: str | None,
        peer_certificate: bytes | None,
        remote: str,
    ) -> Decision:
        if action not in PERMISSIONS:
            return Decision("-", None, action, False, "unknown_action", 403, remote)
        token = bearer_token(authorization)
        if token is None and authorization:
            return Decision("anonymous", None, action, False, "malformed_credential", 401, remote)
        token = token or session
        if token is None:
            if peer_certificate is not None:
                return self._certificate(action, peer_certificate, remote)
            return Decision("anonymous", None, action, False, "missing_credential", 401, remote)
        try:
            info = self.tokens.authenticate(token)
        except AccessDenied as exc:
            return Decision("anonymous", None, action, False, exc.reason, exc.status, remote)
        identity = f"token:{info.id}:{info.name}"
        if info.role not in PERMISSIONS[action]:
            return Decision(identity, info.role, action, False, "role_not_permitted", 403, remote)
        if action not in info.actions:
            return Decision(identity, info.role, action, False, "outside_scopes", 403, remote)
        return Decision(identity, info.role, action, True, "role_permitted", 200, remote)

    def _certificate(self, action: str, der: bytes, remote: str) -> Decision:
        """The decision on a TLS client certificate presented without a token."""
        try:
            cert = x509.load_der_x509_certificate(der)
            name = common_name(cert)
        except ValueError:
            return Decision("cert:?", None, action, False, "malformed_certificate", 401, remote)
        identity = f"cert:{name[:64]}"
        roles = self.certificates
        if roles is None or name not in roles.roles or name in roles.members:
            return Decision(identity, None, action, False, "certificate_not_operator", 403, remote)
        try:
            verify_certificate(
                cert.public_bytes(serialization.Encoding.PEM),
                roles.ca_cert,
                role="client",
                revoked=roles.revoked,
            )
        except CertificateRefused as exc:
            return Decision(identity, None, action, False, exc.reason, 401, remote)
        role = roles.roles[name]
        if role not in PERMISSIONS[action]:
            return Decision(identity, role, action, False, "role_not_permitted", 403, remote)
        return Decision(identity, role, action, True, "role_permitted", 200, remote)
