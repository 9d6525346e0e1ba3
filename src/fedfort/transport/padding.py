"""Fixed-size payloads: a message's length says nothing about the data of the client sending it.

TLS hides bytes, not lengths. Without padding, an observer of the encrypted stream (or the
server itself) reads from a :class:`~fedfort.messages.ClientUpdate`'s length the varint width of
its sample count, whether DP-SGD reported an epsilon, how many metrics it carries, and from a
secure-aggregation reply how many neighbours it had and which of them dropped out. Traffic
analysis of encrypted channels recovers exactly such facts (Dyer et al., "Peek-a-Boo, I Still
See You", IEEE S&P 2012; RFC 8446 section 5.4 leaves record padding to the application).

:class:`PaddingPolicy` fixes, for every work item, the exact payload size of its reply (and of
the server's secure-aggregation requests) from public facts only: the model dimension and the
algorithm of the task, or the session's :class:`~fedfort.secagg.params.MaskingParams` (roster
size, neighbour degree ``k``, modulus bits, input dimension). The size is that of a worst-case
message of the kind (ids as long as the longest it may carry: 64 characters, or the session
roster's longest; int64 counters; one share entry per neighbour, and one more where the
client's own share can be among them; a float clip bit) plus an allowance for metrics,
rounded up to :data:`PAD_UNIT`. The sender fills the gap with the ``padding`` (zero bytes) and
``pad_adjust`` fields of ``fedfort.v1.Payload``; both lie under the payload's signed SHA-256,
so padding cannot be stripped or altered in transit.

The receiver refuses (reason ``wrong_padding``) a payload whose size is not the one the rule
gives, whose padding is not zero, or whose filler is not the canonical one (:func:`filler`):
one size, one encoding. Messages whose size cannot be bounded from public parameters (CKKS
ciphertexts, requests of a session whose parameters were not seen) are padded to a geometric
bucket (:func:`bucket`, 1/16 granularity), which leaks at most the bucket.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

import numpy as np

from fedfort.crypto.primitives import NONCE_BYTES as GCM_NONCE_BYTES
from fedfort.crypto.primitives import mask_dtype
from fedfort.errors import ConfigError, Refused
from fedfort.messages import ClientUpdate, EvaluateTask, EvaluationReport, TrainTask
from fedfort.secagg import messages as sm
from fedfort.secagg.params import MaskingParams
from fedfort.secagg.shamir import SHARE_BYTES
from fedfort.transport import codec
from fedfort.transport.proto import fedfort_pb2 as pb

__all__ = [
    "METRICS_ALLOWANCE",
    "PAD_UNIT",
    "PaddingPolicy",
    "SizeRule",
    "bucket",
    "filler",
    "open_payload",
    "pad_payload",
]

PAD_UNIT: Final = 256
"""Padded sizes are multiples of this many bytes."""
METRICS_ALLOWANCE: Final = 1024
"""Bytes an update may spend on its metrics dict beyond the worst-case fixed fields."""
SLACK: Final = 64
"""Bytes of headroom for list headers that differ between equally sized messages."""
MAX_ID: Final = 64
"""Longest client id (see :mod:`fedfort.transport.identity`)."""
_INT64_MAX: Final = 2**63 - 1
_SEAL_BYTES: Final = GCM_NONCE_BYTES + 2 * SHARE_BYTES + 16  # AES-GCM of two Shamir shares
_SIGNATURE_BYTES: Final = 64
_KEY_BYTES: Final = 32
_PAD_TAG: Final = 1  # field 3, wire type 2: one byte
_ADJUST_BYTES: Final = 2  # field 4 (bool true): tag + one byte


@dataclass(frozen=True)
class SizeRule:
    """The payload size a message must have: ``exact`` bytes, or (``None``) any bucket size."""

    exact: int | None

    def admits(self, size: int) -> bool:
        if self.exact is not None:
            return size == self.exact
        return size == bucket(size)

    def target(self, unpadded: int) -> int:
        """The size to pad an ``unpadded``-byte payload to."""
        if self.exact is not None:
            return self.exact
        return bucket(unpadded + _ADJUST_BYTES + 4)

    def describe(self) -> str:
        return f"{self.exact} bytes" if self.exact is not None else "a bucket size"


def _round_up(size: int, unit: int = PAD_UNIT) -> int:
    return -(-size // unit) * unit


def bucket(size: int) -> int:
    """The smallest bucket size >= ``size``: multiples of :data:`PAD_UNIT` up to 4 KiB, then
    steps of 1/16 of the power of two below (at most 6.25 % overhead)."""
    if size <= 4096:
        return _round_up(max(size, 1))
    step = 1 << (size.bit_length() - 5)
    return _round_up(size, step)


def _varint_len(n: int) -> int:
    return max(1, (n.bit_length() + 6) // 7)


def _field_len(n: int) -> int:
    """Bytes of a non-empty ``padding`` field of ``n`` zero bytes."""
    return _PAD_TAG + _varint_len(n) + n


def _single(gap: int) -> int | None:
    for width in range(1, 6):
        n = gap - _PAD_TAG - width
        if n >= 1 and _varint_len(n) == width:
            return n
    return None


def filler(gap: int) -> tuple[int, bool]:
    """The canonical ``(padding length, pad_adjust)`` that adds exactly ``gap`` bytes.

    ``pad_adjust`` is set only when no single padding field has that size (a gap of 2, or one
    that falls where the length prefix grows a byte, such as 130). A gap of 1 is impossible;
    rules leave at least 2 bytes of headroom so an honest message never needs it.
    """
    if gap == 0:
        return 0, False
    n = _single(gap)
    if n is not None:
        return n, False
    if gap == _ADJUST_BYTES:
        return 0, True
    n = _single(gap - _ADJUST_BYTES)
    if n is None or gap < 0:
        raise ValueError(f"no padding adds exactly {gap} bytes")
    return n, True


def pad_payload(payload: pb.Payload, rule: SizeRule | None) -> bytes:
    """The bytes of ``payload`` padded as ``rule`` asks (unchanged when ``rule`` is ``None``).

    Raises :class:`~fedfort.errors.ConfigError` when the message is larger than its rule
    allows (e.g. metrics beyond :data:`METRICS_ALLOWANCE`): sending it would stand out.
    """
    payload.ClearField("padding")
    payload.ClearField("pad_adjust")
    base = payload.ByteSize()
    if rule is None:
        return payload.SerializeToString(deterministic=True)
    size = rule.target(base)
    gap = size - base
    if gap < 0 or gap == 1:
        raise ConfigError(
            f"a {_type_name(payload)} payload of {base} bytes does not fit its padded size of "
            f"{size} bytes; send fewer metrics (at most {METRICS_ALLOWANCE} bytes) or disable "
            "network.pad_messages on the server and every client"
        )
    n, adjust = filler(gap)
    payload.padding = bytes(n)
    payload.pad_adjust = adjust
    data = payload.SerializeToString(deterministic=True)
    assert len(data) == size, (len(data), size)
    return data


def _type_name(payload: pb.Payload) -> str:
    body = payload.body
    return body.record.type if body.WhichOneof("kind") == "record" else "message"


def open_payload(data: bytes, rule: SizeRule | None) -> pb.Payload:
    """Parse a received payload; refuse it unless it is canonical and padded as ``rule`` says.

    Raises :class:`~fedfort.errors.Refused`: ``wrong_padding`` for a size other than the rule's,
    non-zero padding or a non-canonical filler; ``malformed`` for bytes that are not one
    canonically encoded ``Payload``.
    """
    if rule is not None and not rule.admits(len(data)):
        raise Refused("wrong_padding", f"payload of {len(data)} bytes; expected {rule.describe()}")
    try:
        payload = pb.Payload.FromString(data)
    except Exception as exc:  # protobuf's DecodeError
        raise Refused("malformed", f"payload is not a fedfort message: {exc}") from None
    if payload.SerializeToString(deterministic=True) != data:
        raise Refused("malformed", "payload is not canonically encoded")
    pad = payload.padding
    if pad.count(0) != len(pad):
        raise Refused("wrong_padding", "the padding holds bytes other than zero")
    added = (_field_len(len(pad)) if pad else 0) + (_ADJUST_BYTES if payload.pad_adjust else 0)
    if filler(added) != (len(pad), payload.pad_adjust):
        raise Refused("wrong_padding", "the padding is not in its canonical layout")
    return payload


# ------------------------------------------------------------------------------- the rules


def _encoded(message: object) -> int:
    return pb.Payload(body=codec.to_value(message)).ByteSize()


def _exact(template_bytes: int, allowance: int = 0) -> SizeRule:
    return SizeRule(_round_up(template_bytes + allowance + SLACK))


_ID: Final = "x" * MAX_ID


@functools.lru_cache(maxsize=16)
def _update_rule(dim: int, control: bool, sealed: bool) -> SizeRule:
    zeros = np.zeros(dim, dtype=np.float32)
    template = ClientUpdate(
        round=_INT64_MAX,
        client_id=_ID,
        delta=zeros,
        num_samples=_INT64_MAX,
        metrics={},
        control_delta=zeros if control else None,
        clip_indicator=-1.0,
        sealed=sealed,
    )
    return _exact(_encoded(template), METRICS_ALLOWANCE)


@functools.lru_cache(maxsize=16)
def _report_rule(metrics: tuple[str, ...]) -> SizeRule:
    """A client's evaluation report: every asked metric present, counters at their widest (a
    report that leaves out an undefined metric is padded to the same size)."""
    template = EvaluationReport(
        round=_INT64_MAX,
        client_id=_ID,
        num_examples=_INT64_MAX,
        metrics=dict.fromkeys(metrics, -1.0),
    )
    return _exact(_encoded(template))


def _entries(name: str, count: int, blob: int) -> tuple[tuple[str, bytes], ...]:
    return tuple((name, bytes(blob)) for _ in range(count))


class PaddingPolicy:
    """Which size every payload of a round must have (both ends compute the same rules).

    Defends against traffic analysis of message lengths (Dyer et al., IEEE S&P 2012): with
    every reply of a step padded to one size derived from public parameters, the length of a
    client's message no longer shows its sample count, metrics, DP-SGD report, id length or
    dropped neighbours.

    Feed it every secure-aggregation request with :meth:`observe` (the ``AdvertiseRequest``
    carries the session's parameters); then :meth:`reply_rule` gives the size of the answer to
    a work item, and :meth:`request_rule` the size of a server request. ``enabled=False``
    turns padding off (both ends must agree: a padded server refuses unpadded replies).
    """

    def __init__(self, enabled: bool = True, max_sessions: int = 8) -> None:
        self.enabled = enabled
        self.max_sessions = max_sessions
        self._params: OrderedDict[bytes, MaskingParams] = OrderedDict()

    def observe(self, request: object) -> None:
        """Remember the parameters a session's first request announces."""
        if isinstance(request, sm.AdvertiseRequest):
            self._params[request.sid] = request.params
            self._params.move_to_end(request.sid)
            while len(self._params) > self.max_sessions:
                self._params.popitem(last=False)

    def _session(self, request: object) -> tuple[bytes, MaskingParams, int, str] | None:
        """A request's session id and parameters, the neighbour count ``k``, and an id as
        long as the roster's longest (the template every entry is sized by)."""
        sid = getattr(request, "sid", None)
        params = self._params.get(sid) if isinstance(sid, bytes) else None
        if params is None or not isinstance(sid, bytes):
            return None
        k, _ = params.resolved()
        return sid, params, min(k, len(params.roster) - 1), "x" * max(map(len, params.roster))

    def reply_rule(self, request: object) -> SizeRule | None:
        """The size of a client's reply to ``request`` (``None``: padding is off)."""
        if not self.enabled:
            return None
        if isinstance(request, EvaluateTask):
            return _report_rule(tuple(request.metrics))
        if isinstance(request, TrainTask):
            if request.secure is not None:
                return _update_rule(0, False, True)
            control = request.config.algorithm == "scaffold"
            return _update_rule(int(request.weights.size), control, False)
        if isinstance(request, sm.AdvertiseRequest):
            keys, sig = bytes(_KEY_BYTES), bytes(_SIGNATURE_BYTES)
            name = "x" * max(map(len, request.params.roster))
            return _exact(_encoded(sm.AdvertisedKeys(request.sid, name, keys, keys, sig)))
        session = self._session(request)
        if session is None:
            return SizeRule(None)  # CKKS, or a session whose parameters were not seen
        sid, params, k, name = session
        template: object
        if isinstance(request, sm.ShareKeysRequest):  # a blob for each neighbour
            template = sm.EncryptedShares(sid, name, _entries(name, k, _SEAL_BYTES))
        elif isinstance(request, sm.MaskedInputRequest):
            vector = np.zeros(params.dim, dtype=mask_dtype(params.bits))
            template = sm.MaskedInput(sid, name, vector)
        elif isinstance(request, sm.ConsistencyRequest):
            template = sm.ConsistencySignature(sid, name, bytes(_SIGNATURE_BYTES))
        elif isinstance(request, sm.UnmaskRequest):  # a share for each neighbour and itself
            template = sm.UnmaskShares(sid, name, _entries(name, k + 1, SHARE_BYTES), ())
        else:
            return SizeRule(None)
        return _exact(_encoded(template))

    def request_rule(self, request: object) -> SizeRule | None:
        """The size of a server request (``None``: not padded, the same for every client)."""
        if not self.enabled or isinstance(request, TrainTask | EvaluateTask | sm.AdvertiseRequest):
            return None
        session = self._session(request)
        if session is None:
            return SizeRule(None)
        sid, params, k, name = session
        template: object
        if isinstance(request, sm.ShareKeysRequest):  # the keys of the neighbours and its own
            keys, sig = bytes(_KEY_BYTES), bytes(_SIGNATURE_BYTES)
            advertised = sm.AdvertisedKeys(sid, name, keys, keys, sig)
            template = sm.ShareKeysRequest(sid, tuple(advertised for _ in range(k + 1)))
        elif isinstance(request, sm.MaskedInputRequest):
            template = sm.MaskedInputRequest(sid, _entries(name, k + 1, _SEAL_BYTES))
        elif isinstance(request, sm.ConsistencyRequest):
            template = sm.ConsistencyRequest(sid, tuple(name for _ in params.roster))
        elif isinstance(request, sm.UnmaskRequest):
            template = sm.UnmaskRequest(sid, _entries(name, k + 1, _SIGNATURE_BYTES))
        else:
            return SizeRule(None)
        return _exact(_encoded(template))
