"""Checkpoints in SQLite: every committed round's model and the state to resume from it.

One row per committed round holds the global model vector (with its SHA-256), the engine state
(round counter, RNG state, server optimizer and stage states, client states in simulation) and
the round record. Writes are single transactions, so a crash leaves the last committed round
intact. Nothing is pickled: arrays are stored with ``numpy.save(allow_pickle=False)`` and the
rest as JSON, so opening a checkpoint cannot run code.
"""

from __future__ import annotations

import io
import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedfort import jsonio
from fedfort.errors import CheckpointError
from fedfort.params import vector_sha256

__all__ = ["Checkpoint", "CheckpointStore", "pack_state", "unpack_state"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoints (
    round INTEGER PRIMARY KEY,
    created REAL NOT NULL,
    model BLOB NOT NULL,
    model_sha256 TEXT NOT NULL,
    state_json TEXT NOT NULL,
    state_arrays BLOB NOT NULL,
    record_json TEXT NOT NULL
);
"""


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
    """A run's checkpoints in one SQLite file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # one writer at a time (the engine), possibly not the thread that opened the store
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise CheckpointError(
                f"{self.path} is not a fedfort checkpoint database: {exc}"
            ) from exc

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> CheckpointStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def set_meta(self, key: str, value: str) -> None:
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

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
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO checkpoints VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    round_,
                    time.time(),
                    _array_bytes(np.ascontiguousarray(model, dtype=np.float32)),
                    digest,
                    text,
                    blob,
                    jsonio.dumps(record, sort_keys=True, non_finite="null"),
                ),
            )
        return digest

    def rounds(self) -> list[int]:
        return [int(r[0]) for r in self._db.execute("SELECT round FROM checkpoints ORDER BY round")]

    def latest_round(self) -> int | None:
        row = self._db.execute("SELECT MAX(round) FROM checkpoints").fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def load(self, round_: int | None = None) -> Checkpoint:
        """Read round ``round_`` (the latest if ``None``) and verify the model hash."""
        if round_ is None:
            round_ = self.latest_round()
            if round_ is None:
                raise CheckpointError(f"{self.path} holds no committed round to resume from")
        row = self._db.execute(
            "SELECT model, model_sha256, state_json, state_arrays, record_json "
            "FROM checkpoints WHERE round = ?",
            (round_,),
        ).fetchone()
        if row is None:
            raise CheckpointError(f"{self.path} has no checkpoint for round {round_}")
        try:
            model = _bytes_array(row[0]).astype(np.float32, copy=False)
            state = unpack_state(row[2], row[3])
            record = json.loads(row[4])
        except (ValueError, KeyError, OSError) as exc:
            raise CheckpointError(f"checkpoint of round {round_} is corrupt: {exc}") from exc
        if vector_sha256(model) != row[1]:
            raise CheckpointError(
                f"checkpoint of round {round_} fails its SHA-256 check: the file was altered"
            )
        return Checkpoint(round_, model, str(row[1]), state, record)

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
