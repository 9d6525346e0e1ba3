"""Aggregation rules over the stacked ``(n_clients, d)`` update matrix."""

from fedfort.aggregation.base import AggregationResult, Aggregator, UpdateBatch
from fedfort.aggregation.mean import WeightedMean

__all__ = ["AggregationResult", "Aggregator", "UpdateBatch", "WeightedMean"]
