"""Checking an audit log: the chain, the signatures, and what the run's checkpoints witnessed.

:func:`verify_log` walks the entries in order and stops at the first one that is wrong,
naming it and saying why:

- its position is not the next one (an entry before it was deleted, or the log reordered);
- its content does not hash to its stored hash (it was edited);
- its ``prev`` is not the hash of the entry before it (an entry was inserted, deleted or moved);
- it is signed by a key other than the log's key at that point (the first key is the pinned
  public key an auditor holds; later keys are introduced only by ``audit_key_rotated`` entries
  signed by their predecessor), or its signature does not verify.

Removing entries from the end leaves a valid, shorter chain, so the check also compares the
log with an outside *witness*: the head ``(seq, hash)`` the server recorded in the run's
checkpoint database after every round, and every committed model version there must appear in
the log with the same hash. For the strongest guarantee, publish the head elsewhere
(``fedfort audit verify`` prints it) and pass it back with ``--head``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedfort import jsonio
from fedfort.audit.chain import GENESIS, AuditEntry, entry_hash, key_id, signed_message
from fedfort.audit.log import AUDIT_FILE, AUDIT_PUBLIC_KEY_FILE, read_entries
from fedfort.errors import AuditError
from fedfort.secagg.crypto import verify

__all__ = [
    "AUDIT_HEAD_META",
    "AuditVerification",
    "export_jsonl",
    "load_public_key",
    "verify_log",
    "verify_run",
]

#: the checkpoint-database meta key holding the audit head after each committed round
AUDIT_HEAD_META = "audit_head"


@dataclass(frozen=True)
class AuditVerification:
    """The outcome of a check: ``ok``, how many entries held, and the first bad one."""

    ok: bool
    entries: int
    head_seq: int
    head_hash: str
    bad_seq: int | None = None
    bad_kind: str | None = None
    problem: str | None = None
    keys: list[str] = field(default_factory=list)

    def describe(self) -> str:
        if self.ok:
            return (
                f"audit log verified: {self.entries} entries, head {self.head_seq} "
                f"{self.head_hash}, signed by {', '.join(self.keys)}"
            )
        what = f" ({self.bad_kind})" if self.bad_kind else ""
        return f"audit log FAILED at entry {self.bad_seq}{what}: {self.problem}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "entries": self.entries,
            "head_seq": self.head_seq,
            "head_hash": self.head_hash,
            "bad_seq": self.bad_seq,
            "bad_kind": self.bad_kind,
            "problem": self.problem,
            "keys": list(self.keys),
        }


def load_public_key(path: Path) -> bytes:
    """An audit public key file: 64 hex characters (what ``audit-key.pub`` holds)."""
    try:
        text = path.read_text(encoding="ascii").strip()
        public = bytes.fromhex(text)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise AuditError(f"cannot read the audit public key {path}: {exc}") from exc
    if len(public) != 32:
        raise AuditError(f"{path} does not hold a 32-byte Ed25519 public key in hex")
    return public


def _check(
    entries: Iterable[AuditEntry], public_key: bytes
) -> tuple[int, int, str, list[str], AuditEntry | None, int | None, str | None]:
    """Walk the chain; return counts, head, keys seen, and (entry, seq, problem) of a failure."""
    current = key_id(public_key)
    public = public_key
    keys = [current]
    count, seq, prev = 0, 0, GENESIS
    for entry in entries:
        expected = seq + 1
        if entry.seq != expected:
            if entry.seq > expected:
                problem = (
                    f"entry {expected} is missing: the log jumps from entry {seq} to {entry.seq}"
                )
            else:
                problem = f"entry {entry.seq} appears again after entry {seq}"
            return count, seq, prev, keys, entry, expected, problem
        digest = entry_hash(
            entry.seq, entry.ts, entry.kind, entry.round, entry.body, entry.prev, entry.key
        )
        if digest != entry.hash:
            return count, seq, prev, keys, entry, entry.seq, "its content does not match its hash"
        if entry.prev != prev:
            problem = (
                "it does not follow the entry before it (its previous-hash differs): an entry "
                "was inserted, deleted or moved here"
            )
            return count, seq, prev, keys, entry, entry.seq, problem
        if entry.key != current:
            problem = f"it is signed by key {entry.key}, but the log's key here is {current}"
            return count, seq, prev, keys, entry, entry.seq, problem
        try:
            signature = bytes.fromhex(entry.signature)
        except ValueError:
            signature = b""
        if not verify(public, signature, signed_message(entry.hash)):
            problem = f"its signature does not verify under key {current}"
            return count, seq, prev, keys, entry, entry.seq, problem
        if entry.seq == 1 and entry.kind != "run_start":
            return count, seq, prev, keys, entry, 1, "the log does not begin with run_start"
        if entry.kind == "audit_key_rotated":
            try:
                body = entry.data
                public = bytes.fromhex(str(body["new_public_key"]))
            except (KeyError, ValueError, json.JSONDecodeError):
                return count, seq, prev, keys, entry, entry.seq, "a malformed key rotation"
            if len(public) != 32 or key_id(public) != body.get("new_key"):
                return count, seq, prev, keys, entry, entry.seq, "a malformed key rotation"
            current = key_id(public)
            keys.append(current)
        count, seq, prev = count + 1, entry.seq, entry.hash
    return count, seq, prev, keys, None, None, None


def verify_log(
    path: str | Path, public_key: bytes, *, witness: tuple[int, str] | None = None
) -> AuditVerification:
    """Check the log at ``path`` against the pinned first key and an optional head witness."""
    path = Path(path)
    count, seq, head, keys, bad, bad_seq, problem = _check(read_entries(path), public_key)
    if bad is not None or bad_seq is not None:
        return AuditVerification(
            False, count, seq, head, bad_seq, None if bad is None else bad.kind, problem, keys
        )
    if count == 0:
        return AuditVerification(False, 0, 0, GENESIS, 1, None, "the log is empty", keys)
    if witness is not None:
        w_seq, w_hash = witness
        if seq < w_seq:
            problem = (
                f"the log ends at entry {seq}, but entry {w_seq} was witnessed: entries "
                f"{seq + 1}..{w_seq} were removed"
            )
            return AuditVerification(False, count, seq, head, seq + 1, None, problem, keys)
        witnessed = next((e for e in read_entries(path) if e.seq == w_seq), None)
        if witnessed is None or witnessed.hash != w_hash:
            problem = f"its hash differs from the witnessed head {w_hash}"
            kind = None if witnessed is None else witnessed.kind
            return AuditVerification(False, count, seq, head, w_seq, kind, problem, keys)
    return AuditVerification(True, count, seq, head, keys=keys)


def _checkpoint_witness(run_dir: Path) -> tuple[tuple[int, str] | None, dict[int, str]]:
    """The audit head and the model hash of every committed round, from the checkpoints."""
    path = run_dir / "checkpoints.sqlite"
    if not path.exists():
        return None, {}
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            row = db.execute("SELECT value FROM meta WHERE key = ?", (AUDIT_HEAD_META,)).fetchone()
            rounds = {
                int(r): str(h)
                for r, h in db.execute(
                    "SELECT round, model_sha256 FROM checkpoints WHERE round > 0"
                )
            }
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise AuditError(f"cannot read the run's checkpoints {path}: {exc}") from exc
    head = None
    if row is not None:
        value = json.loads(row[0])
        head = (int(value["seq"]), str(value["hash"]))
    return head, rounds


def verify_run(
    run_dir: str | Path,
    *,
    public_key: bytes | None = None,
    head: tuple[int, str] | None = None,
) -> AuditVerification:
    """Verify the audit log of the run in ``run_dir``.

    The pinned key is ``public_key`` or the run's ``audit-key.pub``; the witness is ``head`` or
    the head recorded in the run's checkpoints, whose committed model versions must all be
    in the log with the same hashes.
    """
    run_dir = Path(run_dir)
    if public_key is None:
        public_key = load_public_key(run_dir / AUDIT_PUBLIC_KEY_FILE)
    recorded, rounds = _checkpoint_witness(run_dir)
    result = verify_log(run_dir / AUDIT_FILE, public_key, witness=head or recorded)
    if not result.ok:
        return result
    logged = {
        e.round: str(e.data.get("sha256"))
        for e in read_entries(run_dir / AUDIT_FILE)
        if e.kind == "model_version" and e.round is not None
    }
    for round_, digest in sorted(rounds.items()):
        if logged.get(round_) != digest:
            problem = f"round {round_} was committed with model {digest[:16]}..., but the log " + (
                "has no model_version entry for it"
                if round_ not in logged
                else f"records {logged[round_][:16]}..."
            )
            return AuditVerification(
                False,
                result.entries,
                result.head_seq,
                result.head_hash,
                result.head_seq + 1,
                "model_version",
                problem,
                result.keys,
            )
    return result


def export_jsonl(run_dir: str | Path, out: str | Path) -> int:
    """Write every entry of the run's audit log as one JSON object per line; return the count."""
    count = 0
    with Path(out).open("w", encoding="utf-8") as fh:
        for entry in read_entries(Path(run_dir) / AUDIT_FILE):
            fh.write(jsonio.dumps(entry.to_json(), sort_keys=True) + "\n")
            count += 1
    return count
