"""Shamir t-of-n secret sharing over the prime field GF(2**521 - 1).

Shamir, "How to share a secret" (CACM 1979): a secret ``s`` becomes the constant term of a
random polynomial ``f`` of degree ``t - 1``; holder ``i`` gets ``f(i)``. Any ``t`` shares give
``s`` back by Lagrange interpolation at 0, and any ``t - 1`` shares are independent of ``s``
(each value of ``s`` is equally likely given them), so fewer than ``t`` holders learn nothing.

The field is the Mersenne prime ``2**521 - 1``, large enough to hold a 32-byte secret (an
X25519 private key or a PRG seed) as a single element. Coefficients come from the operating
system's CSPRNG. The secret sharing in secure aggregation is per client and per session, over
a few dozen holders, so Python integers are fast enough (microseconds per share).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence

from fedfort.errors import ProtocolError

__all__ = ["PRIME", "SHARE_BYTES", "combine", "lagrange_at_zero", "split"]

PRIME = (1 << 521) - 1
SHARE_BYTES = 66  # ceil(521 / 8)


def split(secret: bytes, holders: Sequence[int], threshold: int) -> dict[int, bytes]:
    """Shares of ``secret`` for the holders at the given x-coordinates (distinct, >= 1)."""
    if not 1 <= threshold <= len(holders):
        raise ValueError(f"a {threshold}-of-{len(holders)} sharing is impossible")
    if len(set(holders)) != len(holders) or min(holders) < 1 or max(holders) >= PRIME:
        raise ValueError("share x-coordinates must be distinct field elements >= 1")
    value = int.from_bytes(secret, "big")
    if value >= PRIME:
        raise ValueError("the secret does not fit in the field")
    coefficients = [value] + [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    shares: dict[int, bytes] = {}
    for x in holders:
        acc = 0
        for c in reversed(coefficients):  # Horner's rule
            acc = (acc * x + c) % PRIME
        shares[x] = acc.to_bytes(SHARE_BYTES, "big")
    return shares


def lagrange_at_zero(xs: Sequence[int]) -> list[int]:
    """The Lagrange coefficients that interpolate at 0 from values at ``xs``."""
    coefficients = []
    for i, xi in enumerate(xs):
        num, den = 1, 1
        for j, xj in enumerate(xs):
            if i != j:
                num = num * xj % PRIME
                den = den * (xj - xi) % PRIME
        if den == 0:
            raise ProtocolError("two shares have the same x-coordinate")
        coefficients.append(num * pow(den, -1, PRIME) % PRIME)
    return coefficients


def combine(shares: Mapping[int, bytes], threshold: int, length: int) -> bytes:
    """The ``length``-byte secret from at least ``threshold`` shares (x-coordinate -> share).

    Uses the first ``threshold`` shares by x-coordinate. With fewer, or with a share that is
    not a field element, raises :class:`ProtocolError`; a wrong share gives a wrong secret,
    which the caller detects (the reconstructed key does not match its advertised public key).
    """
    if len(shares) < threshold:
        raise ProtocolError(f"{len(shares)} shares cannot rebuild a {threshold}-of-n secret")
    xs = sorted(shares)[:threshold]
    values = []
    for x in xs:
        raw = shares[x]
        if len(raw) != SHARE_BYTES:
            raise ProtocolError(f"a share has {SHARE_BYTES} bytes, got {len(raw)}")
        value = int.from_bytes(raw, "big")
        if value >= PRIME:
            raise ProtocolError("a share is not a field element")
        values.append(value)
    secret = sum(c * v for c, v in zip(lagrange_at_zero(xs), values, strict=True)) % PRIME
    if secret >= 1 << (8 * length):
        raise ProtocolError("the shares do not rebuild a secret of the expected size")
    return secret.to_bytes(length, "big")
