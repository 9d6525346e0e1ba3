"""Robust learning rate: reverse the step on coordinates the clients do not agree on.

Ozdayi, Kantarcioglu and Gel, "Defending against Backdoors in Federated Learning with Robust
Learning Rate", AAAI 2021. A backdoor lives in coordinates that only the attackers push; the
honest clients, who never see the trigger, do not push them consistently. For every
coordinate ``j`` the rule counts the sign votes ``s_j = |sum_i sign(x_ij)|``; where
``s_j < threshold`` the server's step is negated, so the aggregate moves *against* the
minority direction and a planted backdoor is unlearned instead of accumulated::

    update_j = inner_j            if |sum_i sign(x_ij)| >= threshold
             = -inner_j           otherwise

Votes are counted once per client (sample counts cannot buy votes), and magnitudes do not
count, so boosting an update buys no extra votes. The paper sets ``threshold`` above the
number of attackers; ``inner`` is the rule that produces the step (the mean in the paper).
One pass over the ``(n, d)`` matrix.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedfort.aggregation.base import AggregationResult, Aggregator, UpdateBatch, register
from fedfort.errors import ConfigError

__all__ = ["RobustLearningRate"]


@register("robust_lr")
class RobustLearningRate(Aggregator):
    """Negate ``inner``'s step wherever fewer than ``threshold`` net sign votes agree."""

    name = "robust_lr"
    wrapper = True

    def __init__(self, inner: Aggregator, threshold: int) -> None:
        if threshold < 1:
            raise ConfigError(f"robust_lr_threshold must be >= 1, got {threshold}")
        self.inner = inner
        self.threshold = threshold
        self.name = f"robust_lr({inner.name})"

    def min_updates(self, num_byzantine: int = 0) -> int:
        return self.inner.min_updates(num_byzantine)

    def aggregate(self, batch: UpdateBatch) -> AggregationResult:
        votes = np.abs(np.sign(batch.updates).sum(axis=0, dtype=np.int64))
        agree = votes >= self.threshold
        result = self.inner.aggregate(batch)
        update = np.where(agree, result.update, -result.update).astype(np.float32)
        diagnostics: dict[str, Any] = {
            "threshold": self.threshold,
            "reversed_share": round(float(1.0 - agree.mean()), 6),
            "inner": result.diagnostics,
        }
        return AggregationResult(update, diagnostics, result.state)

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state)
