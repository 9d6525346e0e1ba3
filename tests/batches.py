"""Update batches shared by the aggregator tests."""

from __future__ import annotations

import numpy as np

from fedfort.aggregation.base import UpdateBatch


def make_batch(rows: object, weights: object = None) -> UpdateBatch:
    updates = np.asarray(rows, dtype=np.float32)
    n = updates.shape[0]
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    return UpdateBatch(updates, w, tuple(f"c{i}" for i in range(n)))


def attacked_batch(seed: int = 0) -> tuple[UpdateBatch, np.ndarray]:
    """20 honest updates around ``mu`` and 4 attackers sending ``-10 * mu`` with big weights."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=50)
    honest = mu + 0.1 * rng.normal(size=(20, 50))
    attackers = np.tile(-10.0 * mu, (4, 1))
    weights = np.r_[np.full(20, 10.0), np.full(4, 1000.0)]
    return make_batch(np.vstack([honest, attackers]), weights), mu
