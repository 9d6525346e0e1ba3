"""The server side of the masking protocol as a sans-I/O state machine.

The server of Bonawitz et al. (CCS 2017, figure 4), with the sharing graph of Bell et al.
(CCS 2020) for SecAgg+. It relays keys and encrypted shares, collects masked inputs, runs the
consistency check and finally rebuilds, from at least ``t`` shares each, the self-mask seed
``b_u`` of every client ``u`` whose input is in the sum and the mask private key ``s_sk_v`` of
every client ``v`` that shared keys but sent no input. It then removes the self-masks and the
pairwise masks that did not cancel, and decodes the sum.

The server never holds a client's unmasked input: it sees masked vectors, which are uniformly
distributed without ``b_u`` (and ``b_u`` of a client is only rebuilt when that client's masked
input is already committed to the sum), and shares it cannot decrypt.

A reply that is malformed or fails a check is set aside with a reason in :attr:`rejected` and
its sender treated as dropped; the server machine never raises on a client's input. Fewer
than ``t`` clients left at any step raises :class:`SecAggAbort`, before anything is revealed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

import numpy as np

from fedfort.crypto.primitives import (
    KEY_BYTES,
    SEED_BYTES,
    AgreementKey,
    agree,
    expand_mask,
    verify,
)
from fedfort.errors import ProtocolError, SecAggAbort
from fedfort.secagg import shamir
from fedfort.secagg.client import advertise_payload, consistency_payload, mask_info
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
    wire_size,
)
from fedfort.secagg.params import MaskingParams
from fedfort.secagg.session import SecureSum, Session

__all__ = ["MaskingServer"]

_M = TypeVar("_M")
_MAX_BLOB = 4 * shamir.SHARE_BYTES  # encrypted shares are 2 shares + nonce + tag


class MaskingServer:
    """The server's side of one masking session over ``params.roster``."""

    def __init__(
        self, session: Session, params: MaskingParams, directory: Mapping[str, bytes]
    ) -> None:
        missing = [cid for cid in params.roster if cid not in directory]
        if missing:
            raise ProtocolError(f"clients without a registered identity key: {missing}")
        self.sid = session.sid
        self.params = params
        self.directory = dict(directory)
        self.digest = params.digest()
        self.k, self.t = params.resolved()
        self.roster = params.roster
        graph = params.graph()
        self.neighbours = {
            cid: frozenset(self.roster[j] for j in graph.neighbours[i])
            for i, cid in enumerate(self.roster)
        }
        self.index = {cid: i for i, cid in enumerate(self.roster)}
        self.stage = "advertise"
        self.dropped: dict[str, str] = {}
        self.rejected: dict[str, str] = {}
        self.traffic = {"client_to_server": 0, "server_to_client": 0}
        self._result: SecureSum | None = None

    @property
    def done(self) -> bool:
        return self._result is not None

    def result(self) -> SecureSum:
        if self._result is None:
            raise RuntimeError("the session has not finished")
        return self._result

    def start(self) -> dict[str, object]:
        if self.stage != "advertise" or self.traffic["server_to_client"]:
            raise RuntimeError("the session has already started")
        request = AdvertiseRequest(sid=self.sid, params=self.params)
        return self._send({cid: request for cid in self.roster})

    def step(self, replies: Mapping[str, object]) -> dict[str, object]:
        handlers = {
            "advertise": self._keys,
            "share": self._shares,
            "masked": self._inputs,
            "consistency": self._signatures,
            "unmask": self._unmask,
        }
        if self.stage not in handlers:
            raise RuntimeError(f"no step expected in stage {self.stage!r}")
        for reply in replies.values():
            self.traffic["client_to_server"] += _size(reply)
        return self._send(handlers[self.stage](replies))

    # -- helpers ---------------------------------------------------------------------------

    def _send(self, outbox: dict[str, object]) -> dict[str, object]:
        self.traffic["server_to_client"] += sum(wire_size(m) for m in outbox.values())
        return outbox

    def _accept(
        self, replies: Mapping[str, object], expected: set[str], kind: type[_M], stage: str
    ) -> dict[str, _M]:
        """The well-typed replies of this session from expected clients; others set aside."""
        valid: dict[str, _M] = {}
        for cid in sorted(expected):
            reply = replies.get(cid)
            if reply is None:
                self.dropped[cid] = stage
            elif not isinstance(reply, kind):
                self.rejected[cid] = f"{stage}: expected {kind.__name__}"
            elif getattr(reply, "sid", None) != self.sid or getattr(reply, "client_id", "") != cid:
                self.rejected[cid] = f"{stage}: wrong session or sender"
            else:
                valid[cid] = reply
        for cid in replies:
            if cid not in expected:
                self.rejected.setdefault(cid, f"{stage}: not asked")
        return valid

    def _need(self, survivors: int, stage: str) -> None:
        if survivors < self.t:
            self.stage = "aborted"
            raise SecAggAbort(
                f"only {survivors} clients remain after {stage}, the threshold is {self.t}: the "
                "round is aborted and nothing about any input is revealed"
            )

    # -- steps -----------------------------------------------------------------------------

    def _keys(self, replies: Mapping[str, object]) -> dict[str, object]:
        self.keys: dict[str, AdvertisedKeys] = {}
        seen: set[bytes] = set()
        for cid, reply in self._accept(
            replies, set(self.roster), AdvertisedKeys, "advertise"
        ).items():
            payload = advertise_payload(self.sid, self.digest, cid, reply.c_public, reply.s_public)
            if (
                not isinstance(reply.c_public, bytes)
                or not isinstance(reply.s_public, bytes)
                or len(reply.c_public) != KEY_BYTES
                or len(reply.s_public) != KEY_BYTES
            ):
                self.rejected[cid] = "advertise: malformed keys"
            elif not verify(self.directory[cid], reply.signature, payload):
                self.rejected[cid] = "advertise: bad signature"
            elif reply.c_public in seen or reply.s_public in seen:
                self.rejected[cid] = "advertise: reused public key"
            else:
                seen.update((reply.c_public, reply.s_public))
                self.keys[cid] = reply
        self._need(len(self.keys), "advertising keys")
        self.stage = "share"
        return {
            cid: ShareKeysRequest(
                sid=self.sid,
                keys=tuple(self.keys[v] for v in sorted(self.neighbours[cid] & self.keys.keys())),
            )
            for cid in self.keys
        }

    def _shares(self, replies: Mapping[str, object]) -> dict[str, object]:
        self.blobs: dict[str, dict[str, bytes]] = {}
        for cid, reply in self._accept(replies, set(self.keys), EncryptedShares, "share").items():
            allowed = self.neighbours[cid] & self.keys.keys()
            entries = reply.shares if isinstance(reply.shares, tuple) else ()
            addressed = {}
            for entry in entries:
                if (
                    isinstance(entry, tuple)
                    and len(entry) == 2
                    and entry[0] in allowed
                    and isinstance(entry[1], bytes)
                    and len(entry[1]) <= _MAX_BLOB
                ):
                    addressed[entry[0]] = entry[1]
            if len(addressed) != len(entries) or len(entries) != len(allowed):
                self.rejected[cid] = "share: shares not addressed to exactly its neighbours"
                continue
            self.blobs[cid] = addressed
        self._need(len(self.blobs), "sharing keys")
        self.stage = "masked"
        outbox: dict[str, object] = {}
        for cid in self.blobs:
            inbox = tuple(
                (v, self.blobs[v][cid])
                for v in sorted(self.neighbours[cid] & self.blobs.keys())
                if cid in self.blobs[v]
            )
            outbox[cid] = MaskedInputRequest(sid=self.sid, shares=inbox)
        return outbox

    def _inputs(self, replies: Mapping[str, object]) -> dict[str, object]:
        codec = self.params.codec
        self.inputs: dict[str, np.ndarray] = {}
        for cid, reply in self._accept(replies, set(self.blobs), MaskedInput, "masked").items():
            vector = reply.vector
            if (
                not isinstance(vector, np.ndarray)
                or vector.dtype != codec.dtype
                or vector.shape != (self.params.dim,)
            ):
                self.rejected[cid] = "masked: wrong dtype or shape"
                continue
            self.inputs[cid] = vector
        self._need(len(self.inputs), "masked input collection")
        self.survivors = tuple(sorted(self.inputs))
        self.stage = "consistency"
        request = ConsistencyRequest(sid=self.sid, survivors=self.survivors)
        return {cid: request for cid in self.survivors}

    def _signatures(self, replies: Mapping[str, object]) -> dict[str, object]:
        payload = consistency_payload(self.sid, self.digest, self.survivors)
        self.signatures: dict[str, bytes] = {}
        accepted = self._accept(replies, set(self.survivors), ConsistencySignature, "consistency")
        for cid, reply in accepted.items():
            if verify(self.directory[cid], reply.signature, payload):
                self.signatures[cid] = reply.signature
            else:
                self.rejected[cid] = "consistency: bad signature"
        self._need(len(self.signatures), "the consistency check")
        self.stage = "unmask"
        outbox: dict[str, object] = {}
        for cid in self.signatures:
            circle = (self.neighbours[cid] | {cid}) & self.signatures.keys()
            outbox[cid] = UnmaskRequest(
                sid=self.sid, signatures=tuple((v, self.signatures[v]) for v in sorted(circle))
            )
        return outbox

    def _unmask(self, replies: Mapping[str, object]) -> dict[str, object]:
        seed_shares: dict[str, dict[int, bytes]] = {cid: {} for cid in self.survivors}
        gone = sorted(set(self.blobs) - set(self.survivors))
        key_shares: dict[str, dict[int, bytes]] = {cid: {} for cid in gone}
        answered = self._accept(replies, set(self.signatures), UnmaskShares, "unmask")
        for cid, reply in answered.items():
            holder_of = self.neighbours[cid] | {cid}
            x = self.index[cid] + 1
            parsed = _parse_shares(reply.seed_shares, set(self.survivors) & holder_of)
            parsed_keys = _parse_shares(reply.key_shares, set(gone) & holder_of)
            if parsed is None or parsed_keys is None or parsed.keys() & parsed_keys.keys():
                self.rejected[cid] = "unmask: malformed shares"
                continue
            for owner, share in parsed.items():
                seed_shares[owner][x] = share
            for owner, share in parsed_keys.items():
                key_shares[owner][x] = share
        short = [o for o, s in {**seed_shares, **key_shares}.items() if len(s) < self.t]
        if short:
            self.stage = "aborted"
            raise SecAggAbort(
                f"fewer than t={self.t} shares arrived for {len(short)} clients' secrets "
                f"(e.g. {short[0]}): the sum cannot be unmasked and the round is aborted"
            )
        total = self._unmasked_sum(seed_shares, key_shares)
        values = self.params.codec.decode(total, len(self.survivors))
        self._result = SecureSum(
            total=values[:-1],
            weight=float(values[-1]),
            included=self.survivors,
            dropped=dict(self.dropped),
            traffic=dict(self.traffic),
        )
        self.stage = "done"
        return {}

    def _unmasked_sum(
        self, seed_shares: dict[str, dict[int, bytes]], key_shares: dict[str, dict[int, bytes]]
    ) -> np.ndarray:
        codec, dim = self.params.codec, self.params.dim
        total = np.zeros(dim, dtype=codec.dtype)
        for cid in self.survivors:
            total += self.inputs[cid]
        for cid in self.survivors:
            seed = _rebuild(seed_shares[cid], self.t, SEED_BYTES)
            total -= expand_mask(seed, dim, codec.bits)
        survivors = set(self.survivors)
        for v, shares in key_shares.items():
            s_key = AgreementKey.from_private_bytes(_rebuild(shares, self.t, KEY_BYTES))
            if s_key.public != self.keys[v].s_public:
                self.stage = "aborted"
                raise SecAggAbort(
                    f"the shares of {v}'s mask key rebuild a key it never advertised: a client "
                    "sent false shares; the round is aborted"
                )
            for u in sorted(self.neighbours[v] & survivors):
                if u not in self.blobs[v]:
                    continue  # v's shares never reached u, so u never masked with v
                seed = agree(s_key, self.keys[u].s_public, mask_info(self.sid, u, v))
                mask = expand_mask(seed, dim, codec.bits)
                if u < v:  # u added this mask; remove it
                    total -= mask
                else:
                    total += mask
        if codec.bits < 8 * total.itemsize:
            total &= codec.dtype(codec.modulus_mask)
        return total


def _rebuild(shares: dict[int, bytes], threshold: int, length: int) -> bytes:
    try:
        return shamir.combine(shares, threshold, length)
    except ProtocolError as exc:
        raise SecAggAbort(f"a secret cannot be rebuilt from its shares: {exc}") from exc


def _parse_shares(entries: object, allowed: set[str]) -> dict[str, bytes] | None:
    if not isinstance(entries, tuple):
        return None
    out: dict[str, bytes] = {}
    for entry in entries:
        if (
            not isinstance(entry, tuple)
            or len(entry) != 2
            or entry[0] not in allowed
            or entry[0] in out
            or not isinstance(entry[1], bytes)
            or len(entry[1]) != shamir.SHARE_BYTES
        ):
            return None
        out[entry[0]] = entry[1]
    return out


def _size(reply: object) -> int:
    try:
        return wire_size(reply)
    except TypeError:
        return 0
