"""The tamper-evident audit trail: a hash-chained, signed, append-only log in SQLite.

- :mod:`~fedfort.audit.chain`: the entry format, its hash chain and signature;
- :mod:`~fedfort.audit.log`: :class:`AuditLog`, the one writer;
- :mod:`~fedfort.audit.head`: :class:`SignedHead`, the signed head every append advances;
- :mod:`~fedfort.audit.trail`: :class:`AuditTrail`, what a run writes (a commit hook);
- :mod:`~fedfort.audit.rollback_request`: an operator's rollback request, signed and audited
  at once, applied when the run resumes;
- :mod:`~fedfort.audit.verify`: :func:`verify_run` / :func:`verify_log` and the JSONL export.
"""

from typing import TYPE_CHECKING

from fedfort._lazy import lazy_exports

if TYPE_CHECKING:
    from fedfort.audit.chain import AuditEntry
    from fedfort.audit.head import HEAD_FILE, SignedHead
    from fedfort.audit.log import (
        AUDIT_FILE,
        AUDIT_KEY_FILE,
        AUDIT_PUBLIC_KEY_FILE,
        AuditLog,
        read_entries,
        run_audit_key,
    )
    from fedfort.audit.trail import AuditTrail, config_sha256
    from fedfort.audit.verify import (
        AuditVerification,
        export_jsonl,
        load_public_key,
        verify_log,
        verify_run,
    )

__all__ = [
    "AUDIT_FILE",
    "AUDIT_KEY_FILE",
    "AUDIT_PUBLIC_KEY_FILE",
    "HEAD_FILE",
    "AuditEntry",
    "AuditLog",
    "AuditTrail",
    "AuditVerification",
    "SignedHead",
    "config_sha256",
    "export_jsonl",
    "load_public_key",
    "read_entries",
    "run_audit_key",
    "verify_log",
    "verify_run",
]

if not TYPE_CHECKING:  # type checkers see the imports above; typos stay errors
    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "AuditEntry": "fedfort.audit.chain",
            "HEAD_FILE": "fedfort.audit.head",
            "SignedHead": "fedfort.audit.head",
            "AUDIT_FILE": "fedfort.audit.log",
            "AUDIT_KEY_FILE": "fedfort.audit.log",
            "AUDIT_PUBLIC_KEY_FILE": "fedfort.audit.log",
            "AuditLog": "fedfort.audit.log",
            "read_entries": "fedfort.audit.log",
            "run_audit_key": "fedfort.audit.log",
            "AuditTrail": "fedfort.audit.trail",
            "config_sha256": "fedfort.audit.trail",
            "AuditVerification": "fedfort.audit.verify",
            "export_jsonl": "fedfort.audit.verify",
            "load_public_key": "fedfort.audit.verify",
            "verify_log": "fedfort.audit.verify",
            "verify_run": "fedfort.audit.verify",
        },
        globals(),
    )
