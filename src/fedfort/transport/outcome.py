"""What a networked run tells its participants when something went wrong, and the fix.

Three things a new deployment meets first, each said in one line with what to do:

- the run ended without finishing (a client never joined, the quorum could not be met): the
  server's signed ``finished`` notice carries the reason (:func:`end_payload`,
  :func:`end_reason`), every waiting client prints it and exits non-zero, and the server's
  error names the clients that never joined or went silent (:func:`absent_clients`);
- a client's update was rejected by verification (``non_finite``, ``bad_shape``, ...): the
  server sends it a signed ``rejected`` notice with the reason code (never the detail, which
  may hold server state), and :func:`rejection_hint` says how to fix it;
- at the end of a run, :func:`participation_problems` lists, per client, the rounds whose
  updates were rejected or never arrived.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "MAX_REASON_CHARS",
    "REASON_BYTES",
    "absent_clients",
    "end_payload",
    "end_reason",
    "participation_problems",
    "refusal_message",
    "rejection_hint",
]

#: the longest reason a notice carries (bytes of UTF-8) and a client prints
MAX_REASON_CHARS = 1000

#: the fixed size of a ``rejected`` notice's reason code (space-padded)
REASON_BYTES = 64

_HINTS = {
    "non_finite": "the update holds NaN or Inf: the client's data has missing or infinite "
    "values (or training diverged); fix the data, or declare an [edge] policy that validates "
    "and sanitises it on the client (docs/edge-data-protection.md)",
    "non_finite_metric": "a training metric is NaN or Inf: fix the data or lower the learning "
    "rate, or declare an [edge] policy (docs/edge-data-protection.md)",
    "bad_shape": "the update does not fit the model: client and server must use the same "
    "--config ([model] and [data])",
    "bad_dtype": "the update is not float32: run the same fedfort version as the server",
    "bad_control": "the update's control delta does not match [clients] algorithm: use the "
    "server's --config",
    "not_sealed": "plain and masked updates mixed: use the server's [secure_aggregation]",
    "wrong_round": "the update answers another round: check the client's clock and version",
    "bad_sample_count": "the client reported no training samples: check its --data",
    "bad_metrics": "the update's metrics break the rules: run the same fedfort version",
}


def rejection_hint(reason: str) -> str:
    """What a client whose update was rejected with ``reason`` should do."""
    return _HINTS.get(
        reason,
        f"{reason}: the server's checks refused the update (docs/deployment.md, Reason "
        "codes); check that client and server use the same --config and fedfort version",
    )


_REFUSALS = {
    "unknown_client": "the server does not know {name}: --name must be one of the run's "
    "clients ([clients] names of the server's config, else client-000, client-001, ... up to "
    "[clients] count) and the name of its certificate",
    "schema_mismatch": "the server refused the data schema of {name}: its columns or labels "
    "differ from the federation's [data] features / classes (the server's log names the "
    "differences); compare the config with the server's and fix the files",
    "config_mismatch": "the server runs another configuration than the --config of {name}: "
    "use the federation's config file (only how [data] reads your files and [privacy.client] "
    "are your own)",
    "undeclared": "the server needs {name} to declare its run and data schema: use a fedfort "
    "client of the server's version with the federation's config",
    "identity_mismatch": "the server refused {name}: its certificate names another client; "
    "pass the --name of the certificate in --pki",
    "revoked_certificate": "the certificate of {name} was revoked: ask the operator for a new "
    "one (`fedfort certs issue`)",
    "expired_certificate": "the certificate of {name} expired: ask the operator for a new one "
    "(`fedfort certs issue`)",
    "foreign_certificate": "the certificate of {name} is not from this federation's CA: use "
    "the --pki directory the operator issued for this federation",
    "wrong_federation": "the certificates in --pki belong to another federation than the "
    "server's: use the ones issued by this federation's CA",
    "stale_key_version": "the server holds a newer identity key of {name} than this state "
    "directory: pass the --state the client ran with",
}


def refusal_message(reason: str, name: str) -> str:
    """One line for a client the server refused outright, with what to do."""
    hint = _REFUSALS.get(reason)
    if hint is not None:
        return f"{reason}: {hint.format(name=name)}"
    return f"{reason}: the server refused {name} (docs/deployment.md, Reason codes)"


def end_payload(reason: str | None) -> bytes:
    """The payload of a ``finished`` notice: empty for a completed run, else the reason."""
    if reason is None:
        return b""
    return reason.encode("utf-8")[:MAX_REASON_CHARS]


def end_reason(payload: bytes) -> str | None:
    """The reason carried by a ``finished`` notice (``None``: the run completed), printable."""
    if not payload:
        return None
    text = payload[:MAX_REASON_CHARS].decode("utf-8", "replace")
    return "".join(c if c.isprintable() else " " for c in text).strip() or "no reason given"


def _names(ids: Sequence[str], most: int = 10) -> str:
    shown = ", ".join(ids[:most])
    return shown if len(ids) <= most else f"{shown} and {len(ids) - most} more"


def absent_clients(roster: Sequence[str], enrolled: Iterable[str], online: Iterable[str]) -> str:
    """Which roster clients never joined and which joined but went silent ('' if none)."""
    joined, alive = set(enrolled), set(online)
    never = [c for c in roster if c not in joined]
    silent = [c for c in roster if c in joined and c not in alive]
    parts = []
    if never:
        parts.append(f"never joined: {_names(never)}")
    if silent:
        parts.append(f"joined, then went silent: {_names(silent)}")
    return "; ".join(parts)


def participation_problems(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per client whose update was rejected or missing in a round it was selected
    for, with the reason codes, the counts and the fix."""
    selected: Counter[str] = Counter()
    dropped: Counter[str] = Counter()
    rejected: dict[str, Counter[str]] = {}
    for record in records:
        selected.update(record.get("selected", []))
        dropped.update(record.get("dropped", []))
        for r in record.get("rejected", []):
            rejected.setdefault(r["client_id"], Counter())[r["reason"]] += 1
    lines = []
    for client in sorted(set(rejected) | set(dropped)):
        of = f"of {selected[client]} rounds" if selected[client] else "rounds"
        if client in rejected:
            reasons = rejected[client]
            total = sum(reasons.values())
            top = reasons.most_common(1)[0][0]
            codes = ", ".join(f"{k} x{v}" for k, v in reasons.most_common())
            lines.append(
                f"{client}: updates rejected in {total} {of} ({codes}); {rejection_hint(top)}"
            )
        if dropped[client]:
            lines.append(
                f"{client}: no update in {dropped[client]} {of} (not running, too slow for "
                "the deadline, or it failed at start: see its own output)"
            )
    return lines
