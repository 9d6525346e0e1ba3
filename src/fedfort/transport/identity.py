"""Identity keys bound to certificates, and signed envelopes (sans-I/O).

Every party has a long-term Ed25519 *identity key* (:class:`~fedfort.crypto.primitives.SigningKey`).
An :class:`IdentityBinding` ties it to a subject (a client id, or ``"server"``) and a version:
the subject's X.509 certificate key (issued by the federation CA) signs the binding, and the
identity key signs it too (proof of possession). Anyone holding the CA certificate can check a
binding, so the server cannot substitute a client's key in the directory it hands to the
secure-aggregation protocol, and no one can bind a key they do not hold. Rotation is a new
binding with a higher version; the old key stops verifying the moment the new binding is
accepted.

An *envelope* carries one message: the sender signs, with its identity key, the statement

    "fedfort-envelope-v1" | federation | sender | recipient | kind | round | attempt | step
                          | nonce | SHA-256(payload) | len(payload) | key version

(each field length-prefixed), where ``nonce`` was issued by the server with the work item. A
receiver checks the size, the hash and the signature before it decodes a byte of the payload.
Signing the federation, the round and the server nonce is what makes a captured message useless
elsewhere: in another federation, another round, or a second time (Bonawitz et al. 2017 use the
same binding of signatures to session and round).
"""

from __future__ import annotations

import hashlib
import re
import struct
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from fedfort.crypto.keyfiles import load_signing_key, save_signing_key
from fedfort.crypto.pki import (
    CertificateRefused,
    RevocationList,
    common_name,
    sign_with_key,
    verify_certificate,
    verify_with_certificate,
)
from fedfort.crypto.primitives import SigningKey, verify
from fedfort.errors import ConfigError, Refused
from fedfort.transport.proto import fedfort_pb2 as pb

__all__ = [
    "ENVELOPE_KINDS",
    "NONCE_BYTES",
    "SERVER",
    "IdentityBinding",
    "Route",
    "check_binding",
    "envelope_statement",
    "load_identity_key",
    "make_binding",
    "open_envelope",
    "save_identity_key",
    "seal_envelope",
]

SERVER = "server"
NONCE_BYTES = 16
ENVELOPE_KINDS = frozenset({"task", "secagg", "update", "ack", "idle", "finished"})
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
IdentityBinding = pb.IdentityBinding


def _field(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


def _binding_statement(b: pb.IdentityBinding) -> bytes:
    return b"fedfort-binding-v1" + b"".join(
        _field(x)
        for x in (
            b.federation_id.encode(),
            b.subject.encode(),
            b.public_key,
            struct.pack(">Q", b.version),
        )
    )


def make_binding(
    federation_id: str,
    subject: str,
    identity: SigningKey,
    version: int,
    certificate_pem: bytes,
    certificate_key: ec.EllipticCurvePrivateKey,
) -> pb.IdentityBinding:
    """Bind ``identity`` to ``subject`` at ``version`` with the subject's certificate key."""
    if version < 1:
        raise ConfigError(f"binding versions start at 1, got {version}")
    b = pb.IdentityBinding(
        federation_id=federation_id,
        subject=subject,
        public_key=identity.public,
        version=version,
        certificate=certificate_pem,
    )
    statement = _binding_statement(b)
    b.signature = sign_with_key(certificate_key, statement)
    b.proof = identity.sign(statement)
    return b


def check_binding(
    b: pb.IdentityBinding,
    federation_id: str,
    ca_cert: x509.Certificate,
    *,
    revoked: RevocationList | None = None,
    now: datetime | None = None,
) -> x509.Certificate:
    """Verify a binding; return its certificate or raise :class:`Refused` with a reason.

    A client's binding needs a client certificate whose common name is the subject; the
    server's (subject ``"server"``) needs a server certificate.
    """
    if b.federation_id != federation_id:
        raise Refused("wrong_federation", f"binding for federation {b.federation_id!r}")
    if not _ID.match(b.subject):
        raise Refused("malformed", "binding subject is not a valid id")
    role: Literal["server", "client"] = "server" if b.subject == SERVER else "client"
    cert = verify_certificate(b.certificate, ca_cert, role=role, revoked=revoked, now=now)
    if role == "client" and common_name(cert) != b.subject:
        raise CertificateRefused(
            "identity_mismatch",
            f"certificate of {common_name(cert)!r} cannot bind a key for {b.subject!r}",
        )
    if len(b.public_key) != 32 or b.version < 1:
        raise Refused("malformed", "binding key must be 32 bytes and version >= 1")
    statement = _binding_statement(b)
    if not verify_with_certificate(cert, statement, b.signature):
        raise Refused("bad_signature", f"binding of {b.subject!r} not signed by its certificate")
    if not verify(b.public_key, b.proof, statement):
        raise Refused("bad_signature", f"binding of {b.subject!r} lacks proof of possession")
    return cert


def envelope_statement(e: pb.Envelope) -> bytes:
    """The bytes an envelope's signature covers (every field but the signature)."""
    return b"fedfort-envelope-v1" + b"".join(
        _field(x)
        for x in (
            e.federation_id.encode(),
            e.sender.encode(),
            e.recipient.encode(),
            e.kind.encode(),
            struct.pack(">QII", e.round, e.attempt, e.step),
            e.nonce,
            e.payload_sha256,
            struct.pack(">QQ", e.payload_size, e.key_version),
        )
    )


@dataclass(frozen=True)
class Route:
    """Where an envelope goes and what it answers."""

    federation_id: str
    sender: str
    recipient: str
    kind: str
    round: int
    attempt: int
    step: int
    nonce: bytes


def seal_envelope(
    route: Route, payload: bytes, identity: SigningKey, key_version: int
) -> pb.Envelope:
    """The signed envelope of ``payload`` on ``route``."""
    e = pb.Envelope(
        federation_id=route.federation_id,
        sender=route.sender,
        recipient=route.recipient,
        kind=route.kind,
        round=route.round,
        attempt=route.attempt,
        step=route.step,
        nonce=route.nonce,
        payload_sha256=hashlib.sha256(payload).digest(),
        payload_size=len(payload),
        key_version=key_version,
    )
    e.signature = identity.sign(envelope_statement(e))
    return e


def open_envelope(e: pb.Envelope, payload: bytes, public_key: bytes, max_bytes: int) -> None:
    """Check size, hash and signature of ``payload`` under ``e``; raise :class:`Refused`."""
    if e.payload_size > max_bytes or len(payload) > max_bytes:
        raise Refused("oversized", f"payload of {e.payload_size} bytes exceeds {max_bytes}")
    if len(payload) != e.payload_size:
        raise Refused("truncated", f"payload has {len(payload)} of {e.payload_size} bytes")
    if hashlib.sha256(payload).digest() != e.payload_sha256:
        raise Refused("payload_hash_mismatch", "payload does not match its signed SHA-256")
    if not verify(public_key, e.signature, envelope_statement(e)):
        raise Refused("bad_signature", f"envelope from {e.sender!r} has an invalid signature")


save_identity_key = save_signing_key
load_identity_key = load_signing_key
