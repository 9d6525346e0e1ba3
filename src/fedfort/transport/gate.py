"""The server's admission gate: who may speak, and which messages are fresh (sans-I/O).

Everything a client sends passes :class:`Gate` before the round engine sees it. The gate
holds no sockets; the gRPC service hands it the peer's certificate and the received bytes, and
it answers with the decoded message or raises :class:`~fedfort.errors.Refused` with a reason
code. Every refusal is counted (:attr:`Gate.counts`) and logged. Reason codes, in the order
they are checked:

==========================  ============================================================
``revoked_certificate``     the peer's certificate is on the CA's revocation list
``foreign_certificate``     not issued by this federation's CA (TLS refuses these first)
``expired_certificate``     outside its validity window (TLS refuses these first)
``unknown_client``          not on the run's roster, or never enrolled
``identity_mismatch``       the certificate's name is not the client the message claims
``rate_limited``            the client exceeded its request rate
``stream_limit``            the client already holds its share of concurrent RPCs
``buffer_limit``            the client's uploads in flight would exceed its byte budget
``stream_timeout``          an upload sent nothing for too long, or ran past its deadline
``wrong_federation``        signed for another federation
``oversized``/``truncated`` payload larger than allowed / shorter than signed
``payload_hash_mismatch``   payload differs from the SHA-256 the sender signed
``bad_signature``           not signed by the client's current identity key
``replayed``                the exact message was already accepted (same nonce, same bytes)
``duplicate``               a second, different answer to a work item already answered
``stale_round``             for a round before the current one
``future_round``            for a round after the current one
``unknown_nonce``           the server never issued (or already withdrew) this nonce
``mismatched_nonce``        the nonce was issued for another kind, attempt or step
``wrong_padding``           the payload is not exactly the padded size of its work item, or
                            its padding is not canonical zero bytes (docs/side-channels.md)
``malformed``               the payload does not decode to the expected message
``mismatched_header``       the message's own round or client id contradicts its envelope
``undeclared``              a first enrollment without a declaration of its run and data
``schema_mismatch``         the client's data differs from the federation's schema
``config_mismatch``         the client's config describes another run
==========================  ============================================================

The last three are the enrollment's (:mod:`fedfort.transport.enrollment`), checked when the
gate holds :class:`~fedfort.transport.enrollment.EnrollmentTerms` (a served run always does).

The certificate codes, ``unknown_client`` and ``rate_limited`` are checked by
:meth:`Gate.member` from the TLS peer certificate alone, before the server reads a single
request byte (``identity_mismatch`` needs the request's claim, read after admission);
``stream_limit``, ``buffer_limit`` and ``stream_timeout`` are
:mod:`fedfort.transport.admission`'s. A refusal is counted and logged under the identity the
certificate proves (its common name when this federation's CA issued it, ``?`` otherwise), with
the identity the request claimed in its detail, so a peer cannot have its refusals blamed on
another client.

Values inside a well-formed update (NaN/Inf, wrong shape) are the round engine's to judge:
:class:`~fedfort.server.verify.VerifyUpdates` rejects them with its own reason codes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass

from cryptography import x509

from fedfort.crypto.pki import RevocationList, common_name, verify_certificate
from fedfort.errors import MalformedMessage, Refused
from fedfort.messages import ClientUpdate, EvaluationReport
from fedfort.transport import codec
from fedfort.transport.enrollment import EnrollmentTerms
from fedfort.transport.identity import NONCE_BYTES, check_binding, open_envelope
from fedfort.transport.padding import SizeRule, open_payload
from fedfort.transport.proto import fedfort_pb2 as pb
from fedfort.transport.registry import Registry

__all__ = ["Admitted", "Gate", "TokenBucket"]

#: the kind of a client's reply to each kind of work item the server sends
REPLY_KIND: dict[str, str] = {"task": "update", "secagg": "secagg", "evaluate": "evaluation"}

#: what a client may send, by envelope kind: its update, a secure-aggregation reply (any
#: whitelisted message), its evaluation report
_REPLY_TYPES: dict[str, type | None] = {
    "update": ClientUpdate,
    "secagg": None,
    "evaluation": EvaluationReport,
}

log = logging.getLogger("fedfort.transport")


class TokenBucket:
    """Per-key token buckets: ``rate`` requests per second, bursts up to ``burst``."""

    def __init__(
        self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self._state: dict[str, tuple[float, float]] = {}

    def allow(self, key: str) -> bool:
        now = self.clock()
        tokens, last = self._state.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1.0:
            self._state[key] = (tokens, now)
            return False
        self._state[key] = (tokens - 1.0, now)
        return True


@dataclass(frozen=True)
class _Issued:
    kind: str
    round: int
    attempt: int
    step: int
    rule: SizeRule | None = None


@dataclass(frozen=True)
class Admitted:
    """A message that passed the gate."""

    client_id: str
    kind: str
    round: int
    attempt: int
    step: int
    nonce: bytes
    body: object


class Gate:
    """Admission control for one federation (thread-safe)."""

    def __init__(
        self,
        federation_id: str,
        ca_cert: x509.Certificate,
        registry: Registry,
        roster: Collection[str],
        *,
        revoked: RevocationList | None = None,
        max_payload: int = 64 * 2**20,
        rate_per_s: float = 50.0,
        burst: float = 100.0,
        clock: Callable[[], float] = time.monotonic,
        terms: EnrollmentTerms | None = None,
    ) -> None:
        self.federation_id = federation_id
        #: what a joining client must declare (its run and its data's schema); None: nothing
        self.terms = terms
        self.ca_cert = ca_cert
        self.registry = registry
        self.roster = frozenset(roster)
        self.revoked = revoked
        self.max_payload = max_payload
        self.limiter = TokenBucket(rate_per_s, burst, clock)
        self.counts: Counter[str] = Counter()
        self.accepted = 0
        self.round = 0
        self._lock = threading.RLock()
        self._certs: dict[bytes, x509.Certificate] = {}
        self._keys: dict[str, tuple[bytes, int]] = {}
        self._issued: dict[tuple[str, bytes], _Issued] = {}
        self._answered: dict[tuple[str, bytes], tuple[int, bytes]] = {}
        #: called with (client, reason, detail) for every refusal (the audit log, metrics)
        self.on_refused: Callable[[str, str, str], None] | None = None
        #: called with (client, key version, SHA-256 of its public key) on a new binding
        self.on_enrolled: Callable[[str, int, str], None] | None = None

    # -- refusals ---------------------------------------------------------------------------

    def refuse(self, client: str, reason: str, detail: str, *, report: bool = True) -> Refused:
        """Count and log a refusal; return the error to raise.

        ``report=False`` counts a refusal already reported elsewhere (the engine's own
        verification, which its round record carries to the audit log and metrics).
        """
        with self._lock:
            self.counts[reason] += 1
        log.warning("refused %s from %s: %s", reason, client or "?", detail)
        if report and self.on_refused is not None:
            self.on_refused(client, reason, detail)
        return Refused(reason, detail)

    # -- peers ------------------------------------------------------------------------------

    def _refused_as(self, certificate_pem: bytes | None, claimed: str, exc: Refused) -> Refused:
        """Count ``exc`` under the certificate's identity, naming the claimed id in the detail."""
        identity = self.identity_of(certificate_pem)
        detail = exc.detail
        if claimed and claimed != identity:
            detail = f"{detail} (request claimed to be {claimed[:64]!r})"
        self.refuse(identity, exc.reason, detail)
        return exc

    def identity_of(self, certificate_pem: bytes | None) -> str:
        """The client id a certificate proves: its common name when this federation's CA
        issued it (even if it is now revoked or expired), else ``""`` (nobody we know)."""
        if not certificate_pem:
            return ""
        with self._lock:
            cached = self._certs.get(hashlib.sha256(certificate_pem).digest())
        if cached is not None:
            return common_name(cached)
        try:
            cert = x509.load_pem_x509_certificate(bytes(certificate_pem))
            cert.verify_directly_issued_by(self.ca_cert)
        except Exception:  # unparsable, or another CA's: the name it carries proves nothing
            return ""
        return common_name(cert)

    def _certificate(self, certificate_pem: bytes | None) -> x509.Certificate:
        """The verified peer certificate; its validity window and the CRL are checked on every
        call, so a long-lived connection loses its access when its certificate expires or is
        revoked, not only at its handshake."""
        if not certificate_pem:
            raise Refused("foreign_certificate", "the peer presented no client certificate")
        digest = hashlib.sha256(certificate_pem).digest()
        with self._lock:
            cert = self._certs.get(digest)
        now = dt.datetime.now(dt.UTC)
        if (
            cert is None
            or not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc
            or (self.revoked is not None and self.revoked.is_revoked(cert.serial_number))
        ):
            cert = verify_certificate(
                certificate_pem, self.ca_cert, role="client", revoked=self.revoked
            )
            with self._lock:
                if len(self._certs) > 4 * len(self.roster) + 16:
                    self._certs.clear()
                self._certs[digest] = cert
        return cert

    def _member(self, certificate_pem: bytes | None, *, rate: bool) -> str:
        name = common_name(self._certificate(certificate_pem))
        if name not in self.roster:
            raise Refused("unknown_client", f"{name!r} is not a member of this federation")
        if rate:
            self._rate(name)
        return name

    def _rate(self, name: str) -> None:
        with self._lock:
            allowed = self.limiter.allow(name)
        if not allowed:
            raise Refused("rate_limited", f"{name!r} exceeded its request rate; back off")

    def member(self, certificate_pem: bytes | None) -> str:
        """Admit the TLS peer on its certificate alone; return its client id.

        Issued by this federation's CA, inside its validity window, not on the CRL, on the
        run's roster and within its request rate: everything the server checks before it reads
        a single byte of a request, so a peer refused here costs one certificate check.
        """
        try:
            return self._member(certificate_pem, rate=True)
        except Refused as exc:
            raise self._refused_as(certificate_pem, "", exc) from None

    def recheck(self, certificate_pem: bytes | None) -> Refused | None:
        """The refusal a connection already admitted would get now (revoked, expired), counted;
        ``None`` while its certificate is still good. Charges no request rate."""
        try:
            self._member(certificate_pem, rate=False)
        except Refused as exc:
            return self._refused_as(certificate_pem, "", exc)
        return None

    def peer(self, certificate_pem: bytes | None, claimed: str, *, rate: bool = True) -> str:
        """Authenticate the TLS peer as client ``claimed``; return its id.

        ``rate=False`` when :meth:`member` already charged this request's rate.
        """
        try:
            return self._peer(certificate_pem, claimed, rate=rate)
        except Refused as exc:
            raise self._refused_as(certificate_pem, claimed, exc) from None

    def _peer(self, certificate_pem: bytes | None, claimed: str, *, rate: bool = True) -> str:
        name = self._member(certificate_pem, rate=False)
        if name != claimed:
            raise Refused(
                "identity_mismatch", f"certificate of {name!r} used to speak for {claimed!r}"
            )
        if rate:
            self._rate(name)
        return name

    def enroll(
        self,
        certificate_pem: bytes | None,
        binding: pb.IdentityBinding,
        *,
        declaration: pb.Declaration | None = None,
        rate: bool = True,
    ) -> None:
        """Register (or rotate) a client's identity binding.

        With :attr:`terms`, a client's first enrollment must carry a ``declaration`` that
        agrees with them; a declaration sent with a key rotation is checked too.
        """
        try:
            self._peer(certificate_pem, binding.subject, rate=rate)
            check_binding(binding, self.federation_id, self.ca_cert, revoked=self.revoked)
            first = self.registry.get(binding.subject) is None
            if self.terms is not None and (first or declaration is not None):
                self.terms.check(declaration)
            changed = self.registry.put(binding)
        except Refused as exc:
            raise self._refused_as(certificate_pem, binding.subject, exc) from None
        with self._lock:
            self._keys.pop(binding.subject, None)
        if changed:
            log.info("enrolled %s with key version %d", binding.subject, binding.version)
            if self.on_enrolled is not None:
                digest = hashlib.sha256(binding.public_key).hexdigest()
                self.on_enrolled(binding.subject, binding.version, digest)

    def key_of(self, client_id: str) -> tuple[bytes, int] | None:
        """The client's current identity public key and its version (``None``: not enrolled)."""
        with self._lock:
            cached = self._keys.get(client_id)
        if cached is not None:
            return cached
        b = self.registry.get(client_id)
        if b is None:
            return None
        with self._lock:
            self._keys[client_id] = (b.public_key, b.version)
        return b.public_key, b.version

    def enrolled(self) -> list[str]:
        return sorted(s for s in self.registry.all() if s in self.roster)

    # -- work items -------------------------------------------------------------------------

    def begin_round(self, round_: int) -> None:
        """Make ``round_`` current: earlier rounds' nonces and replay records are dropped."""
        with self._lock:
            self.round = round_
            self._issued = {k: v for k, v in self._issued.items() if v.round >= round_}
            self._answered = {k: v for k, v in self._answered.items() if v[0] >= round_ - 1}

    def issue(
        self,
        client_id: str,
        kind: str,
        round_: int,
        attempt: int,
        step: int,
        rule: SizeRule | None = None,
    ) -> bytes:
        """A fresh nonce (OS randomness) for one work item to ``client_id``.

        ``rule`` is the padded size its reply must have (``None``: padding is off).
        """
        nonce = os.urandom(NONCE_BYTES)
        with self._lock:
            self._issued[(client_id, nonce)] = _Issued(kind, round_, attempt, step, rule)
        return nonce

    def withdraw(self, client_id: str, nonce: bytes) -> None:
        """Forget an unanswered work item (its deadline passed)."""
        with self._lock:
            self._issued.pop((client_id, nonce), None)

    def admit(
        self,
        certificate_pem: bytes | None,
        envelope: pb.Envelope,
        payload: bytes,
        *,
        rate: bool = True,
    ) -> Admitted:
        """Check one signed message from a client; consume its nonce; decode its payload."""
        try:
            admitted = self._admit(certificate_pem, envelope, payload, rate)
        except Refused as exc:
            raise self._refused_as(certificate_pem, envelope.sender, exc) from None
        with self._lock:
            self.accepted += 1
        return admitted

    def _admit(
        self, certificate_pem: bytes | None, envelope: pb.Envelope, payload: bytes, rate: bool
    ) -> Admitted:
        cid = self._peer(certificate_pem, envelope.sender, rate=rate)
        key = self.key_of(cid)
        if key is None:
            raise Refused("unknown_client", f"{cid!r} has not enrolled an identity key")
        if envelope.federation_id != self.federation_id:
            raise Refused("wrong_federation", f"signed for {envelope.federation_id!r}")
        if envelope.kind not in _REPLY_TYPES:
            raise Refused("malformed", f"clients cannot send {envelope.kind!r} messages")
        public, version = key
        if envelope.key_version != version:
            raise Refused(
                "bad_signature",
                f"signed with key version {envelope.key_version}; {cid!r} holds {version}",
            )
        open_envelope(envelope, payload, public, self.max_payload)
        slot = (cid, envelope.nonce)
        with self._lock:
            answered = self._answered.get(slot)
            if answered is not None and answered[1] == envelope.signature:
                raise Refused("replayed", "this message was already accepted")
            if answered is not None:
                raise Refused("duplicate", f"{cid!r} already answered this work item")
            if envelope.round < self.round:
                raise Refused("stale_round", f"round {envelope.round}; now {self.round}")
            if envelope.round > self.round:
                raise Refused("future_round", f"round {envelope.round}; now {self.round}")
            issued = self._issued.get(slot)
            if issued is None:
                raise Refused("unknown_nonce", "no open work item has this nonce")
            got = (envelope.kind, envelope.round, envelope.attempt, envelope.step)
            if got != (issued.kind, issued.round, issued.attempt, issued.step):
                raise Refused("mismatched_nonce", f"nonce was issued for {issued}, used for {got}")
            rule = issued.rule
            if rule is not None and not rule.admits(envelope.payload_size):
                raise Refused(
                    "wrong_padding",
                    f"payload of {envelope.payload_size} bytes; expected {rule.describe()}",
                )
        body = self._decode(envelope, payload, rule)
        with self._lock:
            if self._issued.pop(slot, None) is None:  # a concurrent twin won the race
                raise Refused("duplicate", f"{cid!r} already answered this work item")
            self._answered[slot] = (envelope.round, envelope.signature)
        return Admitted(
            cid,
            envelope.kind,
            envelope.round,
            envelope.attempt,
            envelope.step,
            envelope.nonce,
            body,
        )

    def _decode(self, envelope: pb.Envelope, payload: bytes, rule: SizeRule | None) -> object:
        message = open_payload(payload, rule)
        try:
            body = codec.from_value(message.body, _REPLY_TYPES[envelope.kind])
        except MalformedMessage as exc:
            raise Refused("malformed", str(exc)) from None
        except Exception as exc:  # protobuf's DecodeError and anything a parser may raise
            raise Refused("malformed", f"payload is not a fedfort message: {exc}") from None
        if isinstance(body, ClientUpdate | EvaluationReport):
            if body.client_id != envelope.sender or body.round != envelope.round:
                raise Refused(
                    "mismatched_header",
                    f"reply of {body.client_id!r} for round {body.round} in an envelope of "
                    f"{envelope.sender!r} for round {envelope.round}",
                )
        elif getattr(body, "client_id", envelope.sender) != envelope.sender:
            raise Refused("mismatched_header", "message names another client than its sender")
        return body
