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
"""

from __future__ import annotations

import hashlib
import io
import json
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedfort import jsonio
from fedfort.crypto.primitives import SigningKey, verify
from fedfort.errors import CheckpointError
from fedfort.params import vector_sha256

__all__ = ["RUN_NONCE_META", "Checkpoint", "CheckpointStore", "pack_state", "unpack_state"]

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
_ROW_COLUMNS = (
    "round, created, model, model_sha256, state_json, state_arrays, record_json, signature"
)


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


def _array_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def _bytes_array(blob: bytes) -> np.ndarray:
    return np.load(io.BytesIO(blob), allow_pickle=False)  # type: ignore[no-any-return]


def pack_state(tree: Any) -> tuple[str, bytes]:
    """Split a state tree into JSON text and one ``.npz`` blob holding its arrays."""
    arrays: dict[str, np.ndarray] = {}

    def walk(node: Any) -> Any:
        if isinstance(node, np.ndarray):
            if node.dtype.hasobject:
                raise CheckpointError("object arrays cannot be stored in a checkpoint")
            key = f"a{len(arrays)}"
            arrays[key] = node
            return {"__array__": key}
        if isinstance(node, dict):
            if not all(isinstance(k, str) for k in node):
                raise CheckpointError("state dictionaries must have string keys")
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list | tuple):
            return [walk(v) for v in node]
        if isinstance(node, np.generic):
            return node.item()
        if node is None or isinstance(node, bool | int | float | str):
            return node
        raise CheckpointError(f"cannot store a {type(node).__name__} in a checkpoint")

    text = jsonio.dumps(walk(tree), sort_keys=True)
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    return text, buf.getvalue()


def unpack_state(text: str, blob: bytes) -> Any:
    """Inverse of :func:`pack_state`."""
    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if set(node) == {"__array__"}:
                return arrays[node["__array__"]]
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(json.loads(text))


@dataclass(frozen=True)
class Checkpoint:
    """One committed round as read back from the store."""

    round: int
    model: np.ndarray
    model_sha256: str
    state: dict[str, Any]
    record: dict[str, Any]


class CheckpointStore:
    """A run's checkpoints in one SQLite file, signed and verified with ``key`` when given.

    With ``key`` (the run's audit key) every write is signed and :meth:`load`,
    :meth:`verified_meta` and :meth:`verify_all` refuse anything whose signature is missing or
    wrong; without it rows are written unsigned and only model hashes are checked.
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
                columns = {r[1] for r in self._db.execute(f"PRAGMA table_info({table})")}
                if "signature" not in columns:  # a store written before signatures
                    with self._db:
                        self._db.execute(f"ALTER TABLE {table} ADD COLUMN signature TEXT")
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise CheckpointError(
                f"{self.path} is not a fedfort checkpoint database: {exc}"
            ) from exc
        self._nonce = ""
        if key is not None:
            try:
                if self.get_meta(RUN_NONCE_META) is None and self.latest_round() is None:
                    self.set_meta(RUN_NONCE_META, secrets.token_hex(16))
                self._nonce = self.verified_meta(RUN_NONCE_META)
            except CheckpointError:
                self._db.close()
                raise

    @property
    def signed(self) -> bool:
        """Whether this store signs its writes and verifies its reads."""
        return self._key is not None

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> CheckpointStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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

    def verified_meta(self, key: str, *, required: bool = True) -> str:
        """The value under ``key`` after checking its signature with the store's key.

        A missing value (when ``required``), a missing or wrong signature raise
        :class:`~fedfort.errors.CheckpointError`; an absent optional value gives ``""``.
        """
        if self._key is None:
            raise CheckpointError("verifying a checkpoint needs the run's audit key")
        row = self._db.execute("SELECT value, signature FROM meta WHERE key = ?", (key,)).fetchone()
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

    def delete_meta(self, key: str) -> None:
        with self._db:
            self._db.execute("DELETE FROM meta WHERE key = ?", (key,))

    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

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
                f"INSERT OR REPLACE INTO checkpoints ({_ROW_COLUMNS}) VALUES "
                "(?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    round_,
                    created,
                    _array_bytes(np.ascontiguousarray(model, dtype=np.float32)),
                    digest,
                    text,
                    blob,
                    record_json,
                    signature,
                ),
            )
        return digest

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
            f"SELECT {_ROW_COLUMNS} FROM checkpoints WHERE round = ?", (round_,)
        ).fetchone()
        if row is None:
            raise CheckpointError(f"{self.path} has no checkpoint for round {round_}")
        _, created, model_blob, model_sha256, state_json, state_arrays, record_json, sig = row
        try:
            model = _bytes_array(model_blob).astype(np.float32, copy=False)
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

    def versions(self) -> list[tuple[int, float, str, dict[str, Any]]]:
        """``(round, created, model_sha256, record)`` of every checkpoint, oldest first."""
        rows = self._db.execute(
            "SELECT round, created, model_sha256, record_json FROM checkpoints ORDER BY round"
        )
        return [(int(r), float(c), str(h), json.loads(t)) for r, c, h, t in rows]

    def records(self) -> list[dict[str, Any]]:
        """Round records of every committed round, oldest first."""
        rows = self._db.execute("SELECT record_json FROM checkpoints ORDER BY round")
        return [json.loads(r[0]) for r in rows]
