"""The append-only, hash-chained, signed audit log of a run (SQLite).

:class:`AuditLog` appends entries (see :mod:`fedfort.audit.chain` for their format) to
``audit.sqlite`` in the run directory. Appends of one round go in one transaction, so a crash
leaves whole rounds. The file refuses ``UPDATE`` and ``DELETE`` on its entries through
triggers, which stops accidents; what stops an attacker with write access to the file is the
chain and the signatures, checked by :func:`fedfort.audit.verify_log`.

The log is signed with the server's *audit key*, an Ed25519 key kept beside the log
(``audit-key.pem``, readable by its owner only, encrypted under ``FEDFORT_KEY_PASSPHRASE`` when
set) or on a PKCS#11 token (:mod:`fedfort.crypto.keystore`) and published as
``audit-key.pub``. It is separate from the server's transport identity key because the two
live differently: the identity key is rotated and deleted for transport security, while the
audit key must keep the whole history verifiable. Rotating the audit key
(:meth:`AuditLog.rotate_key`) writes an entry signed by the old key that names the new one, so
the chain of trust runs back to the first key.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from fedfort.audit.chain import (
    GENESIS,
    AuditEntry,
    canonical_body,
    entry_hash,
    key_id,
    signed_message,
)
from fedfort.audit.head import HEAD_FILE, HEAD_SCHEMA, SignedHead, sign_head, write_head_file
from fedfort.crypto.keystore import KeyStore, open_keystore
from fedfort.crypto.primitives import SigningKey
from fedfort.errors import AuditError, ConfigError

__all__ = [
    "AUDIT_FILE",
    "AUDIT_KEY_FILE",
    "AUDIT_PUBLIC_KEY_FILE",
    "AuditLog",
    "audit_keystore",
    "read_entries",
    "read_snapshot",
    "run_audit_key",
]

AUDIT_FILE = "audit.sqlite"
AUDIT_KEY_NAME = "audit-key"
AUDIT_KEY_FILE = f"{AUDIT_KEY_NAME}.pem"
AUDIT_PUBLIC_KEY_FILE = "audit-key.pub"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    seq INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    round INTEGER,
    body TEXT NOT NULL,
    prev TEXT NOT NULL,
    key TEXT NOT NULL,
    hash TEXT NOT NULL,
    signature TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS entries_append_only_update BEFORE UPDATE ON entries
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS entries_append_only_delete BEFORE DELETE ON entries
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""

_COLUMNS = "seq, ts, kind, round, body, prev, key, hash, signature"


def audit_keystore(run_dir: Path) -> KeyStore:
    """Where the audit key of the run in ``run_dir`` lives: ``audit-key.pem`` in the run
    directory, or a PKCS#11 token when ``FEDFORT_PKCS11_MODULE`` is set (see
    :mod:`fedfort.crypto.keystore`)."""
    return open_keystore(run_dir, suffix=".pem")


def run_audit_key(run_dir: Path, *, create: bool = True) -> SigningKey:
    """The audit key of the run in ``run_dir``, created (with its ``.pub``) on first use.

    With ``create=False`` a missing key raises :class:`~fedfort.errors.ConfigError`.
    """
    store = audit_keystore(run_dir)
    if store.exists(AUDIT_KEY_NAME):
        return store.get(AUDIT_KEY_NAME)
    if not create:
        raise ConfigError(
            f"the audit key {AUDIT_KEY_NAME!r} of {run_dir} is missing: a rollback must be "
            "audited with the run's audit key"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    key = store.generate(AUDIT_KEY_NAME)
    (run_dir / AUDIT_PUBLIC_KEY_FILE).write_text(key.public.hex() + "\n", encoding="ascii")
    return key


def _connect(path: Path) -> sqlite3.Connection:
    # autocommit mode: appends manage their own BEGIN IMMEDIATE ... COMMIT
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30.0)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA + HEAD_SCHEMA)
    except sqlite3.DatabaseError as exc:
        db.close()
        raise AuditError(f"{path} is not a fedfort audit log: {exc}") from exc
    return db


def _entry(row: Sequence[Any]) -> AuditEntry:
    return AuditEntry(
        int(row[0]),
        float(row[1]),
        str(row[2]),
        None if row[3] is None else int(row[3]),
        str(row[4]),
        str(row[5]),
        str(row[6]),
        str(row[7]),
        str(row[8]),
    )


def read_snapshot(path: Path) -> tuple[list[AuditEntry], SignedHead | None]:
    """Every entry and the signed head of the log at ``path``, read in one transaction, so a
    writer appending meanwhile cannot make them disagree (``None``: no head stored)."""
    if not path.exists():
        raise AuditError(f"no audit log at {path}")
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        raise AuditError(f"cannot open the audit log {path}: {exc}") from exc
    try:
        db.execute("BEGIN")
        rows = db.execute(f"SELECT {_COLUMNS} FROM entries ORDER BY seq").fetchall()
        try:
            head = db.execute("SELECT seq, hash, key, signature FROM head WHERE id = 1").fetchone()
        except sqlite3.OperationalError:
            head = None  # no head table at all: reported as a missing head
        db.execute("COMMIT")
    except sqlite3.DatabaseError as exc:
        raise AuditError(f"{path} is not a readable fedfort audit log: {exc}") from exc
    finally:
        db.close()
    signed = None if head is None else SignedHead(int(head[0]), *(str(v) for v in head[1:]))
    return [_entry(r) for r in rows], signed


def read_entries(path: Path) -> Iterator[AuditEntry]:
    """Every entry of the log at ``path`` in ``seq`` order, read-only and unchecked."""
    if not path.exists():
        raise AuditError(f"no audit log at {path}")
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise AuditError(f"cannot open the audit log {path}: {exc}") from exc
    try:
        for row in db.execute(f"SELECT {_COLUMNS} FROM entries ORDER BY seq"):
            yield _entry(row)
    except sqlite3.DatabaseError as exc:
        raise AuditError(f"{path} is not a readable fedfort audit log: {exc}") from exc
    finally:
        db.close()


class AuditLog:
    """Appends signed, chained entries to one run's ``audit.sqlite``; safe across threads.

    It is the one writer of the log: every appender (the round trail, the access auditor, an
    operator's rollback request) goes through :meth:`append_many`, which in the same
    transaction advances the log's signed head (:mod:`fedfort.audit.head`) and then rewrites
    ``audit-head.json`` beside the log.

    Opening an existing log continues its chain; ``key`` must be the key that signed its last
    entry (or the new key named by its last rotation).
    """

    def __init__(self, path: str | Path, key: SigningKey) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.head_path = self.path.parent / HEAD_FILE
        self._signed_head: SignedHead | None = None
        self._key = key
        self._key_id = key_id(key.public)
        self._lock = threading.Lock()
        self._db = _connect(self.path)
        row = self._db.execute(
            "SELECT seq, hash, key FROM entries ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        self._seq, self._prev = (0, GENESIS) if row is None else (int(row[0]), str(row[1]))
        if row is not None and str(row[2]) != self._key_id:
            rotated = self._db.execute(
                "SELECT body FROM entries WHERE seq = ? AND kind = 'audit_key_rotated'",
                (self._seq,),
            ).fetchone()
            if rotated is None or self._key_id not in str(rotated[0]):
                self._db.close()
                raise AuditError(
                    f"{self.path} was last signed by key {row[2]}, not by this key "
                    f"({self._key_id}): open it with the run's audit key"
                )

    @property
    def key_id(self) -> str:
        return self._key_id

    @property
    def public_key(self) -> bytes:
        return self._key.public

    @property
    def head(self) -> tuple[int, str]:
        """``(seq, hash)`` of the last entry (``(0, GENESIS)`` when empty)."""
        with self._lock:
            row = self._db.execute(
                "SELECT seq, hash FROM entries ORDER BY seq DESC LIMIT 1"
            ).fetchone()
        return (0, GENESIS) if row is None else (int(row[0]), str(row[1]))

    def append(self, kind: str, body: dict[str, Any], round_: int | None = None) -> AuditEntry:
        """Append one entry in its own transaction."""
        return self.append_many([(kind, round_, body)])[0]

    def append_many(
        self, items: Sequence[tuple[str, int | None, dict[str, Any]]]
    ) -> list[AuditEntry]:
        """Append ``(kind, round, body)`` entries in one transaction, in order."""
        texts = [(kind, round_, canonical_body(body)) for kind, round_, body in items]
        with self._lock:
            # Chain from the file's head under SQLite's write lock, not from memory: another
            # process holding the key (``fedfort model rollback`` beside a running server) may
            # have appended since.
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(
                    "SELECT seq, hash FROM entries ORDER BY seq DESC LIMIT 1"
                ).fetchone()
                seq, prev = (0, GENESIS) if row is None else (int(row[0]), str(row[1]))
                entries = []
                now = time.time()
                for kind, round_, text in texts:
                    seq += 1
                    digest = entry_hash(seq, now, kind, round_, text, prev, self._key_id)
                    signature = self._key.sign(signed_message(digest)).hex()
                    entries.append(
                        AuditEntry(
                            seq, now, kind, round_, text, prev, self._key_id, digest, signature
                        )
                    )
                    prev = digest
                self._db.executemany(
                    f"INSERT INTO entries ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (e.seq, e.ts, e.kind, e.round, e.body, e.prev, e.key, e.hash, e.signature)
                        for e in entries
                    ],
                )
                head = sign_head(self._key, self._key_id, seq, prev)
                self._db.execute(
                    "INSERT OR REPLACE INTO head (id, seq, hash, key, signature) "
                    "VALUES (1, ?, ?, ?, ?)",
                    (head.seq, head.hash, head.key, head.signature),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._seq, self._prev = seq, prev
            # after the commit: the file is a witness of a prefix the log must contain (a
            # writer in another process may already have moved it further)
            write_head_file(self.head_path, head)
            self._signed_head = head
            return entries

    @property
    def signed_head(self) -> SignedHead | None:
        """The signed head written by this writer's last append (``None`` before one)."""
        return self._signed_head

    def rotate_key(self, new_key: SigningKey, reason: str = "scheduled rotation") -> AuditEntry:
        """Hand the log to ``new_key``: an entry signed by the current key names it."""
        entry = self.append(
            "audit_key_rotated",
            {
                "new_key": key_id(new_key.public),
                "new_public_key": new_key.public.hex(),
                "reason": reason,
            },
        )
        with self._lock:
            self._key, self._key_id = new_key, key_id(new_key.public)
        return entry

    def entries(self) -> list[AuditEntry]:
        """Every entry so far, oldest first."""
        return list(read_entries(self.path))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
