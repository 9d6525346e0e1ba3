"""Cost of access-control decisions: a token check, an audited decision, a coalesced one.

Run: ``PYTHONPATH=src python benchmarks/bench_access_decisions.py``. Prints milliseconds per
decision and the ratio to the token check alone (measured in the same run).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from fedfort.access import AccessAudit, AccessGuard, TokenStore
from fedfort.audit import AUDIT_FILE, AuditLog, run_audit_key

N = 300


def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    store = TokenStore(tmp / "tokens.sqlite")
    token = store.issue("bench", "admin")[0]
    log = AuditLog(tmp / AUDIT_FILE, run_audit_key(tmp))
    log.append("run_start", {})
    audit = AccessAudit(log, window_s=3600, max_entries_per_window=10**9)
    guard = AccessGuard(store, audit)
    start = time.perf_counter()
    for _ in range(N):
        store.authenticate(token)
    base = (time.perf_counter() - start) / N
    print(f"token check (SQLite lookup + constant-time compare): {base * 1e3:.3f} ms")
    for action, what in (
        ("run.pause", "one signed audit entry each"),
        ("metrics.read", "coalesced"),
    ):
        start = time.perf_counter()
        for _ in range(N):
            guard.check(action, authorization=f"Bearer {token}")
        cost = (time.perf_counter() - start) / N
        print(f"{action} decision ({what}): {cost * 1e3:.3f} ms, {cost / base:.1f}x the check")
    audit.flush()
    log.close()
    store.close()


if __name__ == "__main__":
    main()
