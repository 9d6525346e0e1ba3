"""The audit log's signed head: the position and hash of its last entry, signed by the audit key.

A hash chain proves that no entry was changed, inserted or removed *inside* the log, but a
shorter prefix of a valid chain is itself valid: cutting the tail leaves nothing to see. The
*signed head* closes that gap (the "forward-secure" anchor of Schneier and Kelsey, "Secure
audit logs to support computer forensics", ACM TISSEC 1999, and the signed tree head of
Certificate Transparency, RFC 6962 §3.5): after every append the writer signs

    Ed25519("fedfort-audit-head-v1" \\n canonical JSON of [seq, hash, key])

with the key that signed entry ``seq`` and stores it

- in the log's own database (table ``head``, one row), and
- in ``audit-head.json`` beside it (written atomically),

so a verifier finds a head that the log must reach exactly. Whoever cuts the log without the
audit key cannot sign a head for the shorter log; deleting the head is itself a failure. An
attacker who kept an *older* signed head can put it back after cutting the log to that point:
only a head exported earlier (``fedfort audit verify --head FILE``, the alert webhook or the
per-round print) proves that cut, because it names an entry the cut log no longer holds.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fedfort import jsonio
from fedfort.crypto.primitives import SigningKey, verify
from fedfort.errors import AuditError

__all__ = [
    "HEAD_FILE",
    "HEAD_SCHEMA",
    "SignedHead",
    "head_message",
    "read_head_file",
    "sign_head",
    "write_head_file",
]

#: the head file beside ``audit.sqlite``
HEAD_FILE = "audit-head.json"
_HEAD_DOMAIN = b"fedfort-audit-head-v1\n"

HEAD_SCHEMA = """
CREATE TABLE IF NOT EXISTS head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL,
    hash TEXT NOT NULL,
    key TEXT NOT NULL,
    signature TEXT NOT NULL
);
"""


def head_message(seq: int, digest: str, key: str) -> bytes:
    """What the audit key signs for the head ``(seq, digest)`` written under key id ``key``."""
    return _HEAD_DOMAIN + jsonio.dumps([seq, digest, key], separators=(",", ":")).encode()


@dataclass(frozen=True)
class SignedHead:
    """The log's last entry ``(seq, hash)``, the id of the key that signed it, its signature."""

    seq: int
    hash: str
    key: str
    signature: str

    def verifies(self, public: bytes) -> bool:
        """Whether the signature holds under ``public`` (the key named by :attr:`key`)."""
        try:
            signature = bytes.fromhex(self.signature)
        except ValueError:
            return False
        return verify(public, signature, head_message(self.seq, self.hash, self.key))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        """``SEQ:HASH``, the form ``fedfort audit verify --head`` also takes."""
        return f"{self.seq}:{self.hash}"

    @classmethod
    def from_dict(cls, value: Any, where: str) -> SignedHead:
        try:
            return cls(
                int(value["seq"]), str(value["hash"]), str(value["key"]), str(value["signature"])
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise AuditError(f"{where} is not a signed audit head: {exc!r}") from exc


def sign_head(key: SigningKey, key_name: str, seq: int, digest: str) -> SignedHead:
    """The head ``(seq, digest)`` signed by ``key`` (whose id is ``key_name``)."""
    signature = key.sign(head_message(seq, digest, key_name)).hex()
    return SignedHead(seq, digest, key_name, signature)


def write_head_file(path: Path, head: SignedHead) -> None:
    """Write ``head`` to ``path`` atomically (a reader sees the old or the new head, whole)."""
    fd, tmp = tempfile.mkstemp(prefix=".audit-head-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(jsonio.dumps(head.to_dict(), sort_keys=True))
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_head_file(path: Path) -> SignedHead | None:
    """The head in ``path`` (``None`` when the file does not exist)."""
    if not path.exists():
        return None
    try:
        value = json.loads(path.read_text(encoding="ascii"))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise AuditError(f"cannot read the audit head {path}: {exc}") from exc
    return SignedHead.from_dict(value, str(path))
