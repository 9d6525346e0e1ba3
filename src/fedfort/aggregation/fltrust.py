"""FLTrust: weight client updates by their agreement with the server's own update."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from fedfort.aggregation.base import AggregationResult, Aggregator, UpdateBatch, register
from fedfort.aggregation.distances import row_norms
from fedfort.errors import AggregationError

__all__ = ["FLTrust"]


@register("fltrust", context=("server_update",))
class FLTrust(Aggregator):
    """Trust-weighted mean of client updates rescaled to the server update's norm.

    Defends against Byzantine updates, even from a majority of clients, by bootstrapping trust
    from a small clean root dataset held by the server. Cao, Fang, Liu and Gong, "FLTrust:
    Byzantine-robust Federated Learning via Trust Bootstrapping", NDSS 2021.

    ``server_update(model)`` returns the server's update ``g_0`` trained on the root dataset
    from the current global model (``batch.model``; it receives a copy). Each client gets trust
    ``TS_i = ReLU(cos(g_i, g_0))``, its update is rescaled to ``||g_0||`` (which caps
    magnitude attacks), and the aggregate is ``sum_i TS_i * g_i * ||g_0|| / ||g_i|| / sum_i
    TS_i``; it is zero if every trust score is zero (including a zero ``g_0``). Sample counts
    are not used, as in the paper. An all-zero client update gets trust 0. Computed in float64.
    The defence is only as good as the root dataset: it must be clean and representative.
    Diagnostics: ``trust`` ({client_id: score}) and ``server_update_norm``.
    """

    name = "fltrust"

    def __init__(self, server_update: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        #: a federation supplies it from its root dataset when the rule is built for a run
        self.server_update = server_update

    def aggregate(self, batch: UpdateBatch) -> AggregationResult:
        if self.server_update is None:
            raise AggregationError(
                "FLTrust needs the server's root dataset: run it in a federation (which "
                "supplies the server update) or pass server_update"
            )
        if batch.model is None:
            raise AggregationError("FLTrust needs the current global model to compute g_0")
        g0 = np.asarray(self.server_update(batch.model.copy()), dtype=np.float64)
        if g0.shape != (batch.dim,) or not np.isfinite(g0).all():
            raise AggregationError(
                f"the server update must be a finite vector of shape ({batch.dim},), got "
                f"shape {g0.shape} (finite: {bool(np.isfinite(g0).all())})"
            )
        x = batch.updates.astype(np.float64, copy=False)
        g0_norm = float(np.linalg.norm(g0))
        norms = row_norms(x)
        usable = (norms > 0) & (g0_norm > 0)
        safe = np.where(usable, norms, 1.0)
        cosines = np.where(usable, (x @ g0) / (safe * (g0_norm if g0_norm > 0 else 1.0)), 0.0)
        trust = np.clip(cosines, 0.0, 1.0)
        total = float(trust.sum())
        if total > 0:
            coef = trust * (g0_norm / safe) / total
            update = (coef @ x).astype(np.float32)
        else:
            update = np.zeros(batch.dim, dtype=np.float32)
        diagnostics = {
            "server_update_norm": g0_norm,
            "trust": {cid: float(t) for cid, t in zip(batch.client_ids, trust, strict=True)},
        }
        return AggregationResult(update, diagnostics)
