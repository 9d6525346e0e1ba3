"""Scoped bearer tokens for operators, auditors, viewers and tools such as Prometheus.

A token is ``fft_<id>_<secret>``: a public 12-hex-digit id (to find the row and to name the
token in the audit log) and a 256-bit secret from :mod:`secrets`. :class:`TokenStore` keeps, in
SQLite, only the SHA-256 of the whole token with its role, optional scopes (a subset of the
role's actions, e.g. ``metrics.read`` alone for a Prometheus token), expiry and revocation time;
the token itself is shown once, when issued, and never stored or logged. Checking compares
digests in constant time (:func:`hmac.compare_digest`).

What this defends against: a leaked token store does not yield usable tokens (a 256-bit secret
cannot be recovered from its hash, so no salt or slow hash is needed, unlike passwords: see
NIST SP 800-63B 5.1.1.2 on memorized secrets versus high-entropy authenticators); timing does
not reveal how much of a guessed token was right; a stolen token stops working when revoked or
expired; a token limited by scopes cannot be used beyond them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from fedfort import jsonio
from fedfort.access.roles import PERMISSIONS, ROLES, role_actions
from fedfort.errors import AccessDenied, ConfigError

__all__ = ["TOKEN_PREFIX", "TokenInfo", "TokenStore", "parse_duration"]

TOKEN_PREFIX: Final = "fft_"
_TOKEN_RE: Final = re.compile(r"^fft_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
_NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
#: the longest a token may live
MAX_TTL_S: Final = 366 * 86400.0
_DUMMY_DIGEST: Final = hashlib.sha256(b"no such token").hexdigest()

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    scopes TEXT,
    created REAL NOT NULL,
    expires REAL NOT NULL,
    revoked REAL,
    sha256 TEXT NOT NULL
);
"""


def parse_duration(text: str) -> float:
    """``90d``, ``12h``, ``30m`` or ``45s`` as seconds (a bare number is seconds)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([dhms]?)\s*", str(text))
    if match is None:
        raise ConfigError(f"a duration is a number with d, h, m or s (e.g. 90d), got {text!r}")
    value = float(match.group(1)) * {"d": 86400, "h": 3600, "m": 60, "s": 1, "": 1}[match[2]]
    if not 0 < value <= MAX_TTL_S:
        raise ConfigError(f"a token lives more than 0 s and at most 366 days, got {text!r}")
    return value


@dataclass(frozen=True)
class TokenInfo:
    """What the store knows of a token (never the token itself)."""

    id: str
    name: str
    role: str
    scopes: frozenset[str] | None
    created: float
    expires: float
    revoked: float | None

    @property
    def actions(self) -> frozenset[str]:
        """The actions this token may take: its role's, narrowed by its scopes."""
        actions = role_actions(self.role)
        return actions if self.scopes is None else actions & self.scopes

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "role": self.role,
            "scopes": None if self.scopes is None else sorted(self.scopes),
            "created": self.created,
            "expires": self.expires,
            "revoked": self.revoked,
        }


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


class TokenStore:
    """Hashed bearer tokens in one SQLite file (thread-safe); see the module docstring."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=10.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.DatabaseError) as exc:
            raise ConfigError(f"{self.path} is not a usable fedfort token store: {exc}") from exc
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> TokenStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def issue(
        self,
        name: str,
        role: str,
        *,
        ttl_s: float = 90 * 86400.0,
        scopes: Iterable[str] | None = None,
    ) -> tuple[str, TokenInfo]:
        """Create a token; return it (shown once) and its record. Bad input changes nothing."""
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ConfigError(
                f"a token name is 1-64 letters, digits, '.', '_', '@' or '-', got {name!r}"
            )
        if role not in ROLES:
            raise ConfigError(f"unknown role {role!r}: choose one of {', '.join(ROLES)}")
        if not 0 < float(ttl_s) <= MAX_TTL_S:
            raise ConfigError(f"a token lives more than 0 s and at most 366 days, got {ttl_s} s")
        scope_set: frozenset[str] | None = None
        if scopes is not None:
            scope_set = frozenset(scopes)
            unknown = sorted(scope_set - set(PERMISSIONS))
            if unknown:
                raise ConfigError(f"unknown scopes {unknown}: scopes are actions of the matrix")
            beyond = sorted(scope_set - role_actions(role))
            if beyond:
                raise ConfigError(f"role {role!r} may not take {beyond}: a scope only narrows")
            if not scope_set:
                raise ConfigError("an empty scope list would allow nothing; omit it instead")
        token_id = secrets.token_hex(6)
        token = f"{TOKEN_PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
        now = time.time()
        info = TokenInfo(token_id, name, role, scope_set, now, now + float(ttl_s), None)
        with self._lock, self._db:
            self._db.execute(
                "INSERT INTO tokens VALUES (?, ?, ?, ?, ?, ?, NULL, ?)",
                (
                    token_id,
                    name,
                    role,
                    None if scope_set is None else jsonio.dumps(sorted(scope_set)),
                    info.created,
                    info.expires,
                    _digest(token),
                ),
            )
        return token, info

    def revoke(self, token_id: str) -> TokenInfo:
        """Revoke a token by its id (revoking twice keeps the first time)."""
        with self._lock, self._db:
            cursor = self._db.execute(
                "UPDATE tokens SET revoked = ? WHERE id = ? AND revoked IS NULL",
                (time.time(), token_id),
            )
            del cursor
        info = self.get(token_id)
        if info is None:
            raise ConfigError(f"no token with id {token_id!r} in {self.path}")
        return info

    def get(self, token_id: str) -> TokenInfo | None:
        with self._lock:
            row = self._db.execute(
                "SELECT id, name, role, scopes, created, expires, revoked FROM tokens WHERE id = ?",
                (token_id,),
            ).fetchone()
        return None if row is None else _info(row)

    def list(self) -> list[TokenInfo]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, name, role, scopes, created, expires, revoked FROM tokens "
                "ORDER BY created"
            ).fetchall()
        return [_info(r) for r in rows]

    def authenticate(self, token: str, *, now: float | None = None) -> TokenInfo:
        """The record of a presented token; raises :class:`AccessDenied` (401) otherwise."""
        match = _TOKEN_RE.match(token) if isinstance(token, str) else None
        if match is None:
            raise AccessDenied(401, "malformed_token", "the bearer token is not a fedfort token")
        with self._lock:
            row = self._db.execute(
                "SELECT id, name, role, scopes, created, expires, revoked, sha256 FROM tokens "
                "WHERE id = ?",
                (match.group(1),),
            ).fetchone()
        stored = _DUMMY_DIGEST if row is None else str(row[7])
        same = hmac.compare_digest(stored, _digest(token))
        if row is None or not same:
            raise AccessDenied(401, "unknown_token", "the bearer token is not known here")
        info = _info(row[:7])
        moment = time.time() if now is None else now
        if info.revoked is not None:
            raise AccessDenied(401, "revoked_token", f"token {info.id} was revoked")
        if moment >= info.expires:
            raise AccessDenied(401, "expired_token", f"token {info.id} has expired")
        return info


def _info(row: Any) -> TokenInfo:
    scopes = None if row[3] is None else frozenset(json.loads(row[3]))
    return TokenInfo(
        str(row[0]),
        str(row[1]),
        str(row[2]),
        scopes,
        float(row[4]),
        float(row[5]),
        None if row[6] is None else float(row[6]),
    )
