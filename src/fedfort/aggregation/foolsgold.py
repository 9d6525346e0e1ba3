"""FoolsGold: down-weight clients whose update histories look alike.

Fung, Yoon and Beschastnikh, "The Limitations of Federated Learning in Sybil Settings",
RAID 2020. Colluding attackers pursue one shared objective (a backdoor, a flipped label, one
crafted vector), so their *accumulated* updates point the same way far more than those of
honest clients with different data. FoolsGold keeps the sum of every client's past updates
and, each round:

1. computes the pairwise cosine similarities ``cs`` of the participants' histories;
2. *pardons* honest clients that merely resemble a Sybil: ``cs_ij *= v_i / v_j`` whenever
   ``v_i < v_j``, with ``v_i = max_j cs_ij``;
3. sets ``alpha_i = 1 - max_j cs_ij``, rescales to a maximum of 1, and applies the paper's
   logit ``alpha = ln(alpha / (1 - alpha)) + 0.5`` clipped to ``[0, 1]``;
4. returns the ``alpha``-weighted mean of the updates.

Sample counts are ignored (an attacker could inflate them). Histories cost ``O(d)`` memory
per client that has ever taken part; with ``sketch_dim`` they are kept as CountSketches of
that many buckets, which preserve inner products in expectation (Charikar et al. 2002).
:meth:`aggregate` does not change ``self``: the new histories are returned as state and
applied only if the round commits.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedfort.aggregation.base import AggregationResult, Aggregator, UpdateBatch, register
from fedfort.aggregation.distances import cosine_similarities
from fedfort.aggregation.history import CountSketch
from fedfort.errors import AggregationError, ConfigError

__all__ = ["FoolsGold", "foolsgold_weights"]


def foolsgold_weights(histories: np.ndarray) -> np.ndarray:
    """FoolsGold's per-client weights in ``[0, 1]`` from the ``(n, k)`` history matrix."""
    n = histories.shape[0]
    if n < 2:
        return np.ones(n)
    cs = cosine_similarities(histories).astype(np.float64) - np.eye(n)
    top = cs.max(axis=1)
    pardon = (top[:, None] < top[None, :]) & (top[None, :] > 0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        cs = np.where(pardon, cs * (top[:, None] / top[None, :]), cs)
    alpha = np.clip(1.0 - cs.max(axis=1), 0.0, 1.0)
    if alpha.max() <= 0:
        return np.zeros(n)
    alpha = alpha / alpha.max()
    alpha[alpha == 1.0] = 0.99
    with np.errstate(divide="ignore"):
        logit = np.log(alpha / (1.0 - alpha)) + 0.5
    logit[np.isinf(logit) & (logit > 0)] = 1.0
    weights: np.ndarray = np.clip(np.nan_to_num(logit, nan=0.0, neginf=0.0), 0.0, 1.0)
    return weights


@register("foolsgold", context=("seed",))
class FoolsGold(Aggregator):
    """Weighted mean with FoolsGold's similarity-based weights (see the module docstring)."""

    name = "foolsgold"

    def __init__(self, sketch_dim: int | None = None, seed: int = 0) -> None:
        if sketch_dim is not None and sketch_dim < 16:
            raise ConfigError(f"foolsgold sketch_dim must be >= 16 or unset, got {sketch_dim}")
        self.sketch_dim = sketch_dim
        self.seed = seed
        self._sketch: CountSketch | None = None
        self.histories: dict[str, np.ndarray] = {}

    def _compress(self, updates: np.ndarray) -> np.ndarray:
        if self.sketch_dim is None or self.sketch_dim >= updates.shape[1]:
            return updates.astype(np.float32, copy=False)
        if self._sketch is None or self._sketch.dim != updates.shape[1]:
            self._sketch = CountSketch(updates.shape[1], self.sketch_dim, seed=self.seed)
        return self._sketch(updates).astype(np.float32)

    def aggregate(self, batch: UpdateBatch) -> AggregationResult:
        current = self._compress(batch.updates)
        histories = current.copy()
        for i, cid in enumerate(batch.client_ids):
            past = self.histories.get(cid)
            if past is not None and past.shape == current[i].shape:
                histories[i] += past
        weights = foolsgold_weights(histories)
        total = float(weights.sum())
        if total <= 0:
            raise AggregationError("FoolsGold gave every update zero weight")
        update = (weights @ batch.updates.astype(np.float64)) / total
        state = dict(self.histories)
        state.update({cid: histories[i] for i, cid in enumerate(batch.client_ids)})
        diagnostics = {
            "weights": {
                c: round(float(w), 4) for c, w in zip(batch.client_ids, weights, strict=True)
            },
            "zero_weight": [c for c, w in zip(batch.client_ids, weights, strict=True) if w == 0],
        }
        return AggregationResult(update.astype(np.float32), diagnostics, {"histories": state})

    def state_dict(self) -> dict[str, Any]:
        return {"histories": dict(self.histories)} if self.histories else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.histories = {
            k: np.asarray(v, dtype=np.float32) for k, v in state.get("histories", {}).items()
        }
