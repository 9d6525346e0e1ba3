"""The client side of the masking protocol as a sans-I/O state machine.

Implements the client of Bonawitz et al., "Practical Secure Aggregation for
Privacy-Preserving Machine Learning" (CCS 2017, figure 4, the actively secure variant with
signatures and a consistency check), over the sharing graph of Bell et al. (CCS 2020) when
the session is SecAgg+. A client:

0. checks the session's parameters against its own policy
   (:class:`~fedfort.secagg.policy.ClientPolicy`: roster size, graph seed, degree, and a
   threshold with ``2 t > k + 1 + c_max``) and against its own task (the parameters' task
   digest; since every advertisement signs the parameters, all honest clients of a session
   were sent the same task), then advertises two fresh X25519 public keys,
   signed with its Ed25519 identity key;
1. checks its neighbours' signed keys, draws a self-mask seed ``b``, Shamir-shares ``b`` and
   its mask private key ``s_sk`` among itself and its neighbours, and sends each neighbour's
   shares AES-GCM-encrypted under a key agreed with that neighbour (the server relays them
   but cannot read them);
2. sends ``y = encode([w x, w]) + PRG(b) + sum_v +-PRG(s_uv)`` modulo ``2**bits`` over the
   neighbours ``v`` that shared with it (``+`` when ``u < v``, ``-`` otherwise, so each pair's
   masks cancel in the sum);
3. signs the list of survivors the server reports;
4. checks that at least ``t`` holders of its own shares (itself and the neighbours it
   shared with) signed *the same* list -- signatures of anyone else are ignored, since they
   vouch for no neighbourhood of this client, and a holder that signed another list shows the
   server equivocating, so the client aborts -- then reveals, per neighbour, the share of
   ``b`` if that neighbour's input is in the sum, or of ``s_sk`` if it dropped before sending
   it -- never both.

Every check that fails on a malformed message raises :class:`ProtocolError` and leaves the
machine as it was; a check that shows the server or a peer cheating, or too few parties to be
safe, raises :class:`SecAggAbort` and the machine refuses everything afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from fedfort.crypto.primitives import (
    AgreementKey,
    SigningKey,
    agree,
    expand_mask,
    random_seed,
    seal,
    unseal,
    verify,
)
from fedfort.errors import ProtocolError, SecAggAbort
from fedfort.secagg import shamir
from fedfort.secagg.messages import (
    AdvertisedKeys,
    AdvertiseRequest,
    ConsistencyRequest,
    ConsistencySignature,
    EncryptedShares,
    MaskedInput,
    MaskedInputRequest,
    ShareKeysRequest,
    UnmaskRequest,
    UnmaskShares,
)
from fedfort.secagg.params import MaskingParams
from fedfort.secagg.policy import ClientPolicy
from fedfort.secagg.session import Session, weighted_input

__all__ = [
    "MaskingClient",
    "advertise_payload",
    "channel_info",
    "consistency_payload",
    "mask_info",
    "share_aad",
]


def _pair(a: str, b: str) -> bytes:
    lo, hi = sorted((a, b))
    return lo.encode() + b"\x00" + hi.encode()


def channel_info(sid: bytes, a: str, b: str) -> bytes:
    """HKDF ``info`` for the channel key of a pair (symmetric in the pair)."""
    return b"fedfort-secagg-channel\x00" + sid + _pair(a, b)


def mask_info(sid: bytes, a: str, b: str) -> bytes:
    """HKDF ``info`` for the pairwise mask seed of a pair (symmetric in the pair)."""
    return b"fedfort-secagg-mask\x00" + sid + _pair(a, b)


def share_aad(sid: bytes, sender: str, recipient: str) -> bytes:
    """AES-GCM associated data of the shares ``sender`` encrypts for ``recipient``."""
    return b"fedfort-secagg-share\x00" + sid + sender.encode() + b"\x00" + recipient.encode()


def advertise_payload(sid: bytes, digest: bytes, client_id: str, c_pk: bytes, s_pk: bytes) -> bytes:
    """What a client signs when it advertises its keys."""
    return (
        b"fedfort-secagg-advertise\x00" + sid + digest + client_id.encode() + b"\x00" + c_pk + s_pk
    )


def consistency_payload(sid: bytes, digest: bytes, survivors: tuple[str, ...]) -> bytes:
    """What a client signs in the consistency check: the survivors it was shown."""
    return b"fedfort-secagg-consistency\x00" + sid + digest + "\x00".join(survivors).encode()


class MaskingClient:
    """One client's side of one masking session (SecAgg or SecAgg+).

    ``directory`` maps client ids to their registered Ed25519 identity public keys (the PKI
    the paper assumes); ``update`` and ``weight`` are the client's contribution; ``policy``
    is the client's own floor for the session's parameters; ``task_digest`` (when given) the
    :func:`~fedfort.messages.session_task_digest` of the task the input answers, which the
    session's parameters must carry.
    """

    def __init__(
        self,
        client_id: str,
        session: Session,
        identity: SigningKey,
        directory: Mapping[str, bytes],
        update: np.ndarray,
        weight: float,
        *,
        policy: ClientPolicy | None = None,
        task_digest: bytes | None = None,
    ) -> None:
        self.client_id = client_id
        self.task_digest = task_digest
        self.sid = session.sid
        self.identity = identity
        self.directory = dict(directory)
        self.values = weighted_input(update, weight)
        self.policy = ClientPolicy() if policy is None else policy
        self.stage = "advertise"
        self.aborted: str | None = None

    # -- dispatch ------------------------------------------------------------------------

    def handle(self, message: object) -> object:
        if self.aborted is not None:
            raise SecAggAbort(f"{self.client_id} already aborted this session: {self.aborted}")
        expected: dict[str, tuple[type, Callable[[Any], object]]] = {
            "advertise": (AdvertiseRequest, self._advertise),
            "share": (ShareKeysRequest, self._share),
            "masked": (MaskedInputRequest, self._masked),
            "consistency": (ConsistencyRequest, self._consistency),
            "unmask": (UnmaskRequest, self._unmask),
        }
        if self.stage not in expected:
            raise ProtocolError(f"the session of {self.client_id} is over")
        kind, handler = expected[self.stage]
        if not isinstance(message, kind):
            raise ProtocolError(
                f"{self.client_id} expected a {kind.__name__}, got {type(message).__name__}"
            )
        if getattr(message, "sid", None) != self.sid:
            raise ProtocolError("the message belongs to another session")
        try:
            return handler(message)
        except SecAggAbort as exc:
            self.aborted = str(exc)
            raise

    def _abort(self, reason: str) -> SecAggAbort:
        return SecAggAbort(f"{self.client_id} aborts: {reason}")

    # -- step 0 --------------------------------------------------------------------------

    def _advertise(self, message: AdvertiseRequest) -> AdvertisedKeys:
        params = message.params
        if not isinstance(params, MaskingParams):
            raise ProtocolError("the session parameters are malformed")
        if self.client_id not in params.roster:
            raise ProtocolError(f"{self.client_id} is not in the session roster")
        if params.dim != self.values.shape[0]:
            raise ProtocolError(
                f"the session sums vectors of {params.dim} entries; this input has "
                f"{self.values.shape[0]}"
            )
        self.policy.check(params, self.sid)
        if self.task_digest is not None and params.task_digest != self.task_digest:
            raise self._abort(
                "the session's task digest is not that of this client's task: the server sent "
                "the session's clients different tasks (a weight cap, model, training or privacy "
                "setting of their own), which can cancel the others' inputs out of the sum"
            )
        self.params = params
        self.digest = params.digest()
        self.k, self.t = params.resolved()
        self.index = {cid: i for i, cid in enumerate(params.roster)}
        me = self.index[self.client_id]
        self.neighbours = frozenset(params.roster[i] for i in params.graph().neighbours[me])
        self.c_key = AgreementKey()
        self.s_key = AgreementKey()
        payload = advertise_payload(
            self.sid, self.digest, self.client_id, self.c_key.public, self.s_key.public
        )
        self.stage = "share"
        return AdvertisedKeys(
            sid=self.sid,
            client_id=self.client_id,
            c_public=self.c_key.public,
            s_public=self.s_key.public,
            signature=self.identity.sign(payload),
        )

    # -- step 1 --------------------------------------------------------------------------

    def _share(self, message: ShareKeysRequest) -> EncryptedShares:
        peers: dict[str, AdvertisedKeys] = {}
        seen_keys = {self.c_key.public, self.s_key.public}
        for entry in message.keys:
            if not isinstance(entry, AdvertisedKeys) or entry.sid != self.sid:
                raise ProtocolError("a forwarded key entry is malformed")
            if entry.client_id == self.client_id:
                continue
            if entry.client_id not in self.neighbours or entry.client_id in peers:
                raise ProtocolError(f"unexpected key entry for {entry.client_id!r}")
            public = self.directory.get(entry.client_id)
            payload = advertise_payload(
                self.sid, self.digest, entry.client_id, entry.c_public, entry.s_public
            )
            if public is None or not verify(public, entry.signature, payload):
                raise self._abort(f"the advertised keys of {entry.client_id} are not signed by it")
            if entry.c_public in seen_keys or entry.s_public in seen_keys:
                raise self._abort("two parties advertised the same public key")
            seen_keys.update((entry.c_public, entry.s_public))
            peers[entry.client_id] = entry
        if len(peers) + 1 < self.t:
            raise self._abort(f"only {len(peers) + 1} holders for a {self.t}-of-n sharing")
        self.peers = peers
        self.self_seed = random_seed()
        holders = [self.client_id, *sorted(peers)]
        xs = [self.index[h] + 1 for h in holders]
        s_shares = shamir.split(self.s_key.private_bytes(), xs, self.t)
        b_shares = shamir.split(self.self_seed, xs, self.t)
        self.channel: dict[str, bytes] = {}
        blobs = []
        for v in holders[1:]:
            key = agree(self.c_key, peers[v].c_public, channel_info(self.sid, self.client_id, v))
            self.channel[v] = key
            x = self.index[v] + 1
            aad = share_aad(self.sid, self.client_id, v)
            blobs.append((v, seal(key, s_shares[x] + b_shares[x], aad)))
        own = self.index[self.client_id] + 1
        self.held: dict[str, tuple[bytes, bytes]] = {self.client_id: (s_shares[own], b_shares[own])}
        self.stage = "masked"
        return EncryptedShares(sid=self.sid, client_id=self.client_id, shares=tuple(blobs))

    # -- step 2 --------------------------------------------------------------------------

    def _masked(self, message: MaskedInputRequest) -> MaskedInput:
        received: dict[str, bytes] = {}
        for entry in message.shares:
            if (
                not isinstance(entry, tuple)
                or len(entry) != 2
                or not isinstance(entry[0], str)
                or not isinstance(entry[1], bytes)
            ):
                raise ProtocolError("a relayed share entry is malformed")
            sender, blob = entry
            if sender not in self.peers or sender in received:
                raise ProtocolError(f"unexpected share from {sender!r}")
            received[sender] = blob
        if len(received) + 1 < self.t:
            raise self._abort(f"only {len(received) + 1} of the neighbourhood shared keys")
        codec = self.params.codec
        y = codec.encode(self.values)
        y += expand_mask(self.self_seed, y.shape[0], codec.bits)
        for v in received:
            seed = agree(self.s_key, self.peers[v].s_public, mask_info(self.sid, self.client_id, v))
            mask = expand_mask(seed, y.shape[0], codec.bits)
            if self.client_id < v:
                y += mask
            else:
                y -= mask
        if codec.bits < 8 * y.itemsize:
            y &= codec.dtype(codec.modulus_mask)
        self.inbox = received
        self.stage = "consistency"
        return MaskedInput(sid=self.sid, client_id=self.client_id, vector=y)

    # -- step 3 --------------------------------------------------------------------------

    def _consistency(self, message: ConsistencyRequest) -> ConsistencySignature:
        survivors = message.survivors
        if (
            not isinstance(survivors, tuple)
            or not all(isinstance(s, str) for s in survivors)
            or list(survivors) != sorted(set(survivors))
        ):
            raise ProtocolError("the survivor list is malformed")
        members = set(survivors)
        if self.client_id not in members or not members <= set(self.params.roster):
            raise ProtocolError("the survivor list does not fit the session")
        local_u2 = set(self.inbox) | {self.client_id}
        if (members & (self.neighbours | {self.client_id})) - local_u2:
            raise self._abort("a survivor never shared keys with this client")
        holders = members & (set(self.peers) | {self.client_id})
        if len(holders) < self.t:
            raise self._abort(f"only {len(holders)} survivors among the holders; t = {self.t}")
        self.survivors = survivors
        self.stage = "unmask"
        payload = consistency_payload(self.sid, self.digest, survivors)
        return ConsistencySignature(
            sid=self.sid, client_id=self.client_id, signature=self.identity.sign(payload)
        )

    # -- step 4 --------------------------------------------------------------------------

    def _unmask(self, message: UnmaskRequest) -> UnmaskShares:
        payload = consistency_payload(self.sid, self.digest, self.survivors)
        members = set(self.survivors)
        holders = set(self.peers) | {self.client_id}
        signers: set[str] = set()
        for entry in message.signatures:
            if not isinstance(entry, tuple) or len(entry) != 2 or not isinstance(entry[0], str):
                raise ProtocolError("a consistency signature entry is malformed")
            signer, signature = entry
            if signer not in holders:
                continue  # vouches for no neighbourhood of this client: not counted
            if signer not in members or signer in signers or not isinstance(signature, bytes):
                raise self._abort(f"an unexpected consistency signature from {signer!r}")
            public = self.directory.get(signer)
            if public is None or not verify(public, signature, payload):
                raise self._abort(
                    f"{signer} signed a different survivor list: the server is equivocating"
                )
            signers.add(signer)
        if len(signers) < self.t:
            raise self._abort(
                f"only {len(signers)} holders of this client's shares signed its survivor list; "
                f"t = {self.t}"
            )
        for v, blob in self.inbox.items():
            plain = unseal_share(self.channel[v], blob, share_aad(self.sid, v, self.client_id))
            if plain is None:
                raise self._abort(f"the shares from {v} do not decrypt")
            self.held[v] = plain
        seed_shares, key_shares = [], []
        for owner, (s_share, b_share) in sorted(self.held.items()):
            if owner in members:
                seed_shares.append((owner, b_share))
            else:  # shared keys but sent no masked input: its pairwise masks must go
                key_shares.append((owner, s_share))
        self.stage = "done"
        return UnmaskShares(
            sid=self.sid,
            client_id=self.client_id,
            seed_shares=tuple(seed_shares),
            key_shares=tuple(key_shares),
        )


def unseal_share(key: bytes, blob: bytes, aad: bytes) -> tuple[bytes, bytes] | None:
    """``(s_sk share, b share)`` from a blob, or ``None`` if it is forged or malformed."""
    try:
        plain = unseal(key, blob, aad)
    except ProtocolError:
        return None
    if len(plain) != 2 * shamir.SHARE_BYTES:
        return None
    return plain[: shamir.SHARE_BYTES], plain[shamir.SHARE_BYTES :]
