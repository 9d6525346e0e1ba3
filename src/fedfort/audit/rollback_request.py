"""An operator's rollback request: audited at once, applied when the run resumes.

:func:`request_rollback` files the request in the run's checkpoint database, signed with the
run's audit key like every checkpoint the resume reads, and appends a ``rollback_requested``
entry to its audit log. The server applies it on ``--resume``
(:meth:`fedfort.run.federation.Federation.rollback`), so the rolled-back model is what the next
round trains from. The versions themselves are read by
:class:`~fedfort.server.versions.ModelRegistry`, which never writes to the audit log (the
server sits below the audit log).
"""

from __future__ import annotations

import time
from typing import Any

from fedfort import jsonio
from fedfort.audit.log import AUDIT_FILE, AuditLog, run_audit_key
from fedfort.audit.trail import AuditTrail
from fedfort.errors import ConfigError
from fedfort.server.checkpoint import CheckpointStore
from fedfort.server.versions import PENDING_ROLLBACK_META, ModelRegistry

__all__ = ["request_rollback"]


def request_rollback(registry: ModelRegistry, version: int, reason: str) -> dict[str, Any]:
    """File a rollback of ``registry``'s run to ``version``; audited now, applied on resume."""
    registry.check_version(version)
    if not reason.strip():
        raise ConfigError("say why: a rollback needs a reason for the audit log")
    latest = registry.store.latest_round()
    request = {
        "to_version": version,
        "reason": reason,
        "requested_at": time.time(),
        "at_round": latest,
    }
    run_dir = registry.run_dir
    # the request is signed with the run's audit key like every checkpoint the resume reads
    key = run_audit_key(run_dir, create=False)
    with CheckpointStore(registry.store.path, key) as signed:
        if (run_dir / AUDIT_FILE).exists():
            with AuditLog(run_dir / AUDIT_FILE, key) as log:
                AuditTrail(log, signed).event("rollback_requested", request, latest)
        signed.set_meta(PENDING_ROLLBACK_META, jsonio.dumps(request))
    return request
