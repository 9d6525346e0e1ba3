"""Noise sources for the privacy mechanisms, and snapping of noisy floats to a coarse grid.

Randomness
----------
A :class:`NoiseSource` turns uniformly random 64-bit words into uniforms, Gaussians, Laplace
variates, Bernoulli draws and unbiased integers. Only :meth:`NoiseSource.words` differs between
the two sources, so both go through exactly the same transforms:

- :class:`SecureNoise` is a CSPRNG: AES-256-CTR under a fresh key from the operating
  system's CSPRNG (``os.urandom``: ``getrandom(2)`` on Linux). Differential privacy assumes
  the noise is unpredictable to the adversary; a statistical PRNG such as numpy's PCG64 or
  Mersenne Twister is not, since its state can be recovered from its outputs (or from a
  guessed seed) and the noise then subtracted from the release. Every privacy claim fedfort
  makes is about runs that use this source.
- :class:`SeededNoise` draws from numpy's PCG64 with an explicit seed. It exists only for
  reproducible experiments and tests; it gives *no* privacy against anyone who knows or can
  guess the seed, and ``secure`` is ``False`` so callers can refuse it.

Floating-point attack and mitigation
------------------------------------
Mironov ("On significance of the least significant bits for differential privacy", CCS 2012)
showed that textbook floating-point Laplace noise breaks DP completely: ``x + noise`` computed
in floats takes values on an irregular set that depends on ``x``, so the low-order bits of one
release can tell neighbouring inputs apart, often with certainty. Uniforms made by dividing a
random integer, ``log`` and the final addition each leave their own fingerprint.

What fedfort does:

1. Uniforms carry 53 random bits and lie in the *open* interval (0, 1): a word's top 53 bits
   ``k`` give ``k * 2**-53`` with ``k = 0`` rejected and redrawn (every such value is exact in
   float64, and the set is symmetric under ``u -> 1 - u``). ``log`` therefore never sees 0.
2. Gaussian noise comes from Box-Muller (both outputs of each pair are used) and Laplace noise
   from the inverse CDF, all in float64, vectorised; the noise is added to the value in float64.
3. The noisy result is then *snapped* to a power-of-two grid at ``2**-6`` of the noise std
   (:func:`snapping_grid`, :func:`snap`), after Mironov's snapping mechanism. Rounding to a
   multiple of the grid discards the low-order bits the attack reads; the grid is a power of
   two, so the rounding itself is exact. The snapping error (at most half the grid, under 1%
   of the std) is negligible next to the noise.

What remains -- stated plainly:

- There is no formal proof for *snapped Gaussian* noise. Mironov's proof covers the Laplace
  mechanism with a grid at least as coarse as the Laplace scale and a clamped output; our grid
  is finer (so the utility cost is negligible) and the Gaussian case is unproven. A discrete
  Gaussian (Canonne, Kamath and Steinke, "The discrete Gaussian for differential privacy",
  NeurIPS 2020) sampled exactly on integers would give a proof; it is not implemented here.
- Box-Muller on 53-bit uniforms cannot produce ``|z|`` above ``sqrt(106 ln 2)``, about 8.57
  standard deviations (reached when the radial uniform takes its smallest value, probability
  ``2**-53`` per pair): the distribution is a Gaussian truncated where a true Gaussian has
  about ``1e-17`` of its mass, and it is coarse in that far tail. Laplace variates are bounded
  by ``52 ln 2``, about 36 scales, likewise.
- Python and numpy are not constant-time per value. Draws are vectorised over the whole
  vector, so their timing does not depend on the data, but it does depend on the size; and the
  rejection steps (zero words, biased integer words) redraw with probability about ``2**-53``
  and below ``high / 2**64`` per value, independent of the data.
"""

from __future__ import annotations

import math
import operator
import os
import sys
from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from fedfort.errors import ConfigError

__all__ = [
    "NoiseSource",
    "SecureNoise",
    "SeededNoise",
    "Shape",
    "make_noise",
    "snap",
    "snapping_grid",
]

Shape = int | tuple[int, ...]

_TWO_POW_64 = 1 << 64
_MAX_INTEGER_HIGH = 1 << 63  # results are int64
_U53_SCALE = 2.0**-53


def _check_count(n: int) -> int:
    try:
        count = operator.index(n)
    except TypeError:
        raise ConfigError(f"the number of draws must be an integer, got {n!r}") from None
    if isinstance(n, bool) or count < 0:
        raise ConfigError(f"the number of draws must be a non-negative integer, got {n!r}")
    return count


def _check_shape(shape: Shape) -> tuple[int, ...]:
    dims = tuple(shape) if isinstance(shape, tuple | list) else (shape,)
    try:
        out = tuple(operator.index(d) for d in dims)
    except TypeError:
        raise ConfigError(f"shape must be an int or a tuple of ints, got {shape!r}") from None
    if any(isinstance(d, bool) or d < 0 for d in dims):
        raise ConfigError(f"shape must have non-negative dimensions, got {shape!r}")
    return out


def _check_spread(name: str, value: float) -> float:
    v = float(value)
    if not math.isfinite(v) or v < 0.0:
        raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")
    return v


class NoiseSource(ABC):
    """A source of uniformly random 64-bit words and the noise distributions built on them.

    Subclasses implement :meth:`words` only; every transform is vectorised over the request and
    shared, so a seeded source reproduces exactly what the secure one would do with the same
    words.
    """

    secure: ClassVar[bool] = False

    @abstractmethod
    def words(self, n: int) -> np.ndarray:
        """``n`` independent, uniformly random ``uint64`` words (a fresh, writeable array)."""

    def uniform(self, n: int) -> np.ndarray:
        """``n`` float64 uniforms on the open interval (0, 1) with 53 random bits each.

        The top 53 bits ``k`` of a word give ``k * 2**-53``; ``k = 0`` (probability ``2**-53``)
        is redrawn, so the values are the ``2**53 - 1`` points ``k * 2**-53``, ``1 <= k < 2**53``,
        all exact in float64 and equally likely.
        """
        count = _check_count(n)
        k = self.words(count) >> np.uint64(11)
        zero = np.flatnonzero(k == 0)
        while zero.size:
            k[zero] = self.words(zero.size) >> np.uint64(11)
            zero = zero[k[zero] == 0]
        out: np.ndarray = k.astype(np.float64) * _U53_SCALE
        return out

    def gaussian(self, shape: Shape, std: float) -> np.ndarray:
        """Float64 N(0, std**2) noise of ``shape`` by Box-Muller, using both outputs per pair.

        ``std = 0`` returns zeros. See the module docstring for the tail truncation.
        """
        dims = _check_shape(shape)
        sigma = _check_spread("the noise std", std)
        n = math.prod(dims)
        if sigma == 0.0 or n == 0:
            return np.zeros(dims, dtype=np.float64)
        pairs = (n + 1) // 2
        u = self.uniform(2 * pairs)
        radius = np.sqrt(-2.0 * np.log(u[:pairs]))
        angle = (2.0 * math.pi) * u[pairs:]
        z = np.concatenate((radius * np.cos(angle), radius * np.sin(angle)))
        out: np.ndarray = (z[:n] * sigma).reshape(dims)
        return out

    def laplace(self, shape: Shape, scale: float) -> np.ndarray:
        """Float64 Laplace(0, scale) noise of ``shape`` (density ``exp(-|x|/b) / 2b``).

        Inverse CDF on open-interval uniforms: with ``v = u - 1/2`` (exact),
        ``x = -b sign(v) log(1 - 2|v|)``. ``scale = 0`` returns zeros.
        """
        dims = _check_shape(shape)
        b = _check_spread("the Laplace scale", scale)
        n = math.prod(dims)
        if b == 0.0 or n == 0:
            return np.zeros(dims, dtype=np.float64)
        v = self.uniform(n) - 0.5
        out: np.ndarray = (-b * np.sign(v) * np.log1p(-2.0 * np.abs(v))).reshape(dims)
        return out

    def bernoulli(self, p: np.ndarray | float, shape: Shape) -> np.ndarray:
        """Boolean draws of ``shape``, True with probability ``p`` (a scalar or an array that
        broadcasts to ``shape``; every entry in [0, 1]). ``p = 0`` never and ``p = 1`` always
        gives True."""
        dims = _check_shape(shape)
        prob = np.asarray(p, dtype=np.float64)
        if not np.all(np.isfinite(prob)) or np.any(prob < 0.0) or np.any(prob > 1.0):
            raise ConfigError("bernoulli probabilities must be finite and in [0, 1]")
        try:
            prob = np.broadcast_to(prob, dims)
        except ValueError:
            raise ConfigError(
                f"bernoulli probabilities of shape {prob.shape} do not broadcast to {dims}"
            ) from None
        out: np.ndarray = self.uniform(math.prod(dims)).reshape(dims) < prob
        return out

    def integers(self, high: int, shape: Shape) -> np.ndarray:
        """Int64 integers uniform on ``[0, high)`` of ``shape``, without modulo bias.

        Words at or above the largest multiple of ``high`` that fits in 64 bits are rejected
        and redrawn (vectorised; at most half of them, usually a fraction ``high / 2**64``);
        the rest are reduced modulo ``high``. ``1 <= high <= 2**63``.
        """
        dims = _check_shape(shape)
        try:
            h = operator.index(high)
        except TypeError:
            raise ConfigError(f"high must be an integer, got {high!r}") from None
        if isinstance(high, bool) or not 1 <= h <= _MAX_INTEGER_HIGH:
            raise ConfigError(f"high must be an integer in [1, 2**63], got {high!r}")
        n = math.prod(dims)
        if h == 1:
            return np.zeros(dims, dtype=np.int64)
        w = self.words(n)
        if h & (h - 1) == 0:  # a power of two divides 2**64: masking is exact
            return (w & np.uint64(h - 1)).astype(np.int64).reshape(dims)
        limit = np.uint64(_TWO_POW_64 - _TWO_POW_64 % h)
        bad = np.flatnonzero(w >= limit)
        while bad.size:
            w[bad] = self.words(bad.size)
            bad = bad[w[bad] >= limit]
        out: np.ndarray = (w % np.uint64(h)).astype(np.int64).reshape(dims)
        return out


class SecureNoise(NoiseSource):
    """Noise from a CSPRNG: AES-256 in counter mode keyed from the OS (the only secure source).

    Each instance draws a fresh 256-bit key and 128-bit initial counter from ``os.urandom``
    and expands them with AES-CTR from ``cryptography`` (the construction of NIST SP 800-90A's
    CTR_DRBG, without its reseeding). With AES-NI this is several times faster than reading
    megabytes from ``os.urandom`` for every million-coordinate noise vector, and as
    unpredictable to anyone without the key, which never leaves this object.
    """

    secure: ClassVar[bool] = True

    def __init__(self) -> None:
        cipher = Cipher(algorithms.AES(os.urandom(32)), modes.CTR(os.urandom(16)))
        self._stream = cipher.encryptor()

    def words(self, n: int) -> np.ndarray:
        count = _check_count(n)
        block = self._stream.update(bytes(8 * count))
        return np.frombuffer(block, dtype="<u8").astype(np.uint64)

    def __repr__(self) -> str:
        return "SecureNoise()"


class SeededNoise(NoiseSource):
    """Reproducible noise from numpy's PCG64 with a fixed seed.

    For experiments and tests only: anyone who knows or guesses the seed can regenerate the
    noise and remove it, so this source provides no privacy (``secure`` is False).
    """

    secure: ClassVar[bool] = False

    def __init__(self, seed: int) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
            raise ConfigError(f"the noise seed must be a non-negative integer, got {seed!r}")
        self.seed = int(seed)
        self._rng = np.random.Generator(np.random.PCG64(self.seed))

    def words(self, n: int) -> np.ndarray:
        count = _check_count(n)
        return self._rng.integers(0, _TWO_POW_64, size=count, dtype=np.uint64)

    def __repr__(self) -> str:
        return f"SeededNoise(seed={self.seed})"


def make_noise(secure: bool, seed: int | None = None) -> NoiseSource:
    """The secure OS source if ``secure``, else a :class:`SeededNoise` with ``seed``.

    A seed is required for insecure noise (so experiments are reproducible on purpose, never by
    accident); with ``secure=True`` the seed is ignored.
    """
    if secure:
        return SecureNoise()
    if seed is None:
        raise ConfigError(
            "insecure (seeded) noise needs a seed; pass seed=<int> for a reproducible "
            "experiment, or use secure noise for a private run"
        )
    return SeededNoise(seed)


def snapping_grid(std: float, bits: int = 6) -> float:
    """The largest power of two at most ``std / 2**bits``: the grid :func:`snap` rounds noisy
    values to (``std`` > 0 is the noise std)."""
    s = float(std)
    if not math.isfinite(s) or s <= 0.0:
        raise ConfigError(f"the snapping grid needs a finite noise std > 0, got {std!r}")
    if isinstance(bits, bool) or not isinstance(bits, int) or not 0 <= bits <= 64:
        raise ConfigError(f"bits must be an integer in [0, 64], got {bits!r}")
    target = math.ldexp(s, -bits)
    if target < sys.float_info.min:  # zero or subnormal: no exact power-of-two grid
        raise ConfigError(f"the noise std {std!r} is too small to snap at 2**-{bits} of it")
    _, exponent = math.frexp(target)  # target = m * 2**exponent with 0.5 <= m < 1
    return math.ldexp(1.0, exponent - 1)


def snap(values: np.ndarray, grid: float) -> np.ndarray:
    """Round every value to the nearest multiple of ``grid`` (a power of two), in float64.

    Because the grid is a power of two, ``values / grid`` and the final product are exact, so the
    result is an exact multiple of the grid within ``grid / 2`` of the input.
    """
    g = float(grid)
    if not math.isfinite(g) or g <= 0.0 or math.frexp(g)[0] != 0.5:
        raise ConfigError(
            f"the snapping grid must be a positive power of two (see snapping_grid), got {grid!r}"
        )
    arr = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ConfigError("cannot snap non-finite values (NaN or Inf); check the inputs")
    out: np.ndarray = np.round(arr / g) * g
    return out
