"""Who shares with whom: the complete graph of SecAgg and the sparse graph of SecAgg+.

Bonawitz et al. (CCS 2017) have every client agree pairwise masks with, and secret-share its
keys to, every other client: O(n) work per client, O(n^2) in all. Bell, Bonawitz, Gascon,
Lepoint and Raykova ("Secure Single-Server Aggregation with (Poly)Logarithmic Overhead",
CCS 2020) replace the complete graph with a random ``k``-regular graph, ``k = O(log n)``: a
Harary graph ``H(n, k)`` (node ``i`` is joined to ``i +- 1, ..., i +- k/2`` modulo ``n``) whose
nodes are relabelled by a random permutation from a public seed. Each client then masks with
and shares to its ``k`` neighbours only, with a threshold ``t`` on its neighbourhood.

The parameters (``k``, the degree, and ``t``, the Shamir threshold) are derived in
:mod:`fedfort.secagg.thresholds` from the corruption and dropout bounds; this module only
builds the graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedfort.errors import ConfigError

__all__ = ["SharingGraph"]


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
