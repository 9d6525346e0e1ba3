"""The cryptographic building blocks of fedfort, all from ``cryptography``.

Nothing here is invented; each function is a thin, typed wrapper over a standard primitive
with fedfort's domain separation. Secure aggregation uses all of them, as the protocol of
Bonawitz et al. ("Practical Secure Aggregation for Privacy-Preserving Machine Learning",
CCS 2017, section 4) asks for; the audit log, checkpoints and the network identity sign with
the same Ed25519 keys:

- **Key agreement** (:func:`agree`): X25519 (RFC 7748), then HKDF-SHA256 (RFC 5869) over the
  shared point with an ``info`` string naming the purpose and the session, so the channel key
  and the mask seed of a pair can never coincide, nor keys of two sessions.
- **Authenticated encryption** (:func:`seal`, :func:`unseal`): AES-256-GCM with a random
  96-bit nonce, used for the Shamir shares that travel through the server. The associated data
  binds the ciphertext to (session, sender, recipient), so the server can neither read nor
  redirect a share.
- **Signatures** (:class:`SigningKey`, :func:`verify`): Ed25519 (RFC 8032) over the advertised
  keys and the consistency-check list, the paper's defence against an actively malicious
  server.
- **Mask expansion** (:func:`expand_mask`): a PRG made of AES-256-CTR keyed by the 32-byte
  seed (zero nonce: each seed is used for exactly one mask), whose keystream is read as
  little-endian unsigned words modulo ``2**bits``.
"""

from __future__ import annotations

import os

import numpy as np
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedfort.errors import ProtocolError

__all__ = [
    "KEY_BYTES",
    "NONCE_BYTES",
    "SEED_BYTES",
    "AgreementKey",
    "SigningKey",
    "agree",
    "expand_mask",
    "mask_dtype",
    "random_seed",
    "seal",
    "unseal",
    "verify",
]

KEY_BYTES = 32  # raw X25519 / Ed25519 public key
SEED_BYTES = 32  # PRG seeds and symmetric keys
NONCE_BYTES = 12  # AES-GCM nonce
SIGNATURE_BYTES = 64


def random_seed() -> bytes:
    """32 bytes from the operating system's CSPRNG."""
    return os.urandom(SEED_BYTES)


class AgreementKey:
    """An X25519 key pair for one session (the paper's ``c`` or ``s`` key pair)."""

    def __init__(self, private: x25519.X25519PrivateKey | None = None) -> None:
        self._private = private or x25519.X25519PrivateKey.generate()
        self.public = self._private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> AgreementKey:
        """Rebuild a key pair from its 32 private bytes (a reconstructed Shamir secret)."""
        if len(raw) != KEY_BYTES:
            raise ProtocolError(f"an X25519 private key has {KEY_BYTES} bytes, got {len(raw)}")
        return cls(x25519.X25519PrivateKey.from_private_bytes(raw))

    def private_bytes(self) -> bytes:
        """The raw private key, only for Shamir-sharing the mask key ``s_sk``."""
        return self._private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )

    def exchange(self, peer_public: bytes) -> bytes:
        """The raw X25519 shared point with ``peer_public``; refuses malformed keys."""
        if len(peer_public) != KEY_BYTES:
            raise ProtocolError(f"an X25519 public key has {KEY_BYTES} bytes")
        try:
            return self._private.exchange(x25519.X25519PublicKey.from_public_bytes(peer_public))
        except ValueError as exc:  # all-zero shared point: a small-order public key
            raise ProtocolError(f"X25519 agreement refused: {exc}") from exc


def agree(key: AgreementKey, peer_public: bytes, info: bytes) -> bytes:
    """A 32-byte secret shared with the owner of ``peer_public``, bound to ``info``."""
    shared = key.exchange(peer_public)
    return HKDF(algorithm=hashes.SHA256(), length=SEED_BYTES, salt=None, info=info).derive(shared)


def seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """AES-256-GCM encryption; the output is ``nonce || ciphertext || tag``."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def unseal(key: bytes, blob: bytes, aad: bytes) -> bytes:
    """Decrypt a :func:`seal` output; a forged, altered or misdirected blob is refused."""
    if len(blob) < NONCE_BYTES + 16:
        raise ProtocolError("an encrypted share is too short")
    try:
        return AESGCM(key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
    except InvalidTag as exc:
        raise ProtocolError("an encrypted share failed authentication") from exc


class SigningKey:
    """An Ed25519 identity key: a client's long-term key, registered with the federation."""

    def __init__(self, private: ed25519.Ed25519PrivateKey | None = None) -> None:
        self._private = private or ed25519.Ed25519PrivateKey.generate()
        self.public = self._private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)

    @property
    def private_key(self) -> ed25519.Ed25519PrivateKey:
        """The ``cryptography`` private key (for serialising it, e.g. encrypted)."""
        return self._private

    def private_bytes(self) -> bytes:
        """The private key as unencrypted PKCS#8 PEM (store it readable by its owner only)."""
        return self._private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def verify(public: bytes, signature: bytes, message: bytes) -> bool:
    """Whether ``signature`` is a valid Ed25519 signature of ``message`` under ``public``."""
    if len(public) != KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    try:
        ed25519.Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def mask_dtype(bits: int) -> type[np.unsignedinteger]:
    """The unsigned word that holds integers modulo ``2**bits`` (wraps for free)."""
    if not 8 <= bits <= 64:
        raise ValueError(f"the modulus must have 8 to 64 bits, got {bits}")
    return np.uint32 if bits <= 32 else np.uint64


def expand_mask(seed: bytes, length: int, bits: int) -> np.ndarray:
    """``length`` pseudorandom integers modulo ``2**bits`` from a 32-byte seed (AES-256-CTR).

    The array may be read-only (it views the keystream without a copy). With ``bits`` equal
    to the word size (32 or 64) every word is uniform; below it, the top bits are cleared,
    which keeps the values uniform modulo ``2**bits``.
    """
    if len(seed) != SEED_BYTES:
        raise ProtocolError(f"a mask seed has {SEED_BYTES} bytes, got {len(seed)}")
    dtype = mask_dtype(bits)
    width = np.dtype(dtype).itemsize
    encryptor = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor()
    stream = encryptor.update(bytes(length * width)) + encryptor.finalize()
    words: np.ndarray = np.frombuffer(stream, dtype=np.dtype(dtype).newbyteorder("<"))
    if bits < 8 * width:
        words = np.bitwise_and(words, dtype((1 << bits) - 1))
    return words
