"""Aggregation rules over the stacked ``(n_clients, d)`` update matrix.

Every rule is an :class:`Aggregator`; :func:`make_aggregator` builds one by name and
:func:`min_updates` states how many updates it needs for a tolerated ``f``.
"""

from typing import TYPE_CHECKING

from fedfort._lazy import lazy_exports

if TYPE_CHECKING:
    from fedfort.aggregation.base import AggregationResult, Aggregator, UpdateBatch
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
    from fedfort.aggregation.registry import (
        AGGREGATOR_REGISTRY,
        AGGREGATORS,
        make_aggregator,
        register,
    )
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

if not TYPE_CHECKING:  # type checkers see the imports above; typos stay errors
    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "AggregationResult": "fedfort.aggregation.base",
            "Aggregator": "fedfort.aggregation.base",
            "UpdateBatch": "fedfort.aggregation.base",
            "Bulyan": "fedfort.aggregation.bulyan",
            "CenteredClipping": "fedfort.aggregation.centered_clipping",
            "FLAME": "fedfort.aggregation.flame",
            "FLTrust": "fedfort.aggregation.fltrust",
            "GeometricMedian": "fedfort.aggregation.geometric_median",
            "Krum": "fedfort.aggregation.krum",
            "MultiKrum": "fedfort.aggregation.krum",
            "WeightedMean": "fedfort.aggregation.mean",
            "CoordinateMedian": "fedfort.aggregation.median",
            "NormBounding": "fedfort.aggregation.norm_bound",
            "min_updates": "fedfort.aggregation.preconditions",
            "AGGREGATORS": "fedfort.aggregation.registry",
            "make_aggregator": "fedfort.aggregation.registry",
            # the registry module imports every rule of fedfort's, so they are registered
            "AGGREGATOR_REGISTRY": "fedfort.aggregation.registry",
            "register": "fedfort.aggregation.registry",
            "TrimmedMean": "fedfort.aggregation.trimmed_mean",
        },
        globals(),
    )
