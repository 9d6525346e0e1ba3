"""Norm bounding: scale every update down to a maximum L2 norm before another rule runs."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from fedfort.aggregation.base import AggregationResult, Aggregator, UpdateBatch, register
from fedfort.aggregation.distances import row_norms
from fedfort.errors import ConfigError

__all__ = ["NormBounding", "clip_rows"]


def clip_rows(updates: np.ndarray, max_norm: float) -> tuple[np.ndarray, np.ndarray]:
    """Scale each row with L2 norm above ``max_norm`` onto the ball of radius ``max_norm``.

    Returns the clipped rows in float64 and the boolean mask of rows that were scaled. Rows
    within the ball are returned unchanged (multiplied by exactly 1).
    """
    x = updates.astype(np.float64, copy=False)
    norms = row_norms(x)
    over = norms > max_norm
    scale = np.divide(max_norm, norms, out=np.ones_like(norms), where=over)
    clipped: np.ndarray = x * scale[:, None]
    return clipped, over


@register("norm_bound")
class NormBounding(Aggregator):
    """Bound every update's L2 norm by ``max_norm``, then apply ``inner``.

    Defends against boosted (model-replacement) updates: a backdoor attacker who scales its
    update by the number of clients to overwrite the global model. Sun, Kairouz, Suresh and
    McMahan, "Can You Really Backdoor Federated Learning?" (2019) show that norm bounding
    alone removes most of the effect of such boosting. It does not stop attackers that stay
    within the bound; combine it with a robust ``inner`` rule for that.

    Rows over the bound are scaled by ``max_norm / norm`` in float64 and cast back to the
    input dtype, so a clipped float32 row may exceed ``max_norm`` by one rounding step. The
    inner rule sees a new :class:`UpdateBatch`; the input batch is never modified. State is
    the inner rule's state.
    """

    name = "norm_bound"
    wrapper = True

    def __init__(self, inner: Aggregator, max_norm: float) -> None:
        if not (math.isfinite(max_norm) and max_norm > 0):
            raise ConfigError(f"max_norm must be a finite number > 0, got {max_norm}")
        self.inner = inner
        self.max_norm = float(max_norm)
        self.name = f"norm_bound({inner.name})"

    def min_updates(self, num_byzantine: int = 0) -> int:
        return self.inner.min_updates(num_byzantine)

    def aggregate(self, batch: UpdateBatch) -> AggregationResult:
        clipped, over = clip_rows(batch.updates, self.max_norm)
        bounded = dataclasses.replace(batch, updates=clipped.astype(batch.updates.dtype))
        result = self.inner.aggregate(bounded)
        diagnostics: dict[str, Any] = {
            "max_norm": self.max_norm,
            "clipped": [cid for cid, c in zip(batch.client_ids, over, strict=True) if c],
            "inner": result.diagnostics,
        }
        update = result.update.astype(np.float32, copy=False)
        return AggregationResult(update, diagnostics, result.state)

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state)
