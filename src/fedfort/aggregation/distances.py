"""Pairwise geometry of the stacked update matrix, computed once per round.

Squared Euclidean distances come from one Gram matrix, ``|x_i|^2 + |x_j|^2 - 2 <x_i, x_j>``.
That identity cancels catastrophically when two updates are close compared with their norms
(in float32, two updates at distance 1e-3 with norm 1e3 come out as noise). fedfort corrects
for it instead of paying for a float64 copy of the whole matrix:

1. the Gram matrix of the float32 matrix is one SGEMM (its rounding error is about
   ``sqrt(d) * 6e-8`` of ``|x_i|^2 + |x_j|^2`` in practice);
2. every pair whose distance comes out below ``1e-2`` of ``|x_i|^2 + |x_j|^2``, where that
   error could matter, is recomputed exactly in float64 as ``sum((x_i - x_j)^2)``, vectorised
   over those pairs in chunks. Honest updates are rarely that close (cosine > 0.99); colluding
   attackers sending near-identical updates are, and they get exact distances.

Float64 input takes the exact float64 Gram path. Negative round-off is clipped to zero and the
diagonal set to exactly zero.
"""

from __future__ import annotations

import numpy as np

__all__ = ["cosine_similarities", "pairwise_sq_distances", "row_norms"]

_SUSPICIOUS = 1e-2
_CHUNK_ELEMENTS = 1 << 24  # ~128 MB of float64 per recomputation chunk


def row_norms(updates: np.ndarray) -> np.ndarray:
    """L2 norm of every row, in float64."""
    squares = np.einsum("ij,ij->i", updates, updates, dtype=np.float64)
    norms: np.ndarray = np.sqrt(squares)
    return norms


def _gram_distances(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    gram = (x @ x.T).astype(np.float64)
    sq = np.diag(gram).copy()
    dist = sq[:, None] + sq[None, :] - 2.0 * gram
    return dist, sq


def pairwise_sq_distances(updates: np.ndarray) -> np.ndarray:
    """``(n, n)`` float64 matrix of squared L2 distances between the rows of ``updates``."""
    dist, sq = _gram_distances(updates)
    if updates.dtype != np.float64:
        scale = sq[:, None] + sq[None, :]
        rows, cols = np.nonzero(np.triu(dist < _SUSPICIOUS * scale, k=1))
        if rows.size:
            exact = np.empty(rows.size)
            step = max(1, _CHUNK_ELEMENTS // max(1, updates.shape[1]))
            for begin in range(0, rows.size, step):  # chunks of pairs, not single pairs
                i, j = rows[begin : begin + step], cols[begin : begin + step]
                diff = updates[i].astype(np.float64) - updates[j]
                exact[begin : begin + step] = np.einsum("ij,ij->i", diff, diff)
            dist[rows, cols] = exact
            dist[cols, rows] = exact
    np.maximum(dist, 0.0, out=dist)
    np.fill_diagonal(dist, 0.0)
    return dist


def cosine_similarities(updates: np.ndarray) -> np.ndarray:
    """``(n, n)`` float64 cosine similarities between rows (0 for an all-zero row)."""
    x = updates.astype(np.float64, copy=False)
    norms = row_norms(updates)
    safe = np.where(norms > 0, norms, 1.0)
    sim = (x @ x.T) / safe[:, None] / safe[None, :]
    sim[norms == 0, :] = 0.0
    sim[:, norms == 0] = 0.0
    return np.clip(sim, -1.0, 1.0)
