"""What the monitoring servers need of an access guard: one small protocol.

The metrics endpoint and the dashboard sit below the operator interface that builds guards
from ``[access]`` (:mod:`fedfort.access`), so they take any object with this shape;
:class:`fedfort.access.guard.AccessGuard` is the one fedfort ships. A guard decides (and
audits) whether a credential may take an action, and flushes its coalesced audit entries when
a server closes.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["DecisionAudit", "GuardDecision", "RequestGuard"]


class GuardDecision(Protocol):
    """The answer to one request: allowed or not, with the HTTP status and reason to send."""

    @property
    def allowed(self) -> bool: ...
    @property
    def status(self) -> int: ...
    @property
    def reason(self) -> str: ...


class DecisionAudit(Protocol):
    """Where a guard's decisions are written; flushed when a server closes."""

    def flush(self) -> None: ...


class RequestGuard(Protocol):
    """Access control of a server: an audited decision per request (docs/access-control.md)."""

    @property
    def audit(self) -> DecisionAudit: ...

    def check(
        self,
        action: str,
        *,
        authorization: str | None = None,
        session: str | None = None,
        peer_certificate: bytes | None = None,
        remote: str = "",
    ) -> GuardDecision: ...
