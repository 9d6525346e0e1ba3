"""Checking an audit log: the chain, the signatures, the signed head and what the run's
checkpoints witnessed.

:func:`verify_log` walks the entries in order and stops at the first one that is wrong,
naming it and saying why:

- its position is not the next one (an entry before it was deleted, or the log reordered);
- its content does not hash to its stored hash (it was edited);
- its ``prev`` is not the hash of the entry before it (an entry was inserted, deleted or moved);
- it is signed by a key other than the log's key at that point (the first key is the pinned
  public key an auditor holds; later keys are introduced only by ``audit_key_rotated`` entries
  signed by their predecessor), or its signature does not verify.

Removing entries from the end leaves a valid, shorter chain, so :func:`verify_run` also checks
the log against witnesses outside the chain:

- the *signed head* (:mod:`fedfort.audit.head`) in ``audit.sqlite`` must exist, verify under
  the key that signed its entry, and name the log's last entry exactly; the copy in
  ``audit-head.json`` must exist, verify, and name an entry the log holds;
- the head recorded in the run's checkpoint database and every committed model version there
  must appear in the log with the same hash, and every model version the log records must
  still have its checkpoint (a deleted row would let a resume restart before it);
- a head exported earlier (``fedfort audit verify --head``) must name an entry the log holds:
  the only witness that survives an attacker who rewrites the whole run directory with an
  older signed head they kept.
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
from fedfort.audit.head import HEAD_FILE, SignedHead, read_head_file
from fedfort.audit.log import AUDIT_FILE, AUDIT_PUBLIC_KEY_FILE, read_entries, read_snapshot
from fedfort.crypto.primitives import verify
from fedfort.errors import AuditError

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
    entries: Iterable[AuditEntry], public_key: bytes, publics: dict[str, bytes] | None = None
) -> tuple[int, int, str, list[str], AuditEntry | None, int | None, str | None]:
    """Walk the chain; return counts, head, keys seen, and (entry, seq, problem) of a failure.

    ``publics`` (when given) receives every key of the chain by id.
    """
    current = key_id(public_key)
    public = public_key
    keys = [current]
    publics = {} if publics is None else publics
    publics[current] = public
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
            publics[current] = public
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


def _checkpoint_config(run_dir: Path) -> dict[str, Any] | None:
    """The configuration stored in the run's checkpoints (``None`` when there is none)."""
    path = run_dir / "checkpoints.sqlite"
    if not path.exists():
        return None
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            row = db.execute("SELECT value FROM meta WHERE key = 'config'").fetchone()
        finally:
            db.close()
        return None if row is None else dict(json.loads(row[0]))
    except (sqlite3.Error, ValueError, TypeError) as exc:
        raise AuditError(f"cannot read the configuration in {path}: {exc}") from exc


def _config_problem(run_dir: Path, start: AuditEntry) -> str | None:
    """Why the checkpoints' configuration is not the one ``run_start`` records, if it is not."""
    from fedfort.config import config_differences, parse_config

    logged = start.data
    stored = _checkpoint_config(run_dir)
    if stored is None or "config_identity" not in logged:
        return None  # no checkpoints, or a log from before config identities
    if parse_config(stored).config_identity() == logged["config_identity"]:
        return None
    differing = config_differences(logged.get("config", {}), stored)
    return (
        "the configuration in the run's checkpoints is not the one the run started with "
        f"(differs in: {', '.join(differing) or 'its identity'}): checkpoints.sqlite was edited"
    )


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


def _failed(
    result: AuditVerification, seq: int, kind: str | None, problem: str
) -> AuditVerification:
    return AuditVerification(
        False,
        result.entries,
        result.head_seq,
        result.head_hash,
        seq,
        kind,
        problem,
        result.keys,
    )


def _head_problem(
    head: SignedHead,
    what: str,
    entries: dict[int, AuditEntry],
    publics: dict[str, bytes],
    last: int,
    *,
    exact: bool,
) -> tuple[int, str] | None:
    """``(seq, problem)`` when ``head`` does not verify or the log does not reach it."""
    public = publics.get(head.key)
    if public is None or not head.verifies(public):
        signer = "a key that is not the log's" if public is None else f"key {head.key}"
        return head.seq, (
            f"the {what} (entry {head.seq}) is not signed by the audit key: its signature "
            f"does not verify under {signer}; it was written by someone without the key"
        )
    if head.seq > last:
        return last + 1, (
            f"the log ends at entry {last}, but the {what} names entry {head.seq}: entries "
            f"{last + 1}..{head.seq} were removed"
        )
    entry = entries.get(head.seq)
    if entry is None or entry.hash != head.hash:
        return head.seq, f"its hash differs from the {what} {head.hash}"
    if entry.key != head.key:
        return (
            head.seq,
            f"the {what} names key {head.key}, but entry {head.seq} is signed by {entry.key}",
        )
    if exact and head.seq != last:
        return head.seq + 1, (
            f"the log goes on past its {what} (entry {head.seq}): entries "
            f"{head.seq + 1}..{last} were added without a signed head"
        )
    return None


def verify_run(
    run_dir: str | Path,
    *,
    public_key: bytes | None = None,
    head: tuple[int, str] | SignedHead | None = None,
    unaudited_round: int | None = None,
) -> AuditVerification:
    """Verify the audit log of the run in ``run_dir``.

    ``unaudited_round`` (a resume recovering from a crash between a round's checkpoint and its
    audit entries) is a committed round the log may lack; everything else is checked.

    The pinned key is ``public_key`` or the run's ``audit-key.pub``. Witnesses: the signed head
    in ``audit.sqlite`` (required, the log must end exactly there) and in ``audit-head.json``
    (required, the log must hold it), the head recorded in the run's checkpoints with every
    committed model version there, and ``head``, a head exported earlier (``SEQ:HASH`` or a
    whole signed head), which the log must hold.
    """
    run_dir = Path(run_dir)
    if public_key is None:
        public_key = load_public_key(run_dir / AUDIT_PUBLIC_KEY_FILE)
    recorded, rounds = _checkpoint_witness(run_dir)
    exported = (head.seq, head.hash) if isinstance(head, SignedHead) else head
    path = run_dir / AUDIT_FILE
    result = verify_log(path, public_key, witness=recorded)
    if result.ok and exported is not None and exported != recorded:
        result = verify_log(path, public_key, witness=exported)
    if not result.ok:
        return result
    logged = {
        e.round: str(e.data.get("sha256"))
        for e in read_entries(path)
        if e.kind == "model_version" and e.round is not None
    }
    for round_, digest in sorted(rounds.items()):
        if round_ == unaudited_round and round_ not in logged:
            continue
        if logged.get(round_) != digest:
            problem = f"round {round_} was committed with model {digest[:16]}..., but the log " + (
                "has no model_version entry for it"
                if round_ not in logged
                else f"records {logged[round_][:16]}..."
            )
            return _failed(result, result.head_seq + 1, "model_version", problem)
    # every committed round is checkpointed before it is audited, so a logged round without
    # its row was deleted: the last one (the run would resume before it), a middle one, or all
    # of them (the run would resume from round 0)
    gone = sorted(set(logged) - set(rounds)) if (run_dir / "checkpoints.sqlite").exists() else []
    if gone:
        seq = next(
            e.seq for e in read_entries(path) if e.kind == "model_version" and e.round == gone[0]
        )
        kept = f"end at round {max(rounds)}" if rounds else "hold no committed round"
        problem = (
            f"the log records round {gone[0]}, but the run's checkpoints {kept} and lack "
            f"{len(gone)} logged round(s): the checkpoint of round {gone[0]} was deleted"
        )
        return _failed(result, seq, "model_version", problem)
    start = next(read_entries(path))
    config_problem = _config_problem(run_dir, start)
    if config_problem is not None:
        return _failed(result, start.seq, start.kind, config_problem)
    return _check_heads(run_dir, public_key, result, head if isinstance(head, SignedHead) else None)


def _check_heads(
    run_dir: Path, public_key: bytes, result: AuditVerification, exported: SignedHead | None
) -> AuditVerification:
    """The signed heads in ``audit.sqlite``, ``audit-head.json`` and an exported one.

    The file is read first and the log's entries and head in one transaction after it: the
    file is written after its head's commit, so a writer appending meanwhile (a live run)
    cannot make the copies disagree.
    """
    path = run_dir / AUDIT_FILE
    in_file = read_head_file(run_dir / HEAD_FILE)
    snapshot, in_db = read_snapshot(path)
    publics: dict[str, bytes] = {}
    count, last, digest, keys, bad, bad_seq, problem = _check(snapshot, public_key, publics)
    current = AuditVerification(True, count, last, digest, keys=keys)
    if bad_seq is not None:
        return _failed(current, bad_seq, None if bad is None else bad.kind, str(problem))
    entries = {e.seq: e for e in snapshot}
    heads: list[tuple[str, SignedHead | None, bool]] = [
        (f"signed head in {AUDIT_FILE}", in_db, True),
        (f"signed head in {HEAD_FILE}", in_file, False),
    ]
    if exported is not None:
        heads.append(("exported head", exported, False))
    for what, signed, exact in heads:
        if signed is None:
            problem = (
                f"the {what} is missing: it was deleted, so a cut at the end of the log could "
                "not be seen; verify with a head exported earlier (--head)"
            )
            return _failed(current, last + 1, None, problem)
        found = _head_problem(signed, what, entries, publics, last, exact=exact)
        if found is not None:
            seq, problem = found
            entry = entries.get(seq)
            return _failed(current, seq, None if entry is None else entry.kind, problem)
    return current


def export_jsonl(run_dir: str | Path, out: str | Path) -> int:
    """Write every entry of the run's audit log as one JSON object per line; return the count."""
    count = 0
    with Path(out).open("w", encoding="utf-8") as fh:
        for entry in read_entries(Path(run_dir) / AUDIT_FILE):
            fh.write(jsonio.dumps(entry.to_json(), sort_keys=True) + "\n")
            count += 1
    return count
