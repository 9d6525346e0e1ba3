"""Role-based access control for everything that is not a client submitting an update.

- :mod:`~fedfort.access.roles`: the roles and the permission matrix (one table);
- :mod:`~fedfort.access.tokens`: :class:`TokenStore`, hashed, scoped, expiring bearer tokens;
- :mod:`~fedfort.access.guard`: :class:`AccessGuard` (deny by default) and :class:`AccessAudit`
  (every decision in the run's audit log);
- :mod:`~fedfort.access.operations`: :class:`Operations`, the actions on one run;
- :mod:`~fedfort.access.api`: :class:`OperatorServer`, the HTTPS operator API;
- :mod:`~fedfort.access.client`: :class:`OperatorClient`, what ``fedfort operator`` uses.
"""

from typing import TYPE_CHECKING

from fedfort._lazy import lazy_exports

if TYPE_CHECKING:
    from fedfort.access.api import OperatorServer, server_tls_context
    from fedfort.access.client import OperatorClient
    from fedfort.access.guard import ACCESS_KIND, AccessAudit, AccessGuard, Decision
    from fedfort.access.operations import Operations
    from fedfort.access.roles import ACTIONS, PERMISSIONS, ROLES, allowed, matrix_markdown
    from fedfort.access.tokens import TokenInfo, TokenStore

__all__ = [
    "ACCESS_KIND",
    "ACTIONS",
    "PERMISSIONS",
    "ROLES",
    "AccessAudit",
    "AccessGuard",
    "Decision",
    "Operations",
    "OperatorClient",
    "OperatorServer",
    "TokenInfo",
    "TokenStore",
    "allowed",
    "matrix_markdown",
    "server_tls_context",
]

if not TYPE_CHECKING:  # type checkers see the imports above; typos stay errors
    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "OperatorServer": "fedfort.access.api",
            "server_tls_context": "fedfort.access.api",
            "OperatorClient": "fedfort.access.client",
            "ACCESS_KIND": "fedfort.access.guard",
            "AccessAudit": "fedfort.access.guard",
            "AccessGuard": "fedfort.access.guard",
            "Decision": "fedfort.access.guard",
            "Operations": "fedfort.access.operations",
            "ACTIONS": "fedfort.access.roles",
            "PERMISSIONS": "fedfort.access.roles",
            "ROLES": "fedfort.access.roles",
            "allowed": "fedfort.access.roles",
            "matrix_markdown": "fedfort.access.roles",
            "TokenInfo": "fedfort.access.tokens",
            "TokenStore": "fedfort.access.tokens",
        },
        globals(),
    )
