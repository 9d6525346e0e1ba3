"""Per-update anomaly scores on the stacked ``(n, d)`` update matrix.

Every component turns a raw statistic into a *robust z-score* across the round's updates,
``(s_i - median(s)) / max(1.4826 * MAD(s), floor)``, so components are comparable and a
handful of attackers cannot shift the reference (median and MAD have a 50% breakdown point).
The floor keeps a tightly clustered honest population from turning tiny differences into
huge scores.

- ``norm``: the log of the update's L2 norm, two-sided (boosted updates and free-riders that
  send almost nothing both stand out). On a log scale, honest clients whose updates are
  twice as long as the median (more local data, hence more local steps) stay unremarkable,
  while an update boosted five-fold does not.
- ``cosine``: cosine distance to the coordinate-wise median of the round (the robust consensus,
  Yin et al. 2018); one-sided: only updates pointing away from the consensus are suspicious.
- ``krum``: the Krum score (Blanchard et al. 2017), the summed squared distance to the
  ``n - f - 2`` nearest updates, on a log scale (half the log, i.e. a log distance) for the
  same reason; one-sided.
- ``history``: consistency with the client's own past. The update is compressed to a fixed
  seeded random projection (Johnson-Lindenstrauss sketch, 64 dimensions); the score is the
  two-sided z-score of ``log(norm / the client's running mean norm)``, and an update whose
  sketch repeats the client's previous one (cosine > 0.9999: a replayed stale update) gets the
  maximal score. Clients without history score 0.
"""

from __future__ import annotations

import numpy as np

from fedfort.aggregation import krum
from fedfort.aggregation.distances import pairwise_sq_distances, row_norms

__all__ = [
    "REPLAY_SCORE",
    "cosine_scores",
    "krum_scores",
    "norm_scores",
    "robust_z",
]

REPLAY_SCORE = 1e3
_MAD_TO_SIGMA = 1.4826
_LOG_FLOOR = float(np.log(1.05))  # scale floor on log scales: a 5% difference


def robust_z(values: np.ndarray, floor: float, two_sided: bool) -> np.ndarray:
    """Robust z-scores of ``values`` against their median and MAD (with a scale floor)."""
    med = np.median(values)
    mad = np.median(np.abs(values - med))
    z: np.ndarray = (values - med) / max(_MAD_TO_SIGMA * float(mad), floor)
    out: np.ndarray = np.abs(z) if two_sided else np.maximum(z, 0.0)
    return out


def norm_scores(updates: np.ndarray) -> np.ndarray:
    """Two-sided robust z-score of each update's log L2 norm (floor: a factor of 1.05)."""
    norms = np.maximum(row_norms(updates), 1e-30)
    return robust_z(np.log(norms), floor=_LOG_FLOOR, two_sided=True)


def cosine_scores(updates: np.ndarray) -> np.ndarray:
    """One-sided robust z-score of the cosine distance to the coordinate-wise median."""
    consensus = np.median(updates, axis=0).astype(np.float64)
    norms = row_norms(updates)
    c_norm = float(np.linalg.norm(consensus))
    if c_norm == 0.0:
        return np.zeros(updates.shape[0])
    cos = (updates @ consensus.astype(updates.dtype)).astype(np.float64)
    cos /= np.maximum(norms, 1e-12) * c_norm
    distance = 1.0 - np.clip(cos, -1.0, 1.0)
    return robust_z(distance, floor=0.05, two_sided=False)


def krum_scores(updates: np.ndarray, num_byzantine: int) -> np.ndarray:
    """One-sided robust z-score of the square root of each update's Krum score."""
    n = updates.shape[0]
    k = max(1, n - num_byzantine - 2)
    if n < 3:
        return np.zeros(n)
    raw = krum.krum_scores(pairwise_sq_distances(updates), min(k, n - 1))
    log_distance = 0.5 * np.log(np.maximum(raw, 1e-30))
    return robust_z(log_distance, floor=_LOG_FLOOR, two_sided=False)
