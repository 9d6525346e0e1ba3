"""Who shares with whom: the complete graph of SecAgg and the sparse graph of SecAgg+.

Bonawitz et al. (CCS 2017) have every client agree pairwise masks with, and secret-share its
keys to, every other client: O(n) work per client, O(n^2) in all. Bell, Bonawitz, Gascon,
Lepoint and Raykova ("Secure Single-Server Aggregation with (Poly)Logarithmic Overhead",
CCS 2020) replace the complete graph with a random ``k``-regular graph, ``k = O(log n)``: a
Harary graph ``H(n, k)`` (node ``i`` is joined to ``i +- 1, ..., i +- k/2`` modulo ``n``) whose
nodes are relabelled by a random permutation from a public seed. Each client then masks with
and shares to its ``k`` neighbours only, with a threshold ``t`` on its neighbourhood.

Parameters (:func:`plus_parameters`), chosen as the paper's section 4 does: the smallest even
``k`` (at least ``2 ceil(log2 n)``) and a threshold ``t`` in ``(k/2, k]`` such that, with a
fraction ``gamma`` of corrupt clients and a fraction ``delta`` of dropouts, union bounds over
the ``n`` neighbourhoods (each a uniformly random ``k``-subset after the relabelling, so counts
are hypergeometric) give

- *security*: some client has ``t`` or more corrupt neighbours (who could pool its shares), or
  has no honest surviving neighbour (so its update would be exposed by its neighbours' masks
  being known or removed), with probability at most ``2**-sigma``;
- *correctness*: some client has fewer than ``t`` surviving neighbours (so its secrets cannot
  be rebuilt), with probability at most ``2**-eta``.

``t > k/2`` keeps a majority of each neighbourhood necessary to unmask, the paper's condition
for the malicious setting. When no ``k < n - 1`` qualifies the complete graph is used, and the
protocol is plain SecAgg.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.stats import hypergeom

from fedfort.errors import ConfigError

__all__ = ["SharingGraph", "complete_threshold", "plus_parameters"]


@dataclass(frozen=True)
class SharingGraph:
    """Neighbourhoods over a roster of ``n`` clients (indices into the sorted roster)."""

    neighbours: tuple[frozenset[int], ...]

    @classmethod
    def complete(cls, n: int) -> SharingGraph:
        everyone = frozenset(range(n))
        return cls(tuple(everyone - {i} for i in range(n)))

    @classmethod
    def harary(cls, n: int, k: int, seed: bytes) -> SharingGraph:
        """A Harary graph ``H(n, k)`` with nodes relabelled by a permutation drawn from ``seed``."""
        if k % 2 or not 2 <= k < n:
            raise ConfigError(f"a Harary graph needs an even degree 2 <= k < n, got k={k}, n={n}")
        perm = np.random.default_rng(np.frombuffer(seed, dtype=np.uint32)).permutation(n)
        offsets = np.concatenate([np.arange(1, k // 2 + 1), -np.arange(1, k // 2 + 1)])
        ring = (np.arange(n)[:, None] + offsets[None, :]) % n
        relabelled = perm[ring]
        hood: list[frozenset[int]] = [frozenset()] * n
        for position in range(n):
            hood[int(perm[position])] = frozenset(int(v) for v in relabelled[position])
        return cls(tuple(hood))

    @property
    def size(self) -> int:
        return len(self.neighbours)

    @property
    def degree(self) -> int:
        return max(len(h) for h in self.neighbours)

    def is_complete(self) -> bool:
        return self.degree == self.size - 1


def complete_threshold(n: int) -> int:
    """Bonawitz et al.'s threshold against an active server: ``t > 2n/3``."""
    return (2 * n) // 3 + 1


def _union_bound(n: int, population: int, bad: int, k: int, at_least: int) -> float:
    """``n * P[a random k-subset of population holds >= at_least of the bad ones]``."""
    if at_least <= 0:
        return float(n)
    return n * float(hypergeom.sf(at_least - 1, population, bad, k))


@lru_cache(maxsize=256)
def plus_parameters(
    n: int,
    *,
    corrupt_fraction: float = 0.05,
    dropout_fraction: float = 0.1,
    sigma: float = 40.0,
    eta: float = 20.0,
) -> tuple[int, int]:
    """``(k, t)`` for SecAgg+ over ``n`` clients; ``k = n - 1`` means the complete graph."""
    if n < 2:
        raise ConfigError("secure aggregation needs at least 2 clients")
    if not (0 <= corrupt_fraction < 1 / 3 and 0 <= dropout_fraction < 1 / 2):
        raise ConfigError(
            "SecAgg+ parameters need corrupt_fraction < 1/3 and dropout_fraction < 1/2, got "
            f"{corrupt_fraction}, {dropout_fraction}"
        )
    others = n - 1
    corrupt = math.ceil(corrupt_fraction * n)
    dropped = math.ceil(dropout_fraction * n)
    k = max(2, 2 * math.ceil(math.log2(n)))
    k += k % 2
    while k < others:
        exposed = _union_bound(n, others, min(others, corrupt + dropped), k, k)
        # every threshold of this degree at once (one tail evaluation per bound, not per t):
        # a client leaks with >= t corrupt neighbours, or is stuck with fewer than t survivors
        t = np.arange(k // 2 + 1, k + 1)
        leaked = n * hypergeom.sf(t - 1, others, corrupt, k) + exposed
        stuck = n * hypergeom.sf(k - t, others, dropped, k)
        ok = np.flatnonzero((leaked <= 2.0**-sigma) & (stuck <= 2.0**-eta))
        if ok.size:
            return k, int(t[ok[0]])
        k += 2
    return others, complete_threshold(n)
