"""Secure aggregation by homomorphic encryption: CKKS over packed vectors.

The scheme is CKKS (Cheon, Kim, Kim, Song, "Homomorphic Encryption for Arithmetic of Approximate
Numbers", ASIACRYPT 2017), through TenSEAL (Benaissa et al., "TenSEAL: A Library for Encrypted
Tensor Operations Using Homomorphic Encryption", 2021) on Microsoft SEAL. A client's
contribution ``[w * x, w]`` (see :func:`~fedfort.secagg.session.weighted_input`) is packed into
``ceil(length / slots)`` CKKS vectors of ``slots = poly_modulus_degree / 2`` values each; the
server adds the ciphertexts slot-wise and only the sum is ever decrypted.

Trust model, plainly:

- One designated **key owner** (a client) generates a fresh CKKS key pair for each session and
  keeps the secret key. It signs the *public* context (Ed25519 over the session id and the
  SHA-256 of the serialized public context) with its registered identity key, so the server
  cannot slip in a key of its own: every client verifies that signature against the key
  owner's entry in the directory (the PKI) before it encrypts anything.
- The **server** only ever holds the public context: whatever it deserialises must not carry a
  secret key (``not ctx.is_private()``), or the session aborts. It adds ciphertexts and sends
  the sum to the key owner, who decrypts it once and returns the plaintext sum.
- This protects the clients' inputs against an **honest-but-curious server that does not
  collude with the key owner**: the server sees only ciphertexts and the final sum.
- It does **not** protect against an **actively malicious server** (it could hand the key owner
  a single client's ciphertext instead of a sum, and the key owner cannot tell), nor against the
  **server colluding with the key owner** (who can decrypt everything). It does not stop a client
  from contributing arbitrary values either: CKKS gives confidentiality, not input validation.
  Use the masking protocol (SecAgg) when the server may be malicious.

Numerics: CKKS is approximate. With the default parameters (degree 8192, moduli 60/40/60 bits,
scale ``2**40``) the absolute error of a decrypted sum of ten inputs is of the order of ``1e-8``
per slot, whatever the magnitude of the values. Each client
refuses an input whose magnitude exceeds :attr:`CkksParams.max_input`, which leaves room for
``2**20`` summands before the sum could wrap around the ciphertext modulus.

Both sides are sans-I/O machines (see :mod:`fedfort.secagg.session`): :class:`CkksServer` walks
the stages ``key -> encrypt -> decrypt -> done`` and :class:`CkksClient` answers each message.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import tenseal as ts

from fedfort.crypto.primitives import SigningKey, verify
from fedfort.errors import ConfigError, ProtocolError, SecAggAbort
from fedfort.secagg.session import SecureSum, Session, weighted_input

__all__ = [
    "CkksClient",
    "CkksParams",
    "CkksServer",
    "DecryptRequest",
    "DecryptedSum",
    "EncryptRequest",
    "EncryptedInput",
    "KeyRequest",
    "PublicKeyBundle",
]

# Largest total coefficient modulus (bits) per degree for 128-bit classical security, from the
# Homomorphic Encryption Standard (the table SEAL enforces).
_MAX_MODULUS_BITS: Final = {4096: 109, 8192: 218, 16384: 438, 32768: 881}
_SUMMAND_BITS: Final = 20  # inputs are bounded so that 2**20 of them still fit in a slot
_BUNDLE_TAG: Final = b"fedfort-secagg-ckks-public-context\x00"

# TenSEAL ships no type information; its objects are ``Any`` and never leave this module's
# private helpers and private attributes.
_TsContext = Any
_TsVector = Any


@dataclass(frozen=True)
class CkksParams:
    """CKKS encryption parameters of a session.

    ``coeff_mod_bit_sizes`` lists the bit sizes of the RNS primes; the last one is the special
    (key-switching) prime, the others make up the modulus the ciphertexts live in. Values are
    encoded at scale ``2**scale_bits``. The total modulus is capped by the 128-bit security table
    of the Homomorphic Encryption Standard.
    """

    poly_modulus_degree: int = 8192
    coeff_mod_bit_sizes: tuple[int, ...] = (60, 40, 60)
    scale_bits: int = 40

    def __post_init__(self) -> None:
        degree = self.poly_modulus_degree
        if not _is_int(degree) or degree not in _MAX_MODULUS_BITS:
            raise ConfigError(
                f"poly_modulus_degree must be a power of two in [4096, 32768], got {degree!r}"
            )
        sizes = self.coeff_mod_bit_sizes
        if not isinstance(sizes, tuple):
            try:
                sizes = tuple(sizes)
            except TypeError as exc:
                raise ConfigError("coeff_mod_bit_sizes must be a tuple of ints") from exc
            object.__setattr__(self, "coeff_mod_bit_sizes", sizes)
        if len(sizes) < 2 or not all(_is_int(b) and 20 <= b <= 60 for b in sizes):
            raise ConfigError(
                "coeff_mod_bit_sizes needs at least two primes (data + special), each of "
                f"20 to 60 bits, got {sizes!r}"
            )
        if sum(sizes) > _MAX_MODULUS_BITS[degree]:
            raise ConfigError(
                f"coeff_mod_bit_sizes sum to {sum(sizes)} bits, more than the "
                f"{_MAX_MODULUS_BITS[degree]} allowed at degree {degree} for 128-bit security; "
                "use fewer or smaller primes, or a larger degree"
            )
        if not _is_int(self.scale_bits) or not 20 <= self.scale_bits <= 60:
            raise ConfigError(f"scale_bits must be in [20, 60], got {self.scale_bits!r}")
        if self.data_bits - self.scale_bits < _SUMMAND_BITS + 4:
            raise ConfigError(
                f"the data primes ({self.data_bits} bits) leave fewer than "
                f"{_SUMMAND_BITS + 4} bits above the scale ({self.scale_bits} bits); "
                "lower scale_bits or add a data prime"
            )

    @property
    def slots(self) -> int:
        """How many values one CKKS vector packs."""
        return self.poly_modulus_degree // 2

    @property
    def scale(self) -> float:
        """The encoding scale ``2**scale_bits``."""
        return float(2**self.scale_bits)

    @property
    def data_bits(self) -> int:
        """Bits of the modulus fresh ciphertexts live in (all primes but the special one)."""
        return sum(self.coeff_mod_bit_sizes[:-1])

    @property
    def max_input(self) -> float:
        """The largest magnitude a client may put in one slot.

        A slot of the sum decodes correctly while its magnitude stays below about
        ``2**(data_bits - scale_bits - 2)``; dividing by ``2**20`` leaves room for a million
        summands.
        """
        return float(2 ** (self.data_bits - self.scale_bits - 2 - _SUMMAND_BITS))

    def chunks(self, length: int) -> int:
        """How many CKKS vectors a vector of ``length`` values takes."""
        return math.ceil(length / self.slots)

    def chunk_sizes(self, length: int) -> list[int]:
        """The number of values in each chunk of a vector of ``length`` values."""
        return [min(self.slots, length - start) for start in range(0, length, self.slots)]


# ----------------------------------------------------------------------------------- messages


@dataclass(frozen=True)
class KeyRequest:
    """Server -> key owner: create this session's key pair and return the public context."""

    sid: bytes


@dataclass(frozen=True)
class PublicKeyBundle:
    """Key owner -> server (and, inside :class:`EncryptRequest`, server -> every participant).

    ``context`` is the serialized TenSEAL context without the secret key (public key and
    parameters only); ``signature`` is the key owner's Ed25519 signature over the session id
    and the SHA-256 of ``context``.
    """

    sid: bytes
    owner: str
    context: bytes
    signature: bytes


@dataclass(frozen=True)
class EncryptRequest:
    """Server -> participants: encrypt your weighted input under the key owner's public key."""

    sid: bytes
    bundle: PublicKeyBundle


@dataclass(frozen=True)
class EncryptedInput:
    """Participant -> server: ``[w * x, w]`` as serialized CKKS vectors of ``slots`` values.

    ``length`` is the number of float64 values encrypted (the update's dimension plus one);
    ``chunks`` holds ``ceil(length / slots)`` ciphertexts, the last one possibly shorter.
    """

    sid: bytes
    client_id: str
    chunks: tuple[bytes, ...]
    length: int


@dataclass(frozen=True)
class DecryptRequest:
    """Server -> key owner: the chunk-wise sum of the ``contributors``' ciphertexts."""

    sid: bytes
    chunks: tuple[bytes, ...]
    length: int
    contributors: tuple[str, ...]


@dataclass(frozen=True)
class DecryptedSum:
    """Key owner -> server: the decrypted sum, ``length`` float64 values, little-endian."""

    sid: bytes
    values: bytes


# ------------------------------------------------------------------------- TenSEAL, confined


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_bytes_tuple(value: object) -> bool:
    return isinstance(value, tuple) and all(isinstance(b, bytes) for b in value)


def _bundle_message(sid: bytes, context: bytes) -> bytes:
    """What the key owner signs: the session id and the digest of the public context."""
    return _BUNDLE_TAG + sid + hashlib.sha256(context).digest()


def _max_chunk_bytes(params: CkksParams) -> int:
    """A generous bound on one serialized fresh ciphertext (refuses oversized blobs early)."""
    return 2 * len(params.coeff_mod_bit_sizes) * params.poly_modulus_degree * 8 + (1 << 16)


def _new_private_context(params: CkksParams) -> _TsContext:
    """A fresh CKKS context holding a new secret key (for the key owner only)."""
    ctx = ts.context(
        ts.SCHEME_TYPE.CKKS,
        poly_modulus_degree=params.poly_modulus_degree,
        coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes),
    )
    ctx.global_scale = params.scale
    return ctx


def _serialize_public(ctx: _TsContext) -> bytes:
    """The context without its secret key, relinearisation or Galois keys."""
    return bytes(
        ctx.serialize(
            save_public_key=True,
            save_secret_key=False,
            save_galois_keys=False,
            save_relin_keys=False,
        )
    )


def _check_context(ctx: _TsContext, params: CkksParams) -> None:
    """Refuse a context whose parameters are not the session's."""
    try:
        data = ctx.seal_context().data
        key_level = data.key_context_data()
        data_level = data.first_context_data()
        scheme_ok = bool(key_level.parms().scheme() == ts.SCHEME_TYPE.CKKS.value)
        degree = int(key_level.parms().poly_modulus_degree())
        key_bits = int(key_level.total_coeff_modulus_bit_count())
        data_bits = int(data_level.total_coeff_modulus_bit_count())
        chain = int(data_level.chain_index())
        scale = float(ctx.global_scale)
    except Exception as exc:  # tenseal raises several types on a broken context
        raise ProtocolError(f"the CKKS context cannot be inspected: {exc}") from exc
    expected = (
        True,
        params.poly_modulus_degree,
        sum(params.coeff_mod_bit_sizes),
        params.data_bits,
        len(params.coeff_mod_bit_sizes) - 2,
        params.scale,
    )
    if (scheme_ok, degree, key_bits, data_bits, chain, scale) != expected:
        raise ProtocolError(
            "the CKKS context does not match the session parameters (scheme, degree, "
            f"moduli or scale): expected {params}"
        )


def _load_public_context(blob: object, params: CkksParams) -> _TsContext:
    """Deserialise a public context; refuse anything that carries a secret key."""
    if not isinstance(blob, bytes) or not blob:
        raise ProtocolError("a CKKS context must be non-empty bytes")
    try:
        ctx = ts.context_from(blob)
    except Exception as exc:
        raise ProtocolError(f"the CKKS context cannot be deserialised: {exc}") from exc
    if ctx.is_private() or ctx.has_secret_key():
        raise ProtocolError("the CKKS context carries a secret key; only a public one is accepted")
    if not (ctx.is_public() and ctx.has_public_key()):
        raise ProtocolError("the CKKS context carries no public key to encrypt with")
    _check_context(ctx, params)
    return ctx


def _load_chunk(ctx: _TsContext, blob: object, size: int, params: CkksParams) -> _TsVector:
    """Deserialise one ciphertext and check it is a fresh-shaped vector of ``size`` values."""
    if not isinstance(blob, bytes) or not blob:
        raise ProtocolError("a ciphertext must be non-empty bytes")
    if len(blob) > _max_chunk_bytes(params):
        raise ProtocolError(f"a ciphertext of {len(blob)} bytes is larger than possible")
    try:
        vector = ts.ckks_vector_from(ctx, blob)
        n_values = int(vector.size())
        ciphertexts = vector.ciphertext()
        if len(ciphertexts) != 1:
            raise ProtocolError(f"a CKKS vector holds one ciphertext, got {len(ciphertexts)}")
        ct = ciphertexts[0]
        shape_ok = bool(
            ct.size() == 2
            and ct.is_ntt_form()
            and not ct.is_transparent()
            and ct.parms_id() == ctx.seal_context().data.first_parms_id()
        )
        scale = float(ct.scale)
    except ProtocolError:
        raise
    except Exception as exc:
        raise ProtocolError(f"the ciphertext cannot be deserialised: {exc}") from exc
    if n_values != size:
        raise ProtocolError(f"a ciphertext holds {n_values} values, expected {size}")
    if not shape_ok:
        raise ProtocolError("the ciphertext is not a fresh two-part ciphertext at the top level")
    if scale != params.scale:
        raise ProtocolError(f"the ciphertext has scale {scale}, expected 2**{params.scale_bits}")
    return vector


def _encrypt(ctx: _TsContext, values: np.ndarray, params: CkksParams) -> tuple[bytes, ...]:
    """``values`` as serialized CKKS vectors of at most ``slots`` values each."""
    return tuple(
        bytes(ts.ckks_vector(ctx, values[start : start + params.slots].tolist()).serialize())
        for start in range(0, values.shape[0], params.slots)
    )


def _decrypt(vector: _TsVector) -> np.ndarray:
    """Decrypt a vector linked to a private context."""
    return np.asarray(vector.decrypt(), dtype=np.float64)


def _add(left: _TsVector, right: _TsVector) -> _TsVector:
    return left + right


def _serialize_vector(vector: _TsVector) -> bytes:
    return bytes(vector.serialize())


def _is_private(ctx: _TsContext) -> bool:
    return bool(ctx.is_private())


# ----------------------------------------------------------------------------------- client


class CkksClient:
    """The client side: the key owner's duties, if asked, and encrypting the client's input.

    ``directory`` maps every client id to its registered Ed25519 identity public key, the key
    owner's included; it is how a client tells the key owner's public context from one the
    server made up. Every refused message raises :class:`~fedfort.errors.ProtocolError` and
    leaves the machine unchanged.
    """

    def __init__(
        self,
        client_id: str,
        session: Session,
        identity: SigningKey,
        directory: Mapping[str, bytes],
        params: CkksParams,
        update: np.ndarray,
        weight: float,
    ) -> None:
        if directory.get(client_id) != identity.public:
            raise ConfigError(
                f"client {client_id!r} must be in the directory under its identity public key"
            )
        try:
            values = weighted_input(np.asarray(update), weight)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        if not np.all(np.isfinite(values)):
            raise ConfigError("a CKKS input must be finite")
        peak = float(np.max(np.abs(values)))
        if peak > params.max_input:
            raise ConfigError(
                f"a CKKS input of magnitude {peak:.3g} exceeds {params.max_input:.3g}; "
                "clip the update or use a smaller scale_bits"
            )
        self.client_id = client_id
        self._sid = session.sid
        self._identity = identity
        self._directory = dict(directory)
        self._params = params
        self._input = values
        self._secret: _TsContext | None = None  # the private context, key owner only
        self._bundle: PublicKeyBundle | None = None  # the bundle this client issued
        self._decrypted = False
        self._encrypted: EncryptedInput | None = None
        self._encrypted_under: bytes | None = None  # digest of the context used

    @property
    def is_key_owner(self) -> bool:
        """Whether this client issued the session's key pair."""
        return self._bundle is not None

    def handle(self, message: object) -> object:
        """Answer one server message; refuse anything malformed, forged or out of order."""
        if isinstance(message, KeyRequest):
            return self._on_key_request(message)
        if isinstance(message, EncryptRequest):
            return self._on_encrypt_request(message)
        if isinstance(message, DecryptRequest):
            return self._on_decrypt_request(message)
        raise ProtocolError(f"a CKKS client cannot handle a {type(message).__name__}")

    def _check_sid(self, sid: object) -> None:
        if sid != self._sid:
            raise ProtocolError("the message belongs to another session")

    def _on_key_request(self, message: KeyRequest) -> PublicKeyBundle:
        self._check_sid(message.sid)
        if self._decrypted:
            raise ProtocolError("this session's key was already used and destroyed")
        if self._bundle is not None:  # a retransmitted request: the same key, never a new one
            return self._bundle
        secret = _new_private_context(self._params)
        context = _serialize_public(secret)
        bundle = PublicKeyBundle(
            sid=self._sid,
            owner=self.client_id,
            context=context,
            signature=self._identity.sign(_bundle_message(self._sid, context)),
        )
        self._secret, self._bundle = secret, bundle
        return bundle

    def _on_encrypt_request(self, message: EncryptRequest) -> EncryptedInput:
        self._check_sid(message.sid)
        bundle = message.bundle
        if not isinstance(bundle, PublicKeyBundle):
            raise ProtocolError("an EncryptRequest must carry a PublicKeyBundle")
        self._check_sid(bundle.sid)
        if not (
            isinstance(bundle.owner, str)
            and isinstance(bundle.context, bytes)
            and isinstance(bundle.signature, bytes)
        ):
            raise ProtocolError("a PublicKeyBundle has malformed fields")
        owner_key = self._directory.get(bundle.owner)
        if owner_key is None:
            raise ProtocolError(f"the key owner {bundle.owner!r} is not in the directory")
        if not verify(owner_key, bundle.signature, _bundle_message(self._sid, bundle.context)):
            raise ProtocolError(
                f"the public context is not signed by {bundle.owner!r}; refusing to encrypt"
            )
        if bundle.owner == self.client_id and bundle != self._bundle:
            raise ProtocolError("a public context in this client's name that it did not issue")
        digest = hashlib.sha256(bundle.context).digest()
        if self._encrypted is not None:
            if digest != self._encrypted_under:
                raise ProtocolError("already encrypted under another key in this session")
            return self._encrypted  # a retransmitted request: the same ciphertexts
        ctx = _load_public_context(bundle.context, self._params)
        reply = EncryptedInput(
            sid=self._sid,
            client_id=self.client_id,
            chunks=_encrypt(ctx, self._input, self._params),
            length=int(self._input.shape[0]),
        )
        self._encrypted, self._encrypted_under = reply, digest
        return reply

    def _on_decrypt_request(self, message: DecryptRequest) -> DecryptedSum:
        self._check_sid(message.sid)
        if self._decrypted:
            raise ProtocolError("the sum of this session was already decrypted; refusing again")
        if self._secret is None:
            raise ProtocolError("this client holds no key for this session")
        length, chunks, contributors = message.length, message.chunks, message.contributors
        if not _is_int(length) or length < 1:
            raise ProtocolError("a DecryptRequest needs a positive integer length")
        if not _is_bytes_tuple(chunks) or len(chunks) != self._params.chunks(length):
            raise ProtocolError(
                f"a sum of {length} values comes in {self._params.chunks(length)} ciphertexts"
            )
        if (
            not isinstance(contributors, tuple)
            or not contributors
            or not all(isinstance(c, str) and c in self._directory for c in contributors)
            or len(set(contributors)) != len(contributors)
        ):
            raise ProtocolError("the contributors must be distinct clients of the directory")
        sizes = self._params.chunk_sizes(length)
        vectors = [
            _load_chunk(self._secret, blob, size, self._params)
            for blob, size in zip(chunks, sizes, strict=True)
        ]
        try:
            values = np.concatenate([_decrypt(v) for v in vectors])
        except Exception as exc:
            raise ProtocolError(f"the sum cannot be decrypted: {exc}") from exc
        if values.shape[0] != length:
            raise ProtocolError(f"the sum decrypted to {values.shape[0]} values, not {length}")
        self._secret, self._decrypted = None, True  # one decryption per session, then forget
        return DecryptedSum(sid=self._sid, values=values.astype("<f8").tobytes())


# ----------------------------------------------------------------------------------- server


class CkksServer:
    """The server side: distribute the public key, add the ciphertexts, ask for the sum.

    The machine never holds a secret key: a bundle whose context carries one aborts the
    session. A malformed reply at the encrypt stage is dropped and its reason kept in
    :attr:`rejected`; every participant that does not end up in the sum is in :attr:`dropped`
    with the stage (``"encrypt"``). Too few valid inputs, or a key owner that does not answer
    correctly, raise :class:`~fedfort.errors.SecAggAbort`; the machine then stays aborted.
    """

    def __init__(
        self,
        session: Session,
        participants: Sequence[str],
        key_owner: str,
        min_inputs: int,
        params: CkksParams,
        dim: int | None = None,
    ) -> None:
        ids = list(participants)
        if not ids or not all(isinstance(c, str) and c for c in ids):
            raise ConfigError("participants must be a non-empty list of client ids")
        if len(set(ids)) != len(ids):
            raise ConfigError("participants must be distinct")
        if not isinstance(key_owner, str) or not key_owner:
            raise ConfigError("key_owner must be a client id")
        if not _is_int(min_inputs) or not 1 <= min_inputs <= len(ids):
            raise ConfigError(
                f"min_inputs must be between 1 and the {len(ids)} participants, got {min_inputs}"
            )
        self._sid = session.sid
        self.participants: tuple[str, ...] = tuple(ids)
        self.key_owner = key_owner
        self.min_inputs = min_inputs
        self.params = params
        self.rejected: dict[str, str] = {}
        self.dropped: dict[str, str] = {}
        self.traffic: dict[str, int] = {"client_to_server": 0, "server_to_client": 0}
        self._stage = "init"
        self._abort_reason = ""
        self._context: _TsContext | None = None  # the public context, once received
        self._length = 0
        self.dim = dim
        self._contributors: tuple[str, ...] = ()
        self._result: SecureSum | None = None

    @property
    def stage(self) -> str:
        """``init``, ``key``, ``encrypt``, ``decrypt``, ``done`` or ``aborted``."""
        return self._stage

    @property
    def done(self) -> bool:
        return self._stage == "done"

    def holds_secret_key(self) -> bool:
        """Whether any context this machine holds carries a secret key (never, by design)."""
        return self._context is not None and _is_private(self._context)

    def result(self) -> SecureSum:
        if self._result is None:
            why = f" (aborted: {self._abort_reason})" if self._stage == "aborted" else ""
            raise RuntimeError(f"the CKKS session has no result yet{why}")
        return self._result

    def start(self) -> dict[str, object]:
        if self._stage != "init":
            raise RuntimeError("the CKKS session was already started")
        self._stage = "key"
        return {self.key_owner: KeyRequest(sid=self._sid)}

    def step(self, replies: Mapping[str, object]) -> dict[str, object]:
        if self._stage == "aborted":
            raise SecAggAbort(self._abort_reason)
        if self._stage == "key":
            return self._after_key(replies)
        if self._stage == "encrypt":
            return self._after_encrypt(replies)
        if self._stage == "decrypt":
            self._after_decrypt(replies)
            return {}
        raise RuntimeError(f"the CKKS session cannot step at stage {self._stage!r}")

    def _abort(self, reason: str, cause: Exception | None = None) -> SecAggAbort:
        self._stage, self._abort_reason = "aborted", reason
        self._context = None
        return SecAggAbort(reason) if cause is None else SecAggAbort(f"{reason}: {cause}")

    def _note_unsolicited(self, replies: Mapping[str, object], expected: set[str]) -> None:
        for cid in replies:
            if cid not in expected:
                self.rejected[cid] = f"unsolicited reply at stage {self._stage!r}"

    def _after_key(self, replies: Mapping[str, object]) -> dict[str, object]:
        self._note_unsolicited(replies, {self.key_owner})
        bundle = replies.get(self.key_owner)
        if bundle is None:
            self.dropped[self.key_owner] = "key"
            raise self._abort(f"key owner dropped: {self.key_owner!r} sent no public key")
        try:
            if not isinstance(bundle, PublicKeyBundle):
                raise ProtocolError(f"expected a PublicKeyBundle, got {type(bundle).__name__}")
            if bundle.sid != self._sid or bundle.owner != self.key_owner:
                raise ProtocolError("the bundle names another session or another owner")
            if not isinstance(bundle.signature, bytes):
                raise ProtocolError("the bundle's signature is not bytes")
            context = _load_public_context(bundle.context, self.params)
        except ProtocolError as exc:
            raise self._abort(f"the key owner's public key is refused ({exc})") from exc
        self._context = context
        size = len(bundle.context) + len(bundle.signature)
        self.traffic["client_to_server"] += size
        self.traffic["server_to_client"] += size * len(self.participants)
        self._stage = "encrypt"
        request = EncryptRequest(sid=self._sid, bundle=bundle)
        return {cid: request for cid in self.participants}

    def _claimed_length(self, replies: Mapping[str, object]) -> int:
        """The input length most participants claim (ties: the earliest participant's).

        One client replying with another dimension must not get the honest ones rejected.
        A server that knows the dimension (``dim``, the weighted input's length) uses it.
        """
        if self.dim is not None:
            return self.dim
        claims: dict[int, int] = {}
        for cid in self.participants:
            reply = replies.get(cid)
            if isinstance(reply, EncryptedInput) and _is_int(reply.length):
                claims[reply.length] = claims.get(reply.length, 0) + 1
        if not claims:
            return 0
        best = max(claims.values())
        return next(length for length, count in claims.items() if count == best)

    def _check_input(self, cid: str, reply: object, length: int) -> list[_TsVector]:
        if not isinstance(reply, EncryptedInput):
            raise ProtocolError(f"expected an EncryptedInput, got {type(reply).__name__}")
        if reply.sid != self._sid:
            raise ProtocolError("wrong session id")
        if reply.client_id != cid:
            raise ProtocolError(f"claims to be {reply.client_id!r}")
        if not _is_bytes_tuple(reply.chunks):
            raise ProtocolError("the chunks are not a tuple of bytes")
        self.traffic["client_to_server"] += sum(len(b) for b in reply.chunks)
        if reply.length != length or length < 2:
            raise ProtocolError(f"length {reply.length!r}, most participants have {length}")
        expected = self.params.chunks(length)
        if len(reply.chunks) != expected:
            raise ProtocolError(f"{len(reply.chunks)} chunks, expected {expected}")
        sizes = self.params.chunk_sizes(length)
        return [
            _load_chunk(self._context, blob, size, self.params)
            for blob, size in zip(reply.chunks, sizes, strict=True)
        ]

    def _after_encrypt(self, replies: Mapping[str, object]) -> dict[str, object]:
        self._note_unsolicited(replies, set(self.participants))
        length = self._claimed_length(replies)
        total: list[_TsVector] | None = None
        included: list[str] = []
        for cid in self.participants:
            if cid not in replies:
                self.dropped[cid] = "encrypt"
                continue
            try:
                vectors = self._check_input(cid, replies[cid], length)
                try:  # out-of-place additions: a failure leaves the running sum untouched
                    summed = (
                        vectors
                        if total is None
                        else [_add(a, b) for a, b in zip(total, vectors, strict=True)]
                    )
                except Exception as exc:
                    raise ProtocolError(f"the ciphertexts cannot be added: {exc}") from exc
            except ProtocolError as exc:
                self.rejected[cid] = str(exc)
                self.dropped[cid] = "encrypt"
                continue
            total = summed
            included.append(cid)
        if total is None or len(included) < self.min_inputs:
            raise self._abort(
                f"only {len(included)} valid encrypted inputs, fewer than min_inputs="
                f"{self.min_inputs}; the session ends without a result"
            )
        chunks = tuple(_serialize_vector(v) for v in total)
        self.traffic["server_to_client"] += sum(len(b) for b in chunks)
        self._length = length
        self._contributors = tuple(sorted(included))
        self._stage = "decrypt"
        request = DecryptRequest(
            sid=self._sid, chunks=chunks, length=length, contributors=self._contributors
        )
        return {self.key_owner: request}

    def _after_decrypt(self, replies: Mapping[str, object]) -> None:
        self._note_unsolicited(replies, {self.key_owner})
        reply = replies.get(self.key_owner)
        if reply is None:
            self.dropped[self.key_owner] = "decrypt"
            raise self._abort(f"key owner dropped: {self.key_owner!r} did not decrypt the sum")
        if not isinstance(reply, DecryptedSum) or reply.sid != self._sid:
            raise self._abort("the key owner's reply is not a DecryptedSum of this session")
        if not isinstance(reply.values, bytes) or len(reply.values) != 8 * self._length:
            raise self._abort(f"the decrypted sum does not hold {self._length} float64 values")
        self.traffic["client_to_server"] += len(reply.values)
        values = np.frombuffer(reply.values, dtype="<f8").astype(np.float64)
        if not np.all(np.isfinite(values)):
            raise self._abort("the decrypted sum is not finite")
        self._result = SecureSum(
            total=values[:-1].copy(),
            weight=float(values[-1]),
            included=self._contributors,
            dropped=dict(self.dropped),
            traffic=dict(self.traffic),
        )
        self._context = None  # nothing left to encrypt or add
        self._stage = "done"
