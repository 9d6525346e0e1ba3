"""Key stores: where long-term Ed25519 signing keys live, behind one small interface.

- :class:`KeyStore` (``get`` / ``put`` / ``generate`` / ``list`` / ``delete``) in
  :mod:`~fedfort.crypto.keystore.base`;
- :class:`FileKeyStore`: PKCS#8 files, owner-only, encrypted under a passphrase
  (:mod:`fedfort.crypto.keyfiles`);
- :class:`Pkcs11KeyStore`: keys on a PKCS#11 token (an HSM, or SoftHSM2 for tests) that
  never leave it; signing happens on the token. Needs ``pip install fedfort[hsm]``.

:func:`open_keystore` picks the store a process is configured for (``FEDFORT_PKCS11_MODULE``
selects the token, otherwise key files in the given directory).
"""

from fedfort.crypto.keystore.base import KeyStore, check_key_name
from fedfort.crypto.keystore.files import FileKeyStore
from fedfort.crypto.keystore.select import (
    PKCS11_LABEL_PREFIX_ENV,
    PKCS11_MODULE_ENV,
    PKCS11_PIN_ENV,
    PKCS11_TOKEN_ENV,
    open_keystore,
)

__all__ = [
    "PKCS11_LABEL_PREFIX_ENV",
    "PKCS11_MODULE_ENV",
    "PKCS11_PIN_ENV",
    "PKCS11_TOKEN_ENV",
    "FileKeyStore",
    "KeyStore",
    "check_key_name",
    "open_keystore",
]
