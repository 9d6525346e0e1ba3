"""The degree ``k`` and threshold ``t`` of a masking session, from the bounds it must survive.

Each client ``u`` Shamir-shares its self-mask seed ``b_u`` and its mask key ``s_sk_u`` among
its ``k + 1`` *holders* (itself and its ``k`` neighbours), ``t`` shares rebuild either. An
honest holder reveals, per owner, the share of ``b`` or the share of ``s_sk``, never both; a
corrupt holder reveals both. A malicious server that shows some holders a survivor list with
``u`` and the others one without it (Bonawitz et al., CCS 2017, section 6; Bell et al., CCS
2020, section 4) needs ``t`` shares on each side, so with ``c`` corrupt holders it needs
``t - c`` *disjoint* honest holders per side: ``2 (t - c) <= k + 1 - c``. The attack is thus
impossible exactly when

    2 t > k + 1 + c_max,

where ``c_max`` bounds the corrupt holders of any one client:

- complete graph (SecAgg, ``k = n - 1``): ``c_max = C = ceil(gamma n)``, the assumed number of
  corrupt clients, so ``t > (n + C) / 2`` -- exactly, with no probability involved;
- SecAgg+ (random ``k``-regular graph): ``c_max`` is the smallest ``c`` with
  ``n * P[H > c] <= 2**-sigma`` for ``H ~ Hypergeometric(n - 1, C, k)`` (a union bound over the
  ``n`` neighbourhoods, each a uniformly random ``k``-subset of the others once the graph is
  relabelled by a seed the corrupt clients cannot influence).

Liveness asks that ``t`` holders survive: with ``D = ceil(delta n)`` dropouts, ``t <= k + 1 -
d_live`` for a surviving owner and ``t <= k - d_gone`` for a dropped one, the ``d`` bounding
the dropouts in a neighbourhood except with probability ``2**-eta`` (exactly for the complete
graph). And ``t >= c_max + 2``: any ``t`` surviving holders of ``u`` include an honest
neighbour besides ``u``, whose pairwise mask hides ``u``'s input.

:func:`derive` picks the smallest ``k`` of :func:`degree_grid` (even, from the paper's
logarithmic ``2 ceil(log2 n)``, growing by about ``k / 8`` per step beyond 32) admitting such a
``t``, the smallest such ``t``, and falls back to the complete graph; it raises
:class:`ConfigError` when even that cannot be safe and live. Every bound is one vectorised
hypergeometric tail over an ``O(sqrt(k))`` window per ``k``, over ``O(log n)`` degrees, and
the result is cached, so a hostile roster size cannot stall a client (and the roster it
accepts is bounded anyway, :class:`~fedfort.secagg.policy.ClientPolicy`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
from scipy.stats import hypergeom

from fedfort.errors import ConfigError

__all__ = [
    "Thresholds",
    "clients_of",
    "corrupt_bound",
    "degree_grid",
    "derive",
    "neighbourhood_bound",
    "plus_parameters",
    "safe_threshold",
]

SIGMA = 40.0  # security: the graph is bad with probability <= 2**-SIGMA
ETA = 20.0  # liveness: a session aborts for want of shares with probability <= 2**-ETA


@dataclass(frozen=True)
class Thresholds:
    """``k``, ``t`` and the bounds they were chosen against (for docs, logs and checks)."""

    n: int
    degree: int
    threshold: int
    corrupt: int  # C, corrupt clients assumed
    corrupt_bound: int  # c_max, corrupt holders of any one client
    dropout_bound: int  # dropped holders of a surviving client

    @property
    def complete(self) -> bool:
        return self.degree >= self.n - 1


def clients_of(fraction: float, n: int) -> int:
    """``ceil(fraction * n)``, immune to float noise (``(1/3) * 12`` is 4, not 5)."""
    return math.ceil(round(fraction * n, 9))


def neighbourhood_bound(n: int, k: int, bad: int, bits: float) -> int:
    """The smallest ``c`` with ``n * P[Hypergeometric(n - 1, bad, k) > c] <= 2**-bits``.

    With ``bad`` marked clients among ``n`` and every neighbourhood a uniformly random
    ``k``-subset of the other ``n - 1``, no neighbourhood holds more than ``c`` marked ones
    except with probability ``2**-bits`` (union bound). For ``k = n - 1`` this is ``bad``.
    """
    bad = min(bad, n - 1)
    if bad <= 0:
        return 0
    # the answer lies between the mean (the tail there is about 1/2) and the mean plus
    # Hoeffding's deviation for n * 2**-bits (which bounds hypergeometric tails too), so only
    # that window of O(sqrt(k)) values is evaluated, in one call
    mean = k * bad / (n - 1)
    lo = max(0, math.floor(mean) - 1)
    hi = min(k, math.ceil(mean + math.sqrt(k * (bits * math.log(2) + math.log(n)) / 2)) + 1)
    window = np.arange(lo, hi + 1)
    ok = np.flatnonzero(n * hypergeom.sf(window, n - 1, bad, k) <= 2.0**-bits)
    if ok.size and (ok[0] > 0 or lo == 0):
        return int(window[ok[0]])
    tail = n * hypergeom.sf(np.arange(k + 1), n - 1, bad, k)  # not reached; kept exact
    return int(np.flatnonzero(tail <= 2.0**-bits)[0])


def corrupt_bound(n: int, k: int, corrupt_fraction: float, sigma: float = SIGMA) -> int:
    """``c_max`` for a graph of degree ``k`` over ``n`` clients (exact for the complete one)."""
    corrupt = clients_of(corrupt_fraction, n)
    if k >= n - 1:
        return min(corrupt, n - 1)
    return neighbourhood_bound(n, k, corrupt, sigma)


def safe_threshold(k: int, corrupt_bound: int) -> int:
    """The smallest ``t`` with ``2 t > k + 1 + corrupt_bound``."""
    return (k + 1 + corrupt_bound) // 2 + 1


def _check_fractions(corrupt_fraction: float, dropout_fraction: float) -> None:
    if not (0 <= corrupt_fraction < 0.5 and 0 <= dropout_fraction < 0.5):
        raise ConfigError(
            "secure aggregation needs 0 <= corrupt_fraction < 1/2 and 0 <= dropout_fraction "
            f"< 1/2, got {corrupt_fraction} and {dropout_fraction}"
        )


def _fit(
    n: int, k: int, corrupt_fraction: float, dropped: int, sigma: float, eta: float
) -> Thresholds | None:
    """The safe ``t`` for degree ``k`` if it is also live, else ``None``."""
    c_max = corrupt_bound(n, k, corrupt_fraction, sigma)
    t = max(safe_threshold(k, c_max), c_max + 2)
    if k >= n - 1:
        live, gone = min(dropped, n), max(dropped - 1, 0)
    else:
        live = neighbourhood_bound(n, k, dropped, eta)
        gone = neighbourhood_bound(n, k, dropped - 1, eta)
    # a surviving owner needs t of its k + 1 holders, a dropped one t of its k neighbours
    if t > k + 1 - live or (dropped > 0 and t > k - gone):
        return None
    return Thresholds(n, k, t, clients_of(corrupt_fraction, n), c_max, live)


@lru_cache(maxsize=512)
def derive(
    n: int,
    variant: Literal["secagg", "secagg+"],
    *,
    corrupt_fraction: float,
    dropout_fraction: float,
    sigma: float = SIGMA,
    eta: float = ETA,
    degree: int | None = None,
) -> Thresholds:
    """``(k, t)`` for ``n`` clients (see the module docstring); ``degree`` fixes ``k``."""
    if n < 2:
        raise ConfigError("secure aggregation needs at least 2 clients")
    _check_fractions(corrupt_fraction, dropout_fraction)
    dropped = clients_of(dropout_fraction, n)
    if degree is not None:
        if variant != "secagg+" or degree % 2 or not 2 <= degree <= n - 1:
            raise ConfigError(
                f"a SecAgg+ degree must be even, >= 2 and at most n - 1 = {n - 1}; got {degree}"
            )
        candidates: list[int] = [degree]
    elif variant == "secagg+":
        candidates = degree_grid(n)
    else:
        candidates = []
    if degree is None:
        candidates.append(n - 1)
    for k in candidates:
        found = _fit(n, k, corrupt_fraction, dropped, sigma, eta)
        if found is not None:
            return found
    k = candidates[-1]
    c_max = corrupt_bound(n, k, corrupt_fraction, sigma)
    raise ConfigError(
        f"no safe threshold for {n} clients with degree {k}: with up to "
        f"{clients_of(corrupt_fraction, n)} corrupt clients ({c_max} among one client's "
        f"holders) a threshold must exceed (k + 1 + {c_max}) / 2 = {(k + 1 + c_max) / 2}, but "
        f"with {dropped} dropouts fewer holders may survive. Select more clients per round, or "
        "lower secure_aggregation.corrupt_fraction or dropout_fraction"
    )


def degree_grid(n: int) -> list[int]:
    """The degrees tried for ``n`` clients: even, from ``2 ceil(log2 n)``, in steps of 2 up to
    32 and of about ``k / 8`` beyond (O(log n) candidates, so a large roster stays cheap)."""
    k, out = max(2, 2 * math.ceil(math.log2(n))), []
    while k < n - 1:
        out.append(k)
        k += max(2, 2 * (k // 16))
    return out


def plus_parameters(
    n: int,
    *,
    corrupt_fraction: float = 1 / 3,
    dropout_fraction: float = 0.1,
    sigma: float = SIGMA,
    eta: float = ETA,
) -> tuple[int, int]:
    """``(k, t)`` for SecAgg+ over ``n`` clients; ``k = n - 1`` means the complete graph."""
    found = derive(
        n,
        "secagg+",
        corrupt_fraction=corrupt_fraction,
        dropout_fraction=dropout_fraction,
        sigma=sigma,
        eta=eta,
    )
    return found.degree, found.threshold
