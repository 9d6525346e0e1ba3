"""Norm clipping and local differential-privacy mechanisms applied by a client to its own data.

- :func:`clip_rows_l2`, :func:`clip_l2`, :func:`clip_l1` bound the sensitivity.
- :class:`LocalGaussian` and :class:`LocalLaplace` (Dwork and Roth, "The Algorithmic
  Foundations of Differential Privacy", 2014, sections 3.3 and A) privatise one update before it
  leaves the client; the Gaussian noise is calibrated with the analytic Gaussian mechanism (Balle
  and Wang, "Improving the Gaussian mechanism for differential privacy", ICML 2018) and checked
  with ``dp_accounting``'s privacy-loss-distribution (PLD) accountant.
- :func:`randomized_response` is k-ary randomized response (Warner, "Randomized response",
  JASA 1965; the k-RR of Kairouz, Oh and Viswanath, "Extremal mechanisms for local differential
  privacy", JMLR 2016), with :func:`estimate_frequencies` to debias the reports.

Local DP means the neighbouring inputs are *any* two inputs of one client, so the sensitivity is
the diameter of the clipped set: ``2C`` for a norm ball of radius ``C``. Each mechanism's
``dp_event`` describes one application for a ``dp_accounting`` accountant: the Gaussian and
Laplace events with noise multipliers relative to that ``2C`` (neighbouring relation
``ADD_OR_REMOVE_ONE``, or ``REPLACE_SPECIAL`` for Laplace), randomized response with
``REPLACE_ONE``, which its analysis requires.

Noise comes from a :class:`~fedfort.privacy.noise.NoiseSource`; continuous noise is added in
float64 and the result snapped to a power-of-two grid (see :mod:`fedfort.privacy.noise` for
why, and for what that does not cover).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import dp_accounting
import numpy as np

from fedfort.errors import ConfigError
from fedfort.privacy.noise import NoiseSource, snap, snapping_grid

__all__ = [
    "LocalGaussian",
    "LocalLaplace",
    "clip_l1",
    "clip_l2",
    "clip_rows_l2",
    "clipped_sum",
    "estimate_frequencies",
    "gaussian_noise_multiplier",
    "randomize_bits",
    "randomized_response",
    "randomized_response_event",
    "rr_keep_probability",
    "rr_noise_parameter",
]

_MAX_BUCKETS = 1 << 63


# ----------------------------------------------------------------------------- validation


def _check_epsilon(epsilon: float) -> float:
    e = float(epsilon)
    if not math.isfinite(e) or e <= 0.0:
        raise ConfigError(
            f"epsilon must be a finite number > 0, got {epsilon!r}; set a positive privacy budget"
        )
    return e


def _check_delta(delta: float) -> float:
    d = float(delta)
    if not 0.0 < d < 1.0:
        raise ConfigError(
            f"delta must be in (0, 1), got {delta!r}; typical values are below 1/(number of users)"
        )
    return d


def _check_bound(name: str, bound: float) -> float:
    b = float(bound)
    if not math.isfinite(b) or b <= 0.0:
        raise ConfigError(f"{name} must be a finite number > 0, got {bound!r}")
    return b


def _check_buckets(num_buckets: int) -> int:
    if (
        isinstance(num_buckets, bool)
        or not isinstance(num_buckets, int | np.integer)
        or not 2 <= num_buckets <= _MAX_BUCKETS
    ):
        raise ConfigError(
            f"num_buckets must be an integer >= 2, got {num_buckets!r}; "
            "randomized response needs at least two possible answers"
        )
    return int(num_buckets)


def _real_array(name: str, values: np.ndarray) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype.kind not in "iuf":
        raise ConfigError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    out = arr.astype(np.float64, copy=False)
    if not np.all(np.isfinite(out)):
        raise ConfigError(f"{name} contains NaN or Inf; only finite values can be privatised")
    return out


def _bucket_array(name: str, values: np.ndarray, num_buckets: int) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype.kind not in "iu":
        raise ConfigError(
            f"{name} must be an integer array of bucket indices, got dtype {arr.dtype}; "
            "map the answers to 0 .. num_buckets - 1 first"
        )
    if arr.size and (arr.min() < 0 or arr.max() >= num_buckets):
        raise ConfigError(
            f"{name} must lie in [0, {num_buckets}), got values in "
            f"[{arr.min()}, {arr.max()}]; map the answers to 0 .. num_buckets - 1"
        )
    return arr.astype(np.int64, copy=False)


# ----------------------------------------------------------------------------- clipping


def clip_rows_l2(matrix: np.ndarray, bound: float) -> tuple[np.ndarray, np.ndarray]:
    """Scale every row of the ``(n, d)`` ``matrix`` by ``min(1, bound / ||row||_2)``.

    Returns the clipped float64 copy and the rows' original L2 norms (float64, shape ``(n,)``).
    Rows within the bound (zero rows included) are returned unchanged.
    """
    m = _real_array("matrix", matrix)
    if m.ndim != 2:
        raise ConfigError(f"matrix must be 2-D (n, d), got shape {m.shape}")
    b = _check_bound("the clipping bound", bound)
    norms = np.linalg.norm(m, axis=1)
    scale = np.ones_like(norms)
    over = norms > b
    scale[over] = b / norms[over]
    clipped: np.ndarray = m * scale[:, None]
    return clipped, norms


# Row norms are summed in float32 over blocks of _NORM_BLOCK columns (relative error below
# _NORM_BLOCK * 2**-24 = 2.4e-4 for any data) and the blocks in float64; clipped rows are
# scaled with _CLIP_SLACK to spare, so rounding cannot lift a clipped row above the bound.
_NORM_BLOCK = 4096
_CLIP_SLACK = 1e-3


def _row_norms(matrix: np.ndarray) -> np.ndarray:
    squares = np.zeros(matrix.shape[0], dtype=np.float64)
    for begin in range(0, matrix.shape[1], _NORM_BLOCK):  # blocks of columns, not coordinates
        block = matrix[:, begin : begin + _NORM_BLOCK]
        squares += np.einsum("ij,ij->i", block, block)
    return np.sqrt(squares)


def clipped_sum(matrix: np.ndarray, bound: float) -> tuple[np.ndarray, np.ndarray]:
    """Sum of the rows of a float32 ``(n, d)`` matrix, each clipped to L2 norm ``bound``.

    The DP-FedAvg sum (McMahan et al. 2018) without copying the matrix: row norms and the
    weighted sum run in float32, and rows over the bound are scaled by
    ``bound / norm * (1 - 1e-3)`` so that float32 rounding cannot lift a clipped row above
    the bound. Returns the sum as float64 and the rows' norms (float64).
    """
    if matrix.ndim != 2 or matrix.dtype != np.float32:
        raise ConfigError(f"need a float32 (n, d) matrix, got {matrix.dtype} {matrix.shape}")
    b = _check_bound("the clipping bound", bound)
    norms = _row_norms(matrix)
    if not np.isfinite(norms).all():
        raise ConfigError("the update matrix holds NaN or Inf")
    scale = np.ones_like(norms)
    over = norms > b * (1.0 - _CLIP_SLACK)
    scale[over] = b / norms[over] * (1.0 - _CLIP_SLACK)
    total = (scale.astype(np.float32) @ matrix).astype(np.float64)
    return total, norms


def clip_l2(vector: np.ndarray, bound: float) -> tuple[np.ndarray, float]:
    """Scale ``vector`` (any shape, taken as a whole) to L2 norm at most ``bound``.

    Returns the clipped float64 copy and the original L2 norm.
    """
    v = _real_array("vector", vector)
    b = _check_bound("the clipping bound", bound)
    norm = float(np.linalg.norm(v.ravel()))
    factor = b / norm if norm > b else 1.0
    clipped: np.ndarray = v * factor
    return clipped, norm


def clip_l1(vector: np.ndarray, bound: float) -> tuple[np.ndarray, float]:
    """Scale ``vector`` (any shape, taken as a whole) to L1 norm at most ``bound``.

    Returns the clipped float64 copy and the original L1 norm.
    """
    v = _real_array("vector", vector)
    b = _check_bound("the clipping bound", bound)
    norm = float(np.abs(v).sum())
    factor = b / norm if norm > b else 1.0
    clipped: np.ndarray = v * factor
    return clipped, norm


# ----------------------------------------------------------------------------- Gaussian


def _pld_gaussian_epsilon(noise_multiplier: float, delta: float) -> float:
    accountant = dp_accounting.pld.PLDAccountant()
    accountant.compose(dp_accounting.GaussianDpEvent(noise_multiplier))
    return float(accountant.get_epsilon(delta))


#: The least noise multiplier :func:`gaussian_noise_multiplier` calibrates (epsilon about 300 at
#: delta 1e-5). The PLD check's cost grows as the multiplier shrinks (2 s at 0.15, 17 s at
#: 0.036, 150 GiB at epsilon 1e6), so a directive asking for less would stall the client.
MIN_NOISE_MULTIPLIER = 0.05


@functools.lru_cache(maxsize=128)
def gaussian_noise_multiplier(epsilon: float, delta: float) -> float:
    """The smallest noise multiplier ``z`` (noise std over L2 sensitivity) for which ONE
    application of the Gaussian mechanism is ``(epsilon, delta)``-DP.

    Starts from the exact analytic calibration of Balle and Wang (ICML 2018,
    ``dp_accounting.get_sigma_gaussian``) and confirms it with a fresh ``dp_accounting`` PLD
    accountant. The PLD discretisation is pessimistic and often puts the exact value a hair
    (about 1e-12 relative) above ``epsilon``; ``z`` is then raised by a relative step of 1e-9,
    growing fourfold until the PLD accountant accepts it. The result therefore always has a PLD
    epsilon at most ``epsilon`` and is within a few parts per million of the optimum.

    ``dp_accounting.calibrate_dp_mechanism`` is not used for the search: bracketed from small
    multipliers it builds loss distributions that do not fit in memory (z = 1e-3 asks for
    76 GiB), and each PLD evaluation costs up to a few tenths of a second at large epsilon
    (about 0.3 s at epsilon 8), so one or two checks beat a root search. Cached per
    ``(epsilon, delta)``.
    """
    eps = _check_epsilon(epsilon)
    dlt = _check_delta(delta)
    z0 = float(dp_accounting.get_sigma_gaussian(eps, dlt))
    if not (math.isfinite(z0) and z0 > 0.0):
        raise ConfigError(f"cannot calibrate Gaussian noise for epsilon={eps}, delta={dlt}")
    if z0 < MIN_NOISE_MULTIPLIER:
        raise ConfigError(
            f"epsilon={eps} at delta={dlt} needs a noise multiplier of {z0:.3g}, below "
            f"{MIN_NOISE_MULTIPLIER}: the PLD check of so little noise would need memory and time "
            "without bound, and the release would protect next to nothing. Use a smaller epsilon"
        )
    z, step = z0, 1e-9
    while _pld_gaussian_epsilon(z, dlt) > eps:
        if step > 1.0:
            raise ConfigError(
                f"the PLD accountant cannot certify epsilon={eps} at delta={dlt} (its tail "
                "truncation is too coarse); raise delta to at least 1e-12"
            )
        z = z0 * (1.0 + step)
        step *= 4.0
    return z


@dataclass(frozen=True)
class LocalGaussian:
    """Local DP Gaussian mechanism on a client's update (Dwork and Roth 2014, Appendix A).

    The update is clipped to L2 norm ``clip_norm`` = C and ``N(0, s**2)`` noise is added to
    every coordinate. Any two clipped inputs differ by at most ``2C`` in L2 (the diameter of the
    ball), so the sensitivity is ``2C`` and ``s = noise_multiplier * 2C``, with the noise
    multiplier calibrated (Balle and Wang 2018, checked with ``dp_accounting``'s PLD accountant;
    see :func:`gaussian_noise_multiplier`) so that ONE application is
    ``(epsilon, delta)``-DP. Repeated applications compose: account for them with
    :meth:`dp_event`.

    The calibration runs (and is cached) at construction, so an impossible budget fails early.
    """

    epsilon: float
    delta: float
    clip_norm: float

    def __post_init__(self) -> None:
        _check_epsilon(self.epsilon)
        _check_delta(self.delta)
        _check_bound("clip_norm", self.clip_norm)
        gaussian_noise_multiplier(float(self.epsilon), float(self.delta))

    @property
    def sensitivity(self) -> float:
        """The L2 sensitivity, ``2 * clip_norm``."""
        return 2.0 * float(self.clip_norm)

    @property
    def noise_multiplier(self) -> float:
        """Noise std over the L2 sensitivity ``2 * clip_norm``."""
        return gaussian_noise_multiplier(float(self.epsilon), float(self.delta))

    @property
    def std(self) -> float:
        """Per-coordinate noise standard deviation."""
        return self.noise_multiplier * self.sensitivity

    def apply(self, update: np.ndarray, noise: NoiseSource) -> np.ndarray:
        """Clip ``update`` (any shape) to L2 norm ``clip_norm``, add Gaussian noise in float64,
        snap to ``snapping_grid(std)`` and return float32 of the same shape."""
        clipped, _ = clip_l2(update, self.clip_norm)
        std = self.std
        noisy = clipped + noise.gaussian(clipped.shape, std)
        out: np.ndarray = snap(noisy, snapping_grid(std)).astype(np.float32)
        return out

    def dp_event(self) -> dp_accounting.DpEvent:
        """One application: ``GaussianDpEvent(noise_multiplier)``."""
        return dp_accounting.GaussianDpEvent(self.noise_multiplier)


# ----------------------------------------------------------------------------- Laplace


@dataclass(frozen=True)
class LocalLaplace:
    """Local DP Laplace mechanism on a client's update (Dwork and Roth 2014, section 3.3).

    The update is clipped to L1 norm ``clip_norm`` = C; two clipped inputs differ by at most
    ``2C`` in L1, so Laplace noise of scale ``b = 2C / epsilon`` per coordinate makes one
    application pure ``epsilon``-DP. The noise multiplier (scale over L1 sensitivity) is
    ``1 / epsilon``.
    """

    epsilon: float
    clip_norm: float

    def __post_init__(self) -> None:
        _check_epsilon(self.epsilon)
        _check_bound("clip_norm", self.clip_norm)

    @property
    def sensitivity(self) -> float:
        """The L1 sensitivity, ``2 * clip_norm``."""
        return 2.0 * float(self.clip_norm)

    @property
    def scale(self) -> float:
        """Per-coordinate Laplace scale ``b = 2C / epsilon`` (the std is ``sqrt(2) * b``)."""
        return self.sensitivity / float(self.epsilon)

    @property
    def noise_multiplier(self) -> float:
        """Laplace scale over the L1 sensitivity: ``1 / epsilon``."""
        return 1.0 / float(self.epsilon)

    def apply(self, update: np.ndarray, noise: NoiseSource) -> np.ndarray:
        """Clip ``update`` (any shape) to L1 norm ``clip_norm``, add Laplace noise in float64,
        snap to ``2**-6`` of the noise std and return float32 of the same shape."""
        clipped, _ = clip_l1(update, self.clip_norm)
        b = self.scale
        noisy = clipped + noise.laplace(clipped.shape, b)
        out: np.ndarray = snap(noisy, snapping_grid(math.sqrt(2.0) * b)).astype(np.float32)
        return out

    def dp_event(self) -> dp_accounting.DpEvent:
        """One application: ``LaplaceDpEvent(noise_multiplier)`` (use an ``ADD_OR_REMOVE_ONE``
        or ``REPLACE_SPECIAL`` accountant; the ``2C`` sensitivity already covers replacement)."""
        return dp_accounting.LaplaceDpEvent(self.noise_multiplier)


# ----------------------------------------------------------------------------- randomized response


def rr_keep_probability(epsilon: float, num_buckets: int) -> float:
    """Probability that k-ary randomized response reports the true bucket:
    ``e**eps / (e**eps + k - 1)`` (Warner 1965; k-RR of Kairouz et al. 2016)."""
    eps = _check_epsilon(epsilon)
    k = _check_buckets(num_buckets)
    return 1.0 / (1.0 + (k - 1) * math.exp(-eps))


def _rr_other_probability(epsilon: float, num_buckets: int) -> float:
    """Probability of each particular wrong bucket: ``1 / (e**eps + k - 1)``."""
    return math.exp(-epsilon) / (1.0 + (num_buckets - 1) * math.exp(-epsilon))


def rr_noise_parameter(epsilon: float, num_buckets: int) -> float:
    """The noise parameter ``p`` of ``dp_accounting.RandomizedResponseDpEvent`` equivalent to
    k-RR at ``epsilon``: with probability ``1 - p`` report the input, with probability ``p`` a
    uniform bucket among all ``k``. ``p = k / (e**eps + k - 1)``."""
    eps = _check_epsilon(epsilon)
    k = _check_buckets(num_buckets)
    return k * _rr_other_probability(eps, k)


def randomized_response(
    values: np.ndarray, num_buckets: int, epsilon: float, noise: NoiseSource
) -> np.ndarray:
    """k-ary randomized response on an integer array of buckets in ``[0, num_buckets)``.

    Each value is reported truthfully with probability ``e**eps / (e**eps + k - 1)`` and
    otherwise replaced by one of the other ``k - 1`` buckets, uniformly; the output
    probabilities of two inputs differ by at most a factor ``e**eps``, so every report is
    ``epsilon``-DP (local, replace-one). Vectorised; returns int64 of the same shape.
    """
    k = _check_buckets(num_buckets)
    eps = _check_epsilon(epsilon)
    v = _bucket_array("values", values, k)
    keep = noise.bernoulli(rr_keep_probability(eps, k), v.shape)
    draw = noise.integers(k - 1, v.shape)  # uniform on [0, k - 1) ...
    others = draw + (draw >= v)  # ... mapped onto the k - 1 buckets other than v
    out: np.ndarray = np.where(keep, v, others)
    return out


def randomize_bits(bits: np.ndarray, epsilon: float, noise: NoiseSource) -> np.ndarray:
    """Binary randomized response: keep each bit with probability ``e**eps / (e**eps + 1)``,
    flip it otherwise. ``bits`` is a bool array or an integer array of 0s and 1s; the result has
    the same dtype and shape."""
    eps = _check_epsilon(epsilon)
    arr = np.asarray(bits)
    if arr.dtype == np.bool_:
        as_bool = arr
    elif arr.dtype.kind in "iu":
        if arr.size and not np.all((arr == 0) | (arr == 1)):
            raise ConfigError("bits must contain only 0 and 1 (or be a bool array)")
        as_bool = arr.astype(np.bool_)
    else:
        raise ConfigError(f"bits must be a bool or 0/1 integer array, got dtype {arr.dtype}")
    flip = ~noise.bernoulli(rr_keep_probability(eps, 2), arr.shape)
    out: np.ndarray = (as_bool ^ flip).astype(arr.dtype)
    return out


def estimate_frequencies(reports: np.ndarray, num_buckets: int, epsilon: float) -> np.ndarray:
    """Unbiased estimate of the true bucket frequencies (fractions summing to 1, entries may be
    slightly negative) from k-RR reports made at ``epsilon``.

    A report lands in bucket ``j`` with probability ``q + (p - q) f_j``, ``p`` the keep and
    ``q`` the per-other-bucket probability, so ``f_j = (observed_j - q) / (p - q)``.
    """
    k = _check_buckets(num_buckets)
    eps = _check_epsilon(epsilon)
    r = _bucket_array("reports", reports, k)
    if r.size == 0:
        raise ConfigError("estimate_frequencies needs at least one report")
    observed = np.bincount(r.ravel(), minlength=k).astype(np.float64) / r.size
    q = _rr_other_probability(eps, k)
    gap = -math.expm1(-eps) / (1.0 + (k - 1) * math.exp(-eps))  # p - q, without cancellation
    out: np.ndarray = (observed - q) / gap
    return out


def randomized_response_event(epsilon: float, num_buckets: int) -> dp_accounting.DpEvent:
    """One k-RR report as ``RandomizedResponseDpEvent(p, k)`` (needs a ``REPLACE_ONE`` or
    ``REPLACE_SPECIAL`` accountant)."""
    return dp_accounting.RandomizedResponseDpEvent(
        rr_noise_parameter(epsilon, num_buckets), _check_buckets(num_buckets)
    )
