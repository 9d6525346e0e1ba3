"""Sample-weighted mean of updates: the FedAvg aggregation rule."""

from __future__ import annotations

import numpy as np

from fedfort.aggregation.base import AggregationResult, Aggregator, UpdateBatch, register
from fedfort.errors import AggregationError

__all__ = ["WeightedMean"]


@register("fedavg")
class WeightedMean(Aggregator):
    """FedAvg's aggregate: ``sum_i n_i * delta_i / sum_i n_i`` (McMahan et al., AISTATS 2017).

    Not robust: one client can move the result arbitrarily far. It is the baseline that the
    robust rules in this package are measured against. With ``weighted=False`` every client
    counts equally.
    """

    name = "fedavg"
    sum_compatible = True

    def __init__(self, weighted: bool = True) -> None:
        self.weighted = weighted

    def aggregate(self, batch: UpdateBatch) -> AggregationResult:
        if self.weighted:
            total = float(batch.weights.sum())
            if not total > 0:
                raise AggregationError("the updates' weights sum to zero")
            w = batch.weights / total
        else:
            w = np.full(batch.num_clients, 1.0 / batch.num_clients)
        update = (w.astype(np.float32) @ batch.updates).astype(np.float32, copy=False)
        return AggregationResult(update, {"weighted": self.weighted})
