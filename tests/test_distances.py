"""Gram-matrix distances: float32 speed without float32 cancellation."""

from __future__ import annotations

import numpy as np

from fedfort.aggregation.distances import pairwise_sq_distances


def exact(x: np.ndarray) -> np.ndarray:
    diff = x.astype(np.float64)[:, None, :] - x.astype(np.float64)[None, :, :]
    return (diff**2).sum(axis=2)


def test_distances_match_float64_for_spread_updates() -> None:
    x = np.random.default_rng(0).normal(size=(12, 500)).astype(np.float32)
    np.testing.assert_allclose(pairwise_sq_distances(x), exact(x), rtol=1e-4)


def test_near_duplicates_on_a_large_shared_component_are_exact() -> None:
    rng = np.random.default_rng(1)
    shared = rng.normal(size=2000) * 1e3
    x = (shared + rng.normal(size=(8, 2000)) * 1e-3).astype(np.float32)
    x[3] = x[2]  # colluders sending the same update
    got = pairwise_sq_distances(x)
    want = exact(x)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)
    assert got[2, 3] == 0.0
    naive = x @ x.T
    sq = np.diag(naive)
    float32_gram = sq[:, None] + sq[None, :] - 2 * naive
    assert np.abs(float32_gram - want).max() > 100 * want.max()  # what the fix-up prevents
