"""Ed25519 private keys on disk: PKCS#8 PEM, readable by their owner only.

Used by every party that keeps a long-term signing key: clients and the server for their
identity keys (:mod:`fedfort.transport.identity`) and the server for its audit-log key
(:mod:`fedfort.audit`).
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from fedfort.errors import ConfigError
from fedfort.secagg.crypto import SigningKey

__all__ = ["load_signing_key", "save_signing_key"]


def save_signing_key(key: SigningKey, path: Path) -> None:
    """Write ``key`` as PKCS#8 PEM readable by the owner only (atomic replace)."""
    pem = key.private_bytes()
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    os.replace(tmp, path)


def load_signing_key(path: Path) -> SigningKey:
    """Read an Ed25519 key written by :func:`save_signing_key`."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"cannot read signing key {path}: {exc}") from exc
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ConfigError(f"{path} is not an Ed25519 key")
    return SigningKey(key)
