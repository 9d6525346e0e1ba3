"""Pairwise geometry of the stacked update matrix, computed once per round.

Squared Euclidean distances come from one Gram matrix, ``|x_i|^2 + |x_j|^2 - 2 <x_i, x_j>``,
computed in float64: in float32 the subtraction cancels catastrophically for nearby updates of
large norm (two updates at distance 1e-3 with norm 1e3 would come out as noise). Negative
round-off is clipped to zero and the diagonal set to exactly zero.
"""

from __future__ import annotations

import numpy as np

__all__ = ["cosine_similarities", "pairwise_sq_distances", "row_norms"]


def row_norms(updates: np.ndarray) -> np.ndarray:
    """L2 norm of every row, in float64."""
    squares = np.einsum("ij,ij->i", updates, updates, dtype=np.float64)
    norms: np.ndarray = np.sqrt(squares)
    return norms


def pairwise_sq_distances(updates: np.ndarray) -> np.ndarray:
    """``(n, n)`` float64 matrix of squared L2 distances between the rows of ``updates``."""
    x = updates.astype(np.float64, copy=False)
    gram = x @ x.T
    sq = np.diag(gram)
    dist = sq[:, None] + sq[None, :] - 2.0 * gram
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
