"""Signing keys on a PKCS#11 token (an HSM; SoftHSM2 in tests): the private key never leaves it.

Needs ``pip install fedfort[hsm]`` (``python-pkcs11``) and the token's PKCS#11 module, e.g.
``/usr/lib/softhsm/libsofthsm2.so`` from Debian's ``softhsm2``. Keys are Ed25519 key pairs
(``CKK_EC_EDWARDS`` on curve edwards25519, generated with ``CKM_EC_EDWARDS_KEY_PAIR_GEN``) and
sign with ``CKM_EDDSA`` (OASIS PKCS#11 v3.0, section 2.3.14; RFC 8032 Ed25519), so a signature
made on the token verifies like any other fedfort signature.
"""

from __future__ import annotations

import builtins
import threading
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from fedfort.crypto.keystore.base import KeyStore, check_key_name
from fedfort.crypto.primitives import SigningKey
from fedfort.errors import ConfigError

try:
    import pkcs11
    from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
    from pkcs11.exceptions import (
        NoSuchToken,
        PinIncorrect,
        PKCS11Error,
        UserAlreadyLoggedIn,
    )
    from pkcs11.util.ec import encode_named_curve_parameters

    _HAVE_PKCS11 = True
except ImportError:  # pragma: no cover - exercised only without the extra
    _HAVE_PKCS11 = False

__all__ = ["Pkcs11KeyStore", "TokenSigningKey"]

#: RFC 8410 object identifier of Ed25519 (the curve parameter of CKK_EC_EDWARDS keys)
_ED25519_OID = "1.3.101.112"


def _raw_point(ec_point: bytes) -> bytes:
    """The 32 raw bytes of an Ed25519 ``CKA_EC_POINT`` (DER OCTET STRING or raw)."""
    if len(ec_point) == 34 and ec_point[:2] == b"\x04\x20":
        return ec_point[2:]
    if len(ec_point) == 32:
        return ec_point
    raise ConfigError(f"the token returned an Ed25519 public point of {len(ec_point)} bytes")


class TokenSigningKey(SigningKey):
    """A :class:`SigningKey` whose private half stays on a PKCS#11 token; signing runs there."""

    def __init__(self, private: Any, public: bytes, lock: threading.Lock, label: str) -> None:
        # no software key is generated: this object only refers to the token's key
        self._token_key = private
        self._lock = lock
        self.label = label
        self.public = public

    def sign(self, message: bytes) -> bytes:
        with self._lock:
            signature = self._token_key.sign(message, mechanism=Mechanism.EDDSA)
        return bytes(signature)

    @property
    def private_key(self) -> ed25519.Ed25519PrivateKey:
        raise ConfigError(
            f"key {self.label!r} lives on a PKCS#11 token and cannot be exported or written out"
        )

    def private_bytes(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


class Pkcs11KeyStore(KeyStore):
    """Named Ed25519 keys on a PKCS#11 token, found by label (``label_prefix`` + name).

    Generated keys are created on the token as sensitive and non-extractable (``CKA_SENSITIVE``,
    ``CKA_EXTRACTABLE = false``): no API can read them back, so a compromised host can at most
    sign while it holds the session, never take the key away. :meth:`put` imports an existing
    software key (e.g. to move a file key onto the token) with the same attributes. One
    session is kept open; signing is serialised on it.
    """

    def __init__(
        self,
        module: str | Path,
        token_label: str,
        pin: str,
        *,
        label_prefix: str = "fedfort:",
    ) -> None:
        if not _HAVE_PKCS11:
            raise ConfigError(
                "the PKCS#11 key store needs python-pkcs11: pip install 'fedfort[hsm]'"
            )
        self.label_prefix = label_prefix
        self._lock = threading.Lock()
        #: set by :meth:`close`; a closed store cannot be used again
        self.closed = False
        try:
            lib = pkcs11.lib(str(module))
        except (RuntimeError, OSError) as exc:
            raise ConfigError(f"cannot load the PKCS#11 module {module}: {exc}") from exc
        try:
            token = lib.get_token(token_label=token_label)
        except NoSuchToken:
            raise ConfigError(f"no PKCS#11 token labelled {token_label!r} in {module}") from None
        try:
            self._session = token.open(user_pin=pin, rw=True)
        except UserAlreadyLoggedIn:
            # PKCS#11 logins are per process: another store of this process already logged in
            self._session = token.open(rw=True)
        except PinIncorrect:
            raise ConfigError(f"cannot log in to token {token_label!r}: wrong PIN") from None
        except PKCS11Error as exc:
            raise ConfigError(
                f"cannot open token {token_label!r} of {module}: {type(exc).__name__}"
            ) from exc

    def _label(self, name: str) -> str:
        return self.label_prefix + check_key_name(name)

    def _find(self, name: str, cls: Any) -> Any:
        found = list(
            self._session.get_objects({Attribute.CLASS: cls, Attribute.LABEL: self._label(name)})
        )
        if not found:
            return None
        if len(found) > 1:
            raise ConfigError(f"the token holds {len(found)} keys labelled {self._label(name)!r}")
        return found[0]

    def get(self, name: str) -> SigningKey:
        with self._lock:
            private = self._find(name, ObjectClass.PRIVATE_KEY)
            public = self._find(name, ObjectClass.PUBLIC_KEY)
            if private is None or public is None:
                raise ConfigError(f"no key pair labelled {self._label(name)!r} on the token")
            point = _raw_point(bytes(public[Attribute.EC_POINT]))
        return TokenSigningKey(private, point, self._lock, self._label(name))

    def generate(self, name: str) -> SigningKey:
        self.delete(name)
        label = self._label(name)
        params = encode_named_curve_parameters(_ED25519_OID)
        with self._lock:
            domain = self._session.create_domain_parameters(
                KeyType.EC_EDWARDS, {Attribute.EC_PARAMS: params}, local=True
            )
            domain.generate_keypair(
                store=True,
                label=label,
                mechanism=Mechanism.EC_EDWARDS_KEY_PAIR_GEN,
                private_template={
                    Attribute.SENSITIVE: True,
                    Attribute.EXTRACTABLE: False,
                    Attribute.PRIVATE: True,
                },
            )
        return self.get(name)

    def put(self, name: str, key: SigningKey) -> None:
        if isinstance(key, TokenSigningKey):
            raise ConfigError("a key on a token cannot be copied: generate a new one instead")
        raw = key.private_key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        self.delete(name)
        label = self._label(name)
        params = encode_named_curve_parameters(_ED25519_OID)
        with self._lock:
            self._session.create_object(
                {
                    Attribute.CLASS: ObjectClass.PRIVATE_KEY,
                    Attribute.KEY_TYPE: KeyType.EC_EDWARDS,
                    Attribute.TOKEN: True,
                    Attribute.LABEL: label,
                    Attribute.EC_PARAMS: params,
                    Attribute.VALUE: raw,
                    Attribute.SIGN: True,
                    Attribute.SENSITIVE: True,
                    Attribute.EXTRACTABLE: False,
                    Attribute.PRIVATE: True,
                }
            )
            self._session.create_object(
                {
                    Attribute.CLASS: ObjectClass.PUBLIC_KEY,
                    Attribute.KEY_TYPE: KeyType.EC_EDWARDS,
                    Attribute.TOKEN: True,
                    Attribute.LABEL: label,
                    Attribute.EC_PARAMS: params,
                    Attribute.EC_POINT: b"\x04\x20" + key.public,
                    Attribute.VERIFY: True,
                }
            )

    def list(self) -> builtins.list[str]:
        n = len(self.label_prefix)
        with self._lock:
            labels = {
                str(obj[Attribute.LABEL])
                for obj in self._session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY})
            }
        return sorted(label[n:] for label in labels if label.startswith(self.label_prefix))

    def delete(self, name: str) -> None:
        with self._lock:
            for obj in list(self._session.get_objects({Attribute.LABEL: self._label(name)})):
                obj.destroy()

    def close(self) -> None:
        """Close the token session."""
        with self._lock:
            if not self.closed:
                self._session.close()
                self.closed = True
