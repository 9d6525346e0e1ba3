"""A user's own aggregation rule and attack, defined outside fedfort.

Run them from a config by import path (``examples/plugins/plugin-run.toml``, with this folder
on ``PYTHONPATH``) or from Python as objects; docs/extending.md walks through both.
"""

from __future__ import annotations

import numpy as np

from fedfort.aggregation import AggregationResult, Aggregator, UpdateBatch
from fedfort.attacks import Attack, AttackView
from fedfort.errors import AggregationError, ConfigError


class MedianOfMeans(Aggregator):
    """Coordinate-wise median of the means of ``groups`` groups of updates.

    Median-of-means (Nemirovski and Yudin 1983; for Byzantine-robust learning, Chen, Su and Xu,
    "Distributed Statistical Machine Learning in Adversarial Settings", 2017): one outlier can
    spoil only the mean of its own group, and the median ignores a minority of spoiled groups.
    Groups are taken in client-id order, so the result does not depend on arrival order.
    """

    name = "median_of_means"

    def __init__(self, groups: int = 3) -> None:
        if groups < 1:
            raise ConfigError(f"groups must be >= 1, got {groups}")
        self.groups = groups

    def min_updates(self, num_byzantine: int = 0) -> int:
        return max(self.groups, 2 * num_byzantine + 1)

    def aggregate(self, batch: UpdateBatch) -> AggregationResult:
        if batch.num_clients < self.groups:
            raise AggregationError(
                f"median of means needs at least {self.groups} updates, got {batch.num_clients}"
            )
        order = np.argsort(np.asarray(batch.client_ids))
        parts = np.array_split(batch.updates[order].astype(np.float64), self.groups)
        means = np.stack([p.mean(axis=0) for p in parts])
        update = np.median(means, axis=0).astype(np.float32)
        return AggregationResult(update, {"groups": self.groups})


class ConstantShift(Attack):
    """Every malicious client sends a constant vector of value ``shift`` in every coordinate."""

    name = "constant_shift"

    def __init__(self, shift: float = 1.0) -> None:
        self.shift = shift

    def craft(self, view: AttackView) -> np.ndarray:
        return np.full_like(view.own, np.float32(self.shift))
