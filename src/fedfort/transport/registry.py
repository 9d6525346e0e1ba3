"""The server's registry of enrolled identities, in SQLite.

One row per subject (a client id, or ``"server"``) holds its current
:class:`~fedfort.transport.identity.IdentityBinding`. A binding only ever replaces one of a
lower version, so a rotated-out key cannot come back, and the registry survives a server
restart (clients need not enroll again). The ``meta`` table holds the server key's version,
which ``fedfort keys rotate --server`` bumps while the server runs.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from fedfort.errors import ConfigError, Refused
from fedfort.transport.proto import fedfort_pb2 as pb

__all__ = ["Registry"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS bindings (
    subject TEXT PRIMARY KEY, version INTEGER NOT NULL, binding BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class Registry:
    """Enrolled identity bindings by subject (thread-safe, one SQLite file)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=10.0)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise ConfigError(f"{self.path} is not a fedfort registry: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def get(self, subject: str) -> pb.IdentityBinding | None:
        with self._lock:
            row = self._db.execute(
                "SELECT binding FROM bindings WHERE subject = ?", (subject,)
            ).fetchone()
        if row is None:
            return None
        return pb.IdentityBinding.FromString(bytes(row[0]))

    def put(self, binding: pb.IdentityBinding) -> bool:
        """Store ``binding``; False if the same one is already there.

        Raises :class:`Refused` (``stale_key_version``) for a different binding whose version
        is not higher than the stored one.
        """
        blob = binding.SerializeToString(deterministic=True)
        with self._lock, self._db:
            row = self._db.execute(
                "SELECT version, binding FROM bindings WHERE subject = ?", (binding.subject,)
            ).fetchone()
            if row is not None:
                if bytes(row[1]) == blob:
                    return False
                if binding.version <= int(row[0]):
                    raise Refused(
                        "stale_key_version",
                        f"{binding.subject!r} already holds key version {row[0]}; a rotation "
                        f"needs a higher version than {binding.version}",
                    )
            self._db.execute(
                "INSERT OR REPLACE INTO bindings VALUES (?, ?, ?)",
                (binding.subject, binding.version, blob),
            )
        return True

    def all(self) -> dict[str, pb.IdentityBinding]:
        with self._lock:
            rows = self._db.execute("SELECT subject, binding FROM bindings").fetchall()
        return {str(s): pb.IdentityBinding.FromString(bytes(b)) for s, b in rows}

    def get_meta(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        with self._lock, self._db:
            self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))
