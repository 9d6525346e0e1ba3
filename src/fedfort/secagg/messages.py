"""The messages of the masking protocol (Bonawitz et al., CCS 2017, figure 4), round by round.

Server requests end in ``Request``; client replies are named after what they carry. Every
message names its session id ``sid``; fields are bytes, strings, integers and, for the masked
input, one unsigned integer vector, so the network runtime can serialise them as they are.

====  ========================  ========================  ===================================
step  server sends              client answers            the client checks
====  ========================  ========================  ===================================
0     AdvertiseRequest          AdvertisedKeys            its own policy (ClientPolicy)
1     ShareKeysRequest          EncryptedShares           >= t signed, distinct neighbour keys
2     MaskedInputRequest        MaskedInput               >= t neighbours sent shares
3     ConsistencyRequest        ConsistencySignature      >= t survivors, all from step 2
4     UnmaskRequest             UnmaskShares              >= t holders signed *its* list
====  ========================  ========================  ===================================
"""

from __future__ import annotations

from dataclasses import dataclass, fields, is_dataclass

import numpy as np

from fedfort.secagg.params import MaskingParams

__all__ = [
    "AdvertiseRequest",
    "AdvertisedKeys",
    "ConsistencyRequest",
    "ConsistencySignature",
    "EncryptedShares",
    "MaskedInput",
    "MaskedInputRequest",
    "ShareKeysRequest",
    "UnmaskRequest",
    "UnmaskShares",
    "wire_size",
]


@dataclass(frozen=True)
class AdvertiseRequest:
    """Step 0: the session's public parameters."""

    sid: bytes
    params: MaskingParams


@dataclass(frozen=True)
class AdvertisedKeys:
    """A client's two fresh X25519 public keys, signed with its identity key.

    ``c_public`` agrees channel keys (to encrypt shares), ``s_public`` agrees mask seeds.
    The signature covers the session, the parameters' digest, the client id and both keys.
    """

    sid: bytes
    client_id: str
    c_public: bytes
    s_public: bytes
    signature: bytes


@dataclass(frozen=True)
class ShareKeysRequest:
    """Step 1: the advertised keys of the recipient's neighbours (everyone in SecAgg)."""

    sid: bytes
    keys: tuple[AdvertisedKeys, ...]


@dataclass(frozen=True)
class EncryptedShares:
    """A client's Shamir shares of ``s_sk`` and ``b``, one AES-GCM blob per neighbour."""

    sid: bytes
    client_id: str
    shares: tuple[tuple[str, bytes], ...]


@dataclass(frozen=True)
class MaskedInputRequest:
    """Step 2: the blobs addressed to the recipient, by sender (the survivors of step 1)."""

    sid: bytes
    shares: tuple[tuple[str, bytes], ...]


@dataclass(frozen=True)
class MaskedInput:
    """The client's encoded input plus its self-mask and pairwise masks, modulo ``2**bits``."""

    sid: bytes
    client_id: str
    vector: np.ndarray


@dataclass(frozen=True)
class ConsistencyRequest:
    """Step 3: the clients whose masked inputs the server holds (``U3``)."""

    sid: bytes
    survivors: tuple[str, ...]


@dataclass(frozen=True)
class ConsistencySignature:
    """The client's signature over the session and the ``U3`` it was sent."""

    sid: bytes
    client_id: str
    signature: bytes


@dataclass(frozen=True)
class UnmaskRequest:
    """Step 4: the consistency signatures of the recipient's surviving neighbours."""

    sid: bytes
    signatures: tuple[tuple[str, bytes], ...]


@dataclass(frozen=True)
class UnmaskShares:
    """Shares the server needs: ``b`` of survivors, ``s_sk`` of those dropped before step 2.

    Each entry is ``(owner of the secret, share)``. An honest client never reveals both for
    one owner.
    """

    sid: bytes
    client_id: str
    seed_shares: tuple[tuple[str, bytes], ...]
    key_shares: tuple[tuple[str, bytes], ...]


def wire_size(message: object) -> int:
    """Bytes of a message's payload as serialised (ids, keys, blobs, vectors; no framing)."""
    if isinstance(message, bytes):
        return len(message)
    if isinstance(message, str):
        return len(message.encode())
    if isinstance(message, np.ndarray):
        return int(message.nbytes)
    if isinstance(message, int | float):
        return 8
    if isinstance(message, tuple):
        return sum(wire_size(item) for item in message)
    if isinstance(message, MaskingParams):
        return 32 * 2 + wire_size(message.roster)
    if is_dataclass(message) and not isinstance(message, type):
        return sum(wire_size(getattr(message, f.name)) for f in fields(message))
    raise TypeError(f"cannot size a {type(message).__name__}")
