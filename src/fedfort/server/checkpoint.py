"""Checkpoints in SQLite: every committed round's model and the state to resume from it.

One row per committed round holds the global model vector (with its SHA-256), the engine state
(round counter, RNG state, server optimizer and stage states, client states in simulation) and
the round record. Writes are single transactions, so a crash leaves the last committed round
intact. Nothing is pickled: arrays are stored with ``numpy.save(allow_pickle=False)`` and the
rest as JSON, so opening a checkpoint cannot run code.

**Authenticated.** A store opened with the run's audit key (:func:`fedfort.audit.run_audit_key`,
an Ed25519 key in a key file or on a PKCS#11 token) signs every row and every meta value it
writes, and verifies them when it reads them: a row's signature covers its round, time, model
hash and the SHA-256 of its state and record; a meta value's covers its name and value. Both
also cover the run's random ``run_nonce``, so a row signed for another run under the same key
(one token serving several runs) is refused. Resume opens the store with that key and checks
with its public part, so whoever can rewrite ``checkpoints.sqlite`` but does not hold the key
(an encrypted key file, a token) cannot poison the model, switch a defence or repoint
``[access]`` without the resume refusing. This is the integrity half of a MAC-or-sign
checkpoint, as in Schneier and Kelsey's authenticated logs (ACM TISSEC 1999); a reader without
the key (``fedfort model list``) still checks the model hashes only.

**One reader of the schema.** This module is the only one that knows the tables and columns.
:class:`CheckpointStore` writes them; :class:`CheckpointReader` opens the file read-only, so
it works while the run is writing (SQLite WAL readers do not block the writer) and from another
process, and verifies exactly as the store does. Everything else that reads a run's
checkpoints (the model registry behind ``fedfort model``, the run state behind the dashboard
and the compliance report) calls the reader. How arrays and state trees are encoded lives in
:mod:`fedfort.server.checkpoint_codec`.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import numpy as np

from fedfort import jsonio
from fedfort.crypto.primitives import SigningKey, verify
from fedfort.errors import CheckpointError
from fedfort.params import vector_sha256
from fedfort.server.checkpoint_codec import decode_array, encode_array, pack_state, unpack_state

__all__ = [
    "RUN_NONCE_META",
    "Checkpoint",
    "CheckpointReader",
    "CheckpointSnapshot",
    "CheckpointStore",
    "VersionRow",
]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL, signature TEXT);
CREATE TABLE IF NOT EXISTS checkpoints (
    round INTEGER PRIMARY KEY,
    created REAL NOT NULL,
    model BLOB NOT NULL,
    model_sha256 TEXT NOT NULL,
    state_json TEXT NOT NULL,
    state_arrays BLOB NOT NULL,
    record_json TEXT NOT NULL,
    signature TEXT
);
"""

#: meta key of the run's random id, bound into every signature of its store
RUN_NONCE_META = "run_nonce"
_ROW_DOMAIN = b"fedfort-checkpoint-v1\n"
_META_DOMAIN = b"fedfort-checkpoint-meta-v1\n"


def _sha256(data: str | bytes) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def _row_message(
    nonce: str,
    round_: int,
    created: float,
    model_sha256: str,
    state_json: str,
    state_arrays: bytes,
    record_json: str,
) -> bytes:
    fields = [
        nonce,
        round_,
        repr(float(created)),
        model_sha256,
        _sha256(state_json),
        _sha256(state_arrays),
        _sha256(record_json),
    ]
    return _ROW_DOMAIN + jsonio.dumps(fields, separators=(",", ":")).encode()


def _meta_message(nonce: str, key: str, value: str) -> bytes:
    return _META_DOMAIN + jsonio.dumps([nonce, key, value], separators=(",", ":")).encode()


@dataclass(frozen=True)
class Checkpoint:
    """One committed round as read back from the store."""

    round: int
    model: np.ndarray
    model_sha256: str
    state: dict[str, Any]
    record: dict[str, Any]


#: ``(round, created, model_sha256, record)`` of one checkpoint, as listed without its model
VersionRow = tuple[int, float, str, dict[str, Any]]


@dataclass(frozen=True)
class CheckpointSnapshot:
    """What a live view of a run needs, read in one read transaction.

    ``meta`` holds every meta value (unverified), ``versions`` every checkpoint's
    :data:`VersionRow` oldest first, and ``latest_state`` the JSON part of the latest engine
    state (``{}`` before the first commit): its arrays (optimizer moments...) are not unpacked.
    """

    meta: dict[str, str] = field(default_factory=dict)
    versions: list[VersionRow] = field(default_factory=list)
    latest_state: dict[str, Any] = field(default_factory=dict)


class CheckpointReader:
    """A run's checkpoint file opened read-only; verified with ``key`` when given.

    :meth:`load` checks the model hash and, with ``key`` (the run's audit key), the row's
    signature; :meth:`verified_meta` checks a meta value's; :meth:`versions`, :meth:`records`
    and :meth:`snapshot` list without verifying, as the store does. A file written before
    signatures (no ``signature`` column) reads as unsigned. Opening a missing file, or one that
    is not a checkpoint database, raises :class:`~fedfort.errors.CheckpointError`. With
    ``leave_no_files`` a run no process is writing is read without SQLite creating its
    ``-wal`` and ``-shm`` files beside the database (reading a finished run leaves it as it was).
    """

    def __init__(
        self, path: str | Path, key: SigningKey | None = None, *, leave_no_files: bool = False
    ) -> None:
        self.path = Path(path)
        self._key = key
        if not self.path.exists():
            raise CheckpointError(
                f"{self.path.parent} is not a fedfort run: {self.path.name} is missing"
            )
        uri = f"file:{self.path}?mode=ro"
        if leave_no_files and not self.path.with_name(f"{self.path.name}-wal").exists():
            # no process has the file open for writing (its WAL would exist): read it as it is,
            # without SQLite's -wal and -shm files appearing beside it
            uri += "&immutable=1"
        try:
            db = sqlite3.connect(uri, uri=True, check_same_thread=False)
        except sqlite3.Error as exc:
            raise CheckpointError(f"cannot open {self.path}: {exc}") from exc
        self._db = db
        try:
            columns = {table: self._columns(table) for table in ("meta", "checkpoints")}
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise CheckpointError(
                f"{self.path} is not a fedfort checkpoint database: {exc}"
            ) from exc
        missing = [table for table, names in columns.items() if not names]
        if missing:
            self._db.close()
            raise CheckpointError(
                f"{self.path} is not a fedfort checkpoint database: it has no "
                f"{' or '.join(missing)} table (is the run still starting?)"
            )
        # a store written before signatures has no signature column: its rows read unsigned
        self._meta_signature = "signature" if "signature" in columns["meta"] else "NULL"
        self._row_signature = "signature" if "signature" in columns["checkpoints"] else "NULL"
        self._nonce = ""
        if key is not None:
            try:
                self._nonce = self.verified_meta(RUN_NONCE_META)
            except CheckpointError:
                self._db.close()
                raise

    def _columns(self, table: str) -> set[str]:
        return {str(r[1]) for r in self._db.execute(f"PRAGMA table_info({table})")}

    @property
    def signed(self) -> bool:
        """Whether reads are verified (and a store's writes signed) with the run's audit key."""
        return self._key is not None

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get_meta(self, key: str) -> str | None:
        """The value under ``key``, unverified (``None`` when absent)."""
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def verified_meta(self, key: str, *, required: bool = True) -> str:
        """The value under ``key`` after checking its signature with the store's key.

        A missing value (when ``required``), a missing or wrong signature raise
        :class:`~fedfort.errors.CheckpointError`; an absent optional value gives ``""``.
        """
        if self._key is None:
            raise CheckpointError("verifying a checkpoint needs the run's audit key")
        row = self._db.execute(
            f"SELECT value, {self._meta_signature} FROM meta WHERE key = ?", (key,)
        ).fetchone()
        if row is None:
            if required:
                raise CheckpointError(
                    f"{self.path} has no signed {key!r}: it was written without signatures (by "
                    "an older fedfort) or altered; do not resume from it"
                )
            return ""
        value, signature = str(row[0]), row[1]
        nonce = "" if key == RUN_NONCE_META else self._nonce
        if not self._verifies(signature, _meta_message(nonce, key, value)):
            raise CheckpointError(
                f"the checkpoint's {key!r} of {self.path} "
                + ("is not signed" if signature is None else "fails its signature check")
                + " under the run's audit key: it was altered or written without the key; do "
                "not resume from it (restore the run directory from a trusted copy)"
            )
        return value

    def _verifies(self, signature: object, message: bytes) -> bool:
        assert self._key is not None
        try:
            raw = bytes.fromhex(str(signature)) if signature is not None else b""
        except ValueError:
            return False
        return verify(self._key.public, raw, message)

    def rounds(self) -> list[int]:
        return [int(r[0]) for r in self._db.execute("SELECT round FROM checkpoints ORDER BY round")]

    def latest_round(self) -> int | None:
        row = self._db.execute("SELECT MAX(round) FROM checkpoints").fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def load(self, round_: int | None = None) -> Checkpoint:
        """Read round ``round_`` (the latest if ``None``); verify the model hash and, when the
        store has a key, the row's signature."""
        if round_ is None:
            round_ = self.latest_round()
            if round_ is None:
                raise CheckpointError(f"{self.path} holds no committed round to resume from")
        row = self._db.execute(
            "SELECT round, created, model, model_sha256, state_json, state_arrays, record_json, "
            f"{self._row_signature} FROM checkpoints WHERE round = ?",
            (round_,),
        ).fetchone()
        if row is None:
            raise CheckpointError(f"{self.path} has no checkpoint for round {round_}")
        _, created, model_blob, model_sha256, state_json, state_arrays, record_json, sig = row
        try:
            model = decode_array(model_blob).astype(np.float32, copy=False)
            state = unpack_state(state_json, state_arrays)
            record = json.loads(record_json)
        except (ValueError, KeyError, OSError) as exc:
            raise CheckpointError(f"checkpoint of round {round_} is corrupt: {exc}") from exc
        if vector_sha256(model) != model_sha256:
            raise CheckpointError(
                f"checkpoint of round {round_} fails its SHA-256 check: the file was altered"
            )
        if self._key is not None:
            message = _row_message(
                self._nonce,
                round_,
                float(created),
                str(model_sha256),
                str(state_json),
                bytes(state_arrays),
                str(record_json),
            )
            if not self._verifies(sig, message):
                raise CheckpointError(
                    f"checkpoint of round {round_} in {self.path} "
                    + ("is not signed" if sig is None else "fails its signature check")
                    + " under the run's audit key: its model, state or record was altered (a "
                    "recomputed SHA-256 does not help without the key); do not resume from it"
                )
        return Checkpoint(round_, model, str(model_sha256), state, record)

    def verify_all(self) -> int:
        """Load (and so verify) every checkpoint; return how many there are."""
        rounds = self.rounds()
        for round_ in rounds:
            self.load(round_)
        return len(rounds)

    def versions(self) -> list[VersionRow]:
        """``(round, created, model_sha256, record)`` of every checkpoint, oldest first."""
        rows = self._db.execute(
            "SELECT round, created, model_sha256, record_json FROM checkpoints ORDER BY round"
        )
        return [(int(r), float(c), str(h), json.loads(t)) for r, c, h, t in rows]

    def records(self) -> list[dict[str, Any]]:
        """Round records of every committed round, oldest first."""
        rows = self._db.execute("SELECT record_json FROM checkpoints ORDER BY round")
        return [json.loads(r[0]) for r in rows]

    def snapshot(self) -> CheckpointSnapshot:
        """Meta, every :data:`VersionRow` and the latest state's JSON, in one read transaction,
        so a live run's rounds are never mixed across commits (see :class:`CheckpointSnapshot`).

        An unreadable row raises :class:`~fedfort.errors.CheckpointError`.
        """
        try:
            self._db.execute("BEGIN")
            try:
                meta = {str(k): str(v) for k, v in self._db.execute("SELECT key, value FROM meta")}
                versions = self.versions()
                latest = self._db.execute(
                    "SELECT state_json FROM checkpoints ORDER BY round DESC LIMIT 1"
                ).fetchone()
                self._db.execute("COMMIT")
            finally:
                if self._db.in_transaction:
                    self._db.rollback()
            state = json.loads(latest[0]) if latest is not None else {}
        except (sqlite3.Error, ValueError) as exc:
            raise CheckpointError(f"cannot read the checkpoints in {self.path}: {exc}") from exc
        return CheckpointSnapshot(meta, versions, state if isinstance(state, dict) else {})


class CheckpointStore(CheckpointReader):
    """A run's checkpoints in one SQLite file, signed and verified with ``key`` when given.

    With ``key`` (the run's audit key) every write is signed and :meth:`load`,
    :meth:`verified_meta` and :meth:`verify_all` refuse anything whose signature is missing or
    wrong; without it rows are written unsigned and only model hashes are checked. The file is
    created (and a store written before signatures gains its ``signature`` columns) on open.
    """

    def __init__(self, path: str | Path, key: SigningKey | None = None) -> None:
        self.path = Path(path)
        self._key = key
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # one writer at a time (the engine), possibly not the thread that opened the store
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            for table in ("meta", "checkpoints"):
                if "signature" not in self._columns(table):  # a store written before signatures
                    with self._db:
                        self._db.execute(f"ALTER TABLE {table} ADD COLUMN signature TEXT")
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise CheckpointError(
                f"{self.path} is not a fedfort checkpoint database: {exc}"
            ) from exc
        self._meta_signature = self._row_signature = "signature"
        self._nonce = ""
        if key is not None:
            try:
                if self.get_meta(RUN_NONCE_META) is None and self.latest_round() is None:
                    self.set_meta(RUN_NONCE_META, secrets.token_hex(16))
                self._nonce = self.verified_meta(RUN_NONCE_META)
            except CheckpointError:
                self._db.close()
                raise

    def set_meta(self, key: str, value: str) -> None:
        """Store ``value`` under ``key`` (signed when the store has a key)."""
        signature = None
        if self._key is not None:
            nonce = "" if key == RUN_NONCE_META else self._nonce
            signature = self._key.sign(_meta_message(nonce, key, value)).hex()
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO meta (key, value, signature) VALUES (?, ?, ?)",
                (key, value, signature),
            )

    def delete_meta(self, key: str) -> None:
        with self._db:
            self._db.execute("DELETE FROM meta WHERE key = ?", (key,))

    def save(
        self, round_: int, model: np.ndarray, state: dict[str, Any], record: dict[str, Any]
    ) -> str:
        """Write round ``round_`` in one transaction; return the model's SHA-256."""
        digest = vector_sha256(model)
        text, blob = pack_state(state)
        created = time.time()
        record_json = jsonio.dumps(record, sort_keys=True, non_finite="null")
        signature = None
        if self._key is not None:
            message = _row_message(self._nonce, round_, created, digest, text, blob, record_json)
            signature = self._key.sign(message).hex()
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO checkpoints (round, created, model, model_sha256, "
                "state_json, state_arrays, record_json, signature) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    round_,
                    created,
                    encode_array(np.ascontiguousarray(model, dtype=np.float32)),
                    digest,
                    text,
                    blob,
                    record_json,
                    signature,
                ),
            )
        return digest
