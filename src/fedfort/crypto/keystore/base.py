"""The key-store interface: named long-term Ed25519 signing keys."""

from __future__ import annotations

import builtins
import re
from abc import ABC, abstractmethod

from fedfort.crypto.primitives import SigningKey
from fedfort.errors import ConfigError

__all__ = ["KeyStore", "check_key_name"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_key_name(name: str) -> str:
    """``name`` if it is a valid key name (letters, digits, ``._-``; no path separators)."""
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        raise ConfigError(
            f"invalid key name {name!r}: use letters, digits, '.', '_' and '-' (no '/' or '..')"
        )
    return name


class KeyStore(ABC):
    """Named Ed25519 signing keys, kept where an attacker who copies files cannot use them.

    What it defends against: theft of long-term private keys (identity, audit) from disk,
    backups or images. A file store keeps them encrypted and owner-only; a hardware store
    (PKCS#11, OASIS PKCS#11 v3.0 ``CKM_EDDSA``) keeps them on a token that signs but never
    exports them. Every store hands out :class:`~fedfort.crypto.primitives.SigningKey` objects, so
    the rest of fedfort signs the same way whichever store holds the key.
    """

    @abstractmethod
    def get(self, name: str) -> SigningKey:
        """The key called ``name`` (:class:`ConfigError` when it does not exist)."""

    @abstractmethod
    def put(self, name: str, key: SigningKey) -> None:
        """Store ``key`` as ``name``, replacing a key of that name."""

    @abstractmethod
    def generate(self, name: str) -> SigningKey:
        """Create a fresh key called ``name`` inside the store and return it."""

    @abstractmethod
    def list(self) -> builtins.list[str]:
        """The names of the stored keys, sorted."""

    @abstractmethod
    def delete(self, name: str) -> None:
        """Remove the key called ``name`` (nothing happens when it does not exist)."""

    def exists(self, name: str) -> bool:
        """Whether a key called ``name`` is stored."""
        return check_key_name(name) in self.list()

    def get_or_generate(self, name: str) -> SigningKey:
        """The key called ``name``, created on first use."""
        return self.get(name) if self.exists(name) else self.generate(name)
