"""Which key store a process uses: a PKCS#11 token when configured, else key files."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Final

from fedfort.crypto.keyfiles import check_owner_only
from fedfort.crypto.keystore.base import KeyStore
from fedfort.crypto.keystore.files import FileKeyStore
from fedfort.errors import ConfigError

if TYPE_CHECKING:
    from fedfort.crypto.keystore.pkcs11_store import Pkcs11KeyStore

__all__ = [
    "PKCS11_LABEL_PREFIX_ENV",
    "PKCS11_MODULE_ENV",
    "PKCS11_PIN_ENV",
    "PKCS11_PIN_FILE_ENV",
    "PKCS11_TOKEN_ENV",
    "open_keystore",
]

PKCS11_MODULE_ENV: Final = "FEDFORT_PKCS11_MODULE"
PKCS11_TOKEN_ENV: Final = "FEDFORT_PKCS11_TOKEN"
PKCS11_PIN_ENV: Final = "FEDFORT_PKCS11_PIN"
PKCS11_PIN_FILE_ENV: Final = "FEDFORT_PKCS11_PIN_FILE"
PKCS11_LABEL_PREFIX_ENV: Final = "FEDFORT_PKCS11_LABEL_PREFIX"

_tokens: dict[tuple[str, str, str], Pkcs11KeyStore] = {}


def _pin(env: Mapping[str, str]) -> str:
    if PKCS11_PIN_ENV in env:
        return env[PKCS11_PIN_ENV]
    if PKCS11_PIN_FILE_ENV in env:
        path = Path(env[PKCS11_PIN_FILE_ENV])
        check_owner_only(path, "PIN file")
        return path.read_text(encoding="utf-8").strip()
    raise ConfigError(
        f"{PKCS11_MODULE_ENV} is set but no token PIN: set {PKCS11_PIN_ENV} or "
        f"{PKCS11_PIN_FILE_ENV}"
    )


def open_keystore(
    directory: str | Path, *, suffix: str = ".key", environ: Mapping[str, str] | None = None
) -> KeyStore:
    """The key store for keys that would otherwise live as files in ``directory``.

    With ``FEDFORT_PKCS11_MODULE`` (and ``FEDFORT_PKCS11_TOKEN``, ``FEDFORT_PKCS11_PIN`` or
    ``FEDFORT_PKCS11_PIN_FILE``) set, keys live on that token (one open session per token and
    process); otherwise in ``directory`` as ``NAME{suffix}`` files.
    """
    env = os.environ if environ is None else environ
    module = env.get(PKCS11_MODULE_ENV)
    if not module:
        return FileKeyStore(directory, suffix=suffix)
    token = env.get(PKCS11_TOKEN_ENV)
    if not token:
        raise ConfigError(f"{PKCS11_MODULE_ENV} is set: name the token in {PKCS11_TOKEN_ENV}")
    prefix = env.get(PKCS11_LABEL_PREFIX_ENV, "fedfort:")
    cache_key = (module, token, prefix)
    store = _tokens.get(cache_key)
    if store is None or store.closed:
        from fedfort.crypto.keystore.pkcs11_store import Pkcs11KeyStore

        store = Pkcs11KeyStore(module, token, _pin(env), label_prefix=prefix)
        _tokens[cache_key] = store
    return store
