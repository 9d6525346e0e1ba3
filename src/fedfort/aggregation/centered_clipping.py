"""Centered clipping: clip updates around the previous aggregate, then average."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fedfort.aggregation.base import AggregationResult, Aggregator, UpdateBatch, register
from fedfort.aggregation.norm_bound import clip_rows
from fedfort.errors import ConfigError

__all__ = ["CenteredClipping"]


@register(
    "centered_clipping",
    legacy=lambda d: {
        "tau": d["centered_clipping_tau"],
        "iterations": d["centered_clipping_iterations"],
    },
)
class CenteredClipping(Aggregator):
    """``v <- v + mean_i clip_tau(x_i - v)``, repeated ``iterations`` times per round.

    Defends against Byzantine updates, including attacks that exploit the per-round view of
    other robust rules (e.g. small consistent perturbations over many rounds): each client
    can move the aggregate by at most ``tau / n`` per iteration, and starting from the previous
    round's aggregate lets the rule use history. Karimireddy, He and Jaggi, "Learning from
    History for Byzantine Robust Optimization", ICML 2021 (the paper pairs it with worker
    momentum, which belongs to the clients).

    ``clip_tau(z) = z * min(1, tau / ||z||)``. The mean is unweighted, as in the paper: weights
    by self-reported sample counts would let an attacker buy influence past the clip. The
    starting point is the state key ``"center"`` (the previous committed aggregate); it is
    zero in the first round, after :meth:`load_state_dict` with an empty dict, or if its shape
    does not match the batch. :meth:`aggregate` does not change ``self``: it returns
    ``state={"center": aggregate}``, which the engine loads if the round commits. Computed in
    float64. Diagnostics: ``clipped``, the clients clipped in at least one iteration.
    """

    name = "centered_clipping"

    def __init__(self, tau: float, iterations: int = 1) -> None:
        if not (math.isfinite(tau) and tau > 0):
            raise ConfigError(f"tau must be a finite number > 0, got {tau}")
        if iterations < 1:
            raise ConfigError(f"iterations must be >= 1, got {iterations}")
        self.tau = float(tau)
        self.iterations = iterations
        self._center: np.ndarray | None = None

    def aggregate(self, batch: UpdateBatch) -> AggregationResult:
        x = batch.updates.astype(np.float64, copy=False)
        if self._center is not None and self._center.shape == (batch.dim,):
            v = self._center.astype(np.float64)
        else:
            v = np.zeros(batch.dim, dtype=np.float64)
        clipped = np.zeros(batch.num_clients, dtype=bool)
        for _ in range(self.iterations):
            steps, over = clip_rows(x - v, self.tau)
            v = v + steps.mean(axis=0)
            clipped |= over
        update = v.astype(np.float32)
        diagnostics = {
            "tau": self.tau,
            "clipped": [cid for cid, c in zip(batch.client_ids, clipped, strict=True) if c],
        }
        return AggregationResult(update, diagnostics, {"center": update.copy()})

    def state_dict(self) -> dict[str, Any]:
        return {} if self._center is None else {"center": self._center.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        center = state.get("center")
        self._center = None if center is None else np.array(center, dtype=np.float32)
