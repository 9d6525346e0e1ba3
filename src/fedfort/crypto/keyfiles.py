"""Private keys on disk: PKCS#8 PEM, owner-only, encrypted under a passphrase when one is set.

Used by every party that keeps a long-term private key: clients and the server for their
identity keys (:mod:`fedfort.transport.identity`), the server for its audit-log key
(:mod:`fedfort.audit`) and ``fedfort certs`` for the TLS and CA keys
(:mod:`fedfort.crypto.pki`).

Custody rules (what they defend against: a copied disk, backup or container image that leaks
a key file, and a key file other local users can read):

- **Encryption at rest.** With a passphrase in ``FEDFORT_KEY_PASSPHRASE`` (or in the file named
  by ``FEDFORT_KEY_PASSPHRASE_FILE``) every key is written as encrypted PKCS#8 (RFC 5958,
  ``cryptography``'s ``BestAvailableEncryption``: PBES2 with a salted KDF and AES-256) and
  read back with that passphrase. Keys are decrypted in memory only, never written out plain.
- **Plaintext keys.** Without a passphrase keys are written and read unencrypted (a
  single-user laptop or a simulation needs no secret). Once a passphrase is set an unencrypted
  key is *refused*, so a forgotten plain key (or one planted in place of the real one) cannot
  slip into a hardened deployment; ``FEDFORT_ALLOW_PLAINTEXT_KEYS=1`` explicitly allows such
  keys during a migration.
- **Permissions.** A key file (or passphrase file) that its group or others may read or write
  (``mode & 0o077``) is refused with the ``chmod 600`` that fixes it, as OpenSSH does. Keys are
  created with mode 0600.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from fedfort.crypto.primitives import SigningKey
from fedfort.errors import ConfigError

__all__ = [
    "ALLOW_PLAINTEXT_ENV",
    "PASSPHRASE_ENV",
    "PASSPHRASE_FILE_ENV",
    "KeyProtection",
    "check_owner_only",
    "load_private_pem",
    "load_signing_key",
    "private_pem",
    "save_signing_key",
    "write_private_file",
]

PASSPHRASE_ENV: Final = "FEDFORT_KEY_PASSPHRASE"
PASSPHRASE_FILE_ENV: Final = "FEDFORT_KEY_PASSPHRASE_FILE"
ALLOW_PLAINTEXT_ENV: Final = "FEDFORT_ALLOW_PLAINTEXT_KEYS"
_TRUE = frozenset({"1", "true", "yes", "on"})


def check_owner_only(path: Path, what: str = "private key") -> None:
    """Refuse ``path`` when its group or others may read or write it (``mode & 0o077``)."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None
    if mode & 0o077:
        raise ConfigError(
            f"{what} {path} is accessible by group or others (mode {mode:04o}); fedfort refuses "
            f"it. Fix it with: chmod 600 {path}"
        )


@dataclass(frozen=True)
class KeyProtection:
    """How private keys are protected at rest: the passphrase, and whether plain keys load.

    :meth:`from_env` reads the process environment (see the module docstring); the default
    instance (no passphrase) writes and reads unencrypted keys.
    """

    passphrase: bytes | None = None
    allow_plaintext: bool = True

    def __post_init__(self) -> None:
        if self.passphrase is not None and not self.passphrase:
            raise ConfigError("the key passphrase is empty: set a non-empty passphrase")

    def __repr__(self) -> str:  # never print the passphrase
        held = "set" if self.passphrase is not None else "none"
        return f"KeyProtection(passphrase={held}, allow_plaintext={self.allow_plaintext})"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> KeyProtection:
        """The protection configured by ``FEDFORT_KEY_PASSPHRASE[_FILE]`` and
        ``FEDFORT_ALLOW_PLAINTEXT_KEYS``."""
        env = os.environ if environ is None else environ
        direct, file = env.get(PASSPHRASE_ENV), env.get(PASSPHRASE_FILE_ENV)
        if direct is not None and file is not None:
            raise ConfigError(
                f"both {PASSPHRASE_ENV} and {PASSPHRASE_FILE_ENV} are set: keep only one"
            )
        passphrase: bytes | None = None
        if direct is not None:
            passphrase = direct.encode()
        elif file is not None:
            path = Path(file)
            check_owner_only(path, "passphrase file")
            try:
                passphrase = path.read_bytes().rstrip(b"\r\n")
            except OSError as exc:
                raise ConfigError(f"cannot read passphrase file {path}: {exc.strerror}") from None
            if not passphrase:
                raise ConfigError(f"passphrase file {path} is empty")
        if passphrase is not None and not passphrase:
            raise ConfigError(f"{PASSPHRASE_ENV} is empty: set a non-empty passphrase")
        allow = env.get(ALLOW_PLAINTEXT_ENV, "").strip().lower() in _TRUE
        return cls(passphrase, allow_plaintext=passphrase is None or allow)

    def encryption(self) -> serialization.KeySerializationEncryption:
        """The PKCS#8 encryption new keys are written with."""
        if self.passphrase is None:
            return serialization.NoEncryption()
        return serialization.BestAvailableEncryption(self.passphrase)


def _protection(protection: KeyProtection | None) -> KeyProtection:
    return KeyProtection.from_env() if protection is None else protection


def private_pem(key: PrivateKeyTypes, protection: KeyProtection | None = None) -> bytes:
    """``key`` as PKCS#8 PEM, encrypted when ``protection`` (default: the environment) says."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        _protection(protection).encryption(),
    )


def load_private_pem(
    path: Path, protection: KeyProtection | None = None, what: str = "private key"
) -> PrivateKeyTypes:
    """Read the PEM private key at ``path`` under the custody rules of the module docstring.

    Raises :class:`ConfigError` for a missing, unreadable or group/world-accessible file, an
    encrypted key without a passphrase or with a wrong one, a plain key where plain keys are not
    allowed, and bytes that are not a PEM private key.
    """
    path = Path(path)
    rules = _protection(protection)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None
    if b"PRIVATE KEY-----" not in data:
        raise ConfigError(f"{path} is not a PEM private key")
    check_owner_only(path, what)
    encrypted = b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in data
    if encrypted and rules.passphrase is None:
        raise ConfigError(
            f"{what} {path} is encrypted: give its passphrase in {PASSPHRASE_ENV} or in a "
            f"file named by {PASSPHRASE_FILE_ENV}"
        )
    if not encrypted and not rules.allow_plaintext:
        raise ConfigError(
            f"{what} {path} is not encrypted, and a key passphrase is set: re-encrypt the key "
            f"(fedfort keys encrypt {path}) or set {ALLOW_PLAINTEXT_ENV}=1 to allow plain keys"
        )
    try:
        return serialization.load_pem_private_key(
            data, password=rules.passphrase if encrypted else None
        )
    except ValueError as exc:
        if encrypted:
            raise ConfigError(
                f"cannot decrypt {what} {path}: wrong passphrase in {PASSPHRASE_ENV} / "
                f"{PASSPHRASE_FILE_ENV}, or a damaged file"
            ) from exc
        raise ConfigError(f"{path} is not a PEM private key") from exc
    except (TypeError, UnsupportedAlgorithm) as exc:
        raise ConfigError(f"{path} is not a usable PEM private key: {exc}") from exc


def write_private_file(path: Path, data: bytes, *, exclusive: bool = False) -> None:
    """Write ``data`` to ``path`` with mode 0600 from the start.

    ``exclusive`` refuses an existing file (never overwrite a key); otherwise the file is
    replaced atomically through a temporary file in the same directory.
    """
    path = Path(path)
    target = path if exclusive else path.with_name(path.name + f".tmp{os.getpid()}")
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    try:
        fd = os.open(target, flags, 0o600)
    except FileExistsError:
        raise ConfigError(f"{path} already exists; refusing to overwrite a private key") from None
    except OSError as exc:
        raise ConfigError(f"cannot create {path}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    if not exclusive:
        os.replace(target, path)


def save_signing_key(key: SigningKey, path: Path, protection: KeyProtection | None = None) -> None:
    """Write the Ed25519 ``key`` as PKCS#8 PEM, owner-only, encrypted if a passphrase is set."""
    write_private_file(Path(path), private_pem(key.private_key, protection))


def load_signing_key(path: Path, protection: KeyProtection | None = None) -> SigningKey:
    """Read an Ed25519 key written by :func:`save_signing_key`."""
    key = load_private_pem(Path(path), protection, "signing key")
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ConfigError(f"{path} is not an Ed25519 key")
    return SigningKey(key)
