"""Aggregation rules over the stacked ``(n_clients, d)`` update matrix.

Every rule is an :class:`Aggregator`; :func:`make_aggregator` builds one by name and
:func:`min_updates` states how many updates it needs for a tolerated ``f``.
"""

from fedfort.aggregation.base import (
    AGGREGATOR_REGISTRY,
    AggregationResult,
    Aggregator,
    UpdateBatch,
    register,
)
from fedfort.aggregation.bulyan import Bulyan
from fedfort.aggregation.centered_clipping import CenteredClipping
from fedfort.aggregation.flame import FLAME
from fedfort.aggregation.fltrust import FLTrust
from fedfort.aggregation.geometric_median import GeometricMedian
from fedfort.aggregation.krum import Krum, MultiKrum
from fedfort.aggregation.mean import WeightedMean
from fedfort.aggregation.median import CoordinateMedian
from fedfort.aggregation.norm_bound import NormBounding
from fedfort.aggregation.preconditions import min_updates
from fedfort.aggregation.registry import AGGREGATORS, make_aggregator
from fedfort.aggregation.trimmed_mean import TrimmedMean

__all__ = [
    "AGGREGATORS",
    "AGGREGATOR_REGISTRY",
    "FLAME",
    "AggregationResult",
    "Aggregator",
    "Bulyan",
    "CenteredClipping",
    "CoordinateMedian",
    "FLTrust",
    "GeometricMedian",
    "Krum",
    "MultiKrum",
    "NormBounding",
    "TrimmedMean",
    "UpdateBatch",
    "WeightedMean",
    "make_aggregator",
    "min_updates",
    "register",
]
