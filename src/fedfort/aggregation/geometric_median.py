"""Robust federated aggregation (RFA): the weighted geometric median of the updates."""

from __future__ import annotations

import math

import numpy as np

from fedfort.aggregation.base import AggregationResult, Aggregator, UpdateBatch, register
from fedfort.aggregation.distances import row_norms
from fedfort.errors import AggregationError, ConfigError

__all__ = ["GeometricMedian"]


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    """The smallest value whose cumulative weight (in sorted order) reaches half the total."""
    order = np.argsort(values, kind="stable")
    cumulative = np.cumsum(weights[order])
    k = int(np.searchsorted(cumulative, 0.5 * cumulative[-1]))
    return float(values[order[min(k, len(order) - 1)]])


@register("geometric_median")
class GeometricMedian(Aggregator):
    """RFA: ``argmin_v sum_i alpha_i ||v - x_i||`` by the smoothed Weiszfeld algorithm.

    Defends against Byzantine (arbitrary) updates: unlike the mean, the geometric median has
    breakdown point 1/2, so attackers holding less than half of the total weight cannot drag
    it arbitrarily far, however large their updates. Pillutla, Kakade and Harchaoui, "Robust
    Aggregation for Federated Learning", IEEE Transactions on Signal Processing 70, 2022.

    As in RFA, the weights ``alpha_i`` are the clients' sample counts normalised to sum to 1,
    so the breakdown point is in terms of *weight*: sample counts are self-reported, and an
    attacker who claims a huge count buys influence. Verify or cap counts upstream (or give
    every client the same count) when that matters.

    Each iteration re-weights ``beta_i = alpha_i / max(smoothing, ||v - x_i||)`` and sets
    ``v = sum_i beta_i x_i / sum_i beta_i``, starting from the weighted mean; ``smoothing``
    (RFA's nu) keeps the step defined when ``v`` lands on an update. Iteration stops when a
    step moves ``v`` by at most ``tol`` times the weighted median of the distances from ``v``
    to the updates. (RFA's reference code stops on the objective's relative change instead,
    but the objective is dominated by far-away attackers: with 4 of 9 updates at 1e6 it stops
    about 45 units from honest updates of norm 1; the median distance is set by the honest
    majority.) Everything is computed in float64. Diagnostics: ``iterations``, ``converged``,
    ``objective`` (the weighted sum of distances) and ``weights``, each client's normalised
    final Weiszfeld weight ``beta_i``.
    """

    name = "geometric_median"

    def __init__(self, max_iter: int = 100, tol: float = 1e-6, smoothing: float = 1e-6) -> None:
        if max_iter < 1:
            raise ConfigError(f"max_iter must be >= 1, got {max_iter}")
        if not (math.isfinite(tol) and tol >= 0):
            raise ConfigError(f"tol must be a finite number >= 0, got {tol}")
        if not (math.isfinite(smoothing) and smoothing > 0):
            raise ConfigError(f"smoothing must be a finite number > 0, got {smoothing}")
        self.max_iter = max_iter
        self.tol = tol
        self.smoothing = smoothing

    def min_updates(self, num_byzantine: int = 0) -> int:
        """A strict honest majority: ``n >= 2f + 1``."""
        return 2 * num_byzantine + 1

    def aggregate(self, batch: UpdateBatch) -> AggregationResult:
        weights = batch.weights.astype(np.float64, copy=False)
        total = float(weights.sum())
        if not ((weights >= 0).all() and math.isfinite(total) and total > 0):
            raise AggregationError(
                "the geometric median needs finite, non-negative sample counts with a positive sum"
            )
        alpha = weights / total
        x = batch.updates.astype(np.float64, copy=False)
        median = alpha @ x
        dist = row_norms(x - median)
        beta = alpha
        converged = False
        iterations = 0
        while iterations < self.max_iter and not converged:
            iterations += 1
            beta = alpha / np.maximum(dist, self.smoothing)
            beta /= beta.sum()
            previous, median = median, beta @ x
            dist = row_norms(x - median)
            step = float(np.linalg.norm(median - previous))
            converged = step <= self.tol * _weighted_median(dist, alpha)
        diagnostics = {
            "iterations": iterations,
            "converged": converged,
            "objective": float(alpha @ dist),
            "weights": {cid: float(b) for cid, b in zip(batch.client_ids, beta, strict=True)},
        }
        return AggregationResult(median.astype(np.float32), diagnostics)
