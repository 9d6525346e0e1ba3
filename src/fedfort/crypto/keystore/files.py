"""Signing keys as PKCS#8 files in one directory (custody: :mod:`fedfort.crypto.keyfiles`)."""

from __future__ import annotations

import builtins
from pathlib import Path

from fedfort.crypto.keyfiles import KeyProtection, load_signing_key, save_signing_key
from fedfort.crypto.keystore.base import KeyStore, check_key_name
from fedfort.crypto.primitives import SigningKey
from fedfort.errors import ConfigError

__all__ = ["FileKeyStore"]


class FileKeyStore(KeyStore):
    """Keys as ``directory/NAME{suffix}`` files: mode 0600, encrypted when a passphrase is set.

    ``protection`` defaults to the environment (``FEDFORT_KEY_PASSPHRASE`` ...), read at each
    call so a rotated passphrase applies to the next key written. Group- or world-readable
    files are refused (see :func:`fedfort.crypto.keyfiles.check_owner_only`).
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        suffix: str = ".key",
        protection: KeyProtection | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.suffix = suffix
        self.protection = protection

    def path(self, name: str) -> Path:
        """The file of the key called ``name``."""
        return self.directory / f"{check_key_name(name)}{self.suffix}"

    def get(self, name: str) -> SigningKey:
        path = self.path(name)
        if not path.exists():
            raise ConfigError(f"no key {name!r} in {self.directory} ({path} does not exist)")
        return load_signing_key(path, self.protection)

    def put(self, name: str, key: SigningKey) -> None:
        path = self.path(name)
        self.directory.mkdir(parents=True, exist_ok=True)
        save_signing_key(key, path, self.protection)

    def generate(self, name: str) -> SigningKey:
        key = SigningKey()
        self.put(name, key)
        return key

    def list(self) -> builtins.list[str]:
        if not self.directory.is_dir():
            return []
        n = len(self.suffix)
        return sorted(p.name[:-n] for p in self.directory.glob(f"*{self.suffix}") if p.is_file())

    def exists(self, name: str) -> bool:
        return self.path(name).is_file()

    def delete(self, name: str) -> None:
        self.path(name).unlink(missing_ok=True)
