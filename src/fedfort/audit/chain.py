"""The audit log's entry format: canonical bytes, the hash chain and the signature.

An entry is ``(seq, ts, kind, round, body, prev, key)``: its position (1, 2, ...), the wall
time it was written, what happened, the round it belongs to (or none), a JSON body of metadata
and hashes (never raw updates or data), the hash of the entry before it, and the id of the key
that signs it. Its hash is

    SHA-256("fedfort-audit-v1" \\n canonical JSON of those seven fields)

and its signature is Ed25519 over ``"fedfort-audit-sig-v1" | hash``. Each entry committing to
its predecessor's hash makes the log a hash chain (Haber and Stornetta, "How to time-stamp a
digital document", J. Cryptology 1991; the construction of Schneier and Kelsey, "Secure audit
logs to support computer forensics", ACM TISSEC 1999): altering, removing, inserting or
reordering an entry breaks the chain at that entry, and the signatures stop anyone without the
server's audit key from re-writing the chain after it.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedfort import jsonio

__all__ = [
    "GENESIS",
    "AuditEntry",
    "canonical_body",
    "entry_hash",
    "key_id",
    "signed_message",
]

#: the ``prev`` of the first entry
GENESIS = "0" * 64
_DOMAIN = b"fedfort-audit-v1\n"
_SIG_DOMAIN = b"fedfort-audit-sig-v1"


def key_id(public: bytes) -> str:
    """A short, stable name of an Ed25519 public key: the first 16 bytes of its SHA-256."""
    return hashlib.sha256(public).hexdigest()[:32]


def _plain(node: Any) -> Any:
    """``node`` with numpy scalars turned into Python ones; arrays are refused (metadata only)."""
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list | tuple | set | frozenset):
        items = [_plain(v) for v in node]
        return sorted(items) if isinstance(node, set | frozenset) else items
    if isinstance(node, np.ndarray):
        raise TypeError("audit entries hold metadata and hashes only, not arrays")
    if isinstance(node, np.generic):
        node = node.item()
    if isinstance(node, float) and not math.isfinite(node):
        return str(node)
    if node is None or isinstance(node, bool | int | float | str):
        return node
    raise TypeError(f"cannot put a {type(node).__name__} in an audit entry")


def canonical_body(body: dict[str, Any]) -> str:
    """The canonical JSON text of an entry body (sorted keys, no spaces, ASCII)."""
    return jsonio.dumps(_plain(body), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def entry_hash(
    seq: int, ts: float, kind: str, round_: int | None, body: str, prev: str, key: str
) -> str:
    """The hex SHA-256 an entry is chained and signed by (``body`` is its canonical text)."""
    header = jsonio.dumps(
        [seq, repr(float(ts)), kind, round_, body, prev, key],
        separators=(",", ":"),
        ensure_ascii=True,
    )
    return hashlib.sha256(_DOMAIN + header.encode()).hexdigest()


def signed_message(digest: str) -> bytes:
    """What the audit key signs for an entry whose hash is ``digest``."""
    return _SIG_DOMAIN + bytes.fromhex(digest)


@dataclass(frozen=True)
class AuditEntry:
    """One entry as stored."""

    seq: int
    ts: float
    kind: str
    round: int | None
    body: str
    prev: str
    key: str
    hash: str
    signature: str

    @property
    def data(self) -> dict[str, Any]:
        """The body decoded."""
        value = json.loads(self.body)
        return value if isinstance(value, dict) else {"value": value}

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the body decoded) for exports."""
        return {
            "seq": self.seq,
            "ts": self.ts,
            "kind": self.kind,
            "round": self.round,
            "body": self.data,
            "prev": self.prev,
            "key": self.key,
            "hash": self.hash,
            "signature": self.signature,
        }
