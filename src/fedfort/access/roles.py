"""The roles of fedfort's access control and the one table that says what each may do.

:data:`PERMISSIONS` is the permission matrix: every action a person or a tool can take against a
running federation (besides a client submitting an update) and the roles allowed to take it.
Everything else reads this table: the operator API, the dashboard and ``/metrics`` guards, the
token store (a token's scopes must be actions of its role), the tests, and the matrix in
``docs/access-control.md`` (rendered by :func:`matrix_markdown`, ``fedfort access matrix``).

Deny by default: an action that is not in the table, a role that is not in :data:`ROLES`, or a
role the table does not list for the action is refused (NIST SP 800-162 / RBAC as in
INCITS 359: permissions are assigned to roles, roles to identities, never permissions to
identities directly).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

__all__ = [
    "ACTIONS",
    "DESCRIPTIONS",
    "PERMISSIONS",
    "POLLED_ACTIONS",
    "ROLES",
    "allowed",
    "matrix_markdown",
    "role_actions",
]

#: every role, most powerful first
ROLES: Final[tuple[str, ...]] = ("admin", "operator", "auditor", "viewer")

_ALL = frozenset(ROLES)
_RUN = frozenset({"admin", "operator"})

#: action -> roles allowed to take it (the permission matrix)
PERMISSIONS: Final[dict[str, frozenset[str]]] = {
    "run.status": _ALL,
    "run.start": _RUN,
    "run.stop": _RUN,
    "run.pause": _RUN,
    "run.resume": _RUN,
    "model.rollback": _RUN,
    "keys.rotate": frozenset({"admin"}),
    "clients.revoke": frozenset({"admin"}),
    "dashboard.view": frozenset({"admin", "operator", "viewer"}),
    "metrics.read": frozenset({"admin", "operator", "viewer"}),
    "audit.export": frozenset({"admin", "auditor"}),
    "audit.verify": frozenset({"admin", "auditor"}),
    "report.read": frozenset({"admin", "auditor"}),
}

#: what each action does (the docs and ``fedfort access matrix`` show it)
DESCRIPTIONS: Final[dict[str, str]] = {
    "run.status": "read the run's state (running, paused, round)",
    "run.start": "start a run held at its start",
    "run.stop": "stop the run after the round in progress (a clean, committed state)",
    "run.pause": "pause between rounds",
    "run.resume": "resume a paused run",
    "model.rollback": "continue from an earlier model version",
    "keys.rotate": "rotate the server's identity key",
    "clients.revoke": "revoke a client's certificate (CRL)",
    "dashboard.view": "the live dashboard and its run state",
    "metrics.read": "Prometheus /metrics",
    "audit.export": "export the audit log (JSONL)",
    "audit.verify": "verify the audit log's chain and signatures",
    "report.read": "the HTML compliance report",
}

#: read actions a dashboard or Prometheus polls; their allowed decisions are audited coalesced
POLLED_ACTIONS: Final[frozenset[str]] = frozenset({"run.status", "dashboard.view", "metrics.read"})

ACTIONS: Final[tuple[str, ...]] = tuple(PERMISSIONS)


def allowed(role: str | None, action: str) -> bool:
    """Whether ``role`` may take ``action``; unknown roles and actions are refused."""
    return role is not None and role in PERMISSIONS.get(action, frozenset())


def role_actions(role: str) -> frozenset[str]:
    """Every action ``role`` may take."""
    return frozenset(a for a, roles in PERMISSIONS.items() if role in roles)


def matrix_markdown(roles: Iterable[str] = ROLES) -> str:
    """The permission matrix as a Markdown table (docs/access-control.md embeds it)."""
    roles = tuple(roles)
    lines = [
        "| action | " + " | ".join(roles) + " | what it does |",
        "| --- | " + " | ".join(":---:" for _ in roles) + " | --- |",
    ]
    for action, allowed_roles in PERMISSIONS.items():
        cells = " | ".join("yes" if r in allowed_roles else "-" for r in roles)
        lines.append(f"| `{action}` | {cells} | {DESCRIPTIONS[action]} |")
    return "\n".join(lines) + "\n"
