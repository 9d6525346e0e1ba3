"""Build an aggregation rule by name, and state how many updates each rule needs.

Names: ``fedavg``, ``median``, ``trimmed_mean``, ``krum``, ``multi_krum``, ``bulyan``,
``geometric_median``, ``centered_clipping``, ``fltrust``, ``flame``, ``foolsgold``. Any of them
can be wrapped in norm bounding with ``norm_bound`` and in a robust learning rate with
``robust_lr_threshold`` (outermost: the sign votes are counted on the unclipped updates).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import get_args

import numpy as np

from fedfort.aggregation.base import Aggregator
from fedfort.aggregation.bulyan import Bulyan
from fedfort.aggregation.centered_clipping import CenteredClipping
from fedfort.aggregation.flame import FLAME
from fedfort.aggregation.fltrust import FLTrust
from fedfort.aggregation.foolsgold import FoolsGold
from fedfort.aggregation.geometric_median import GeometricMedian
from fedfort.aggregation.krum import Krum, MultiKrum
from fedfort.aggregation.mean import WeightedMean
from fedfort.aggregation.median import CoordinateMedian
from fedfort.aggregation.norm_bound import NormBounding
from fedfort.aggregation.preconditions import AggregatorName
from fedfort.aggregation.robust_lr import RobustLearningRate
from fedfort.aggregation.trimmed_mean import TrimmedMean
from fedfort.errors import ConfigError

__all__ = ["AGGREGATORS", "make_aggregator"]

AGGREGATORS: tuple[str, ...] = get_args(AggregatorName)


def make_aggregator(
    name: str,
    *,
    num_byzantine: int = 0,
    trim_ratio: float = 0.1,
    norm_bound: float | None = None,
    robust_lr_threshold: int | None = None,
    centered_clipping_tau: float = 1.0,
    centered_clipping_iterations: int = 1,
    flame_noise: float = 0.001,
    server_update: Callable[[np.ndarray], np.ndarray] | None = None,
    seed: int = 0,
) -> Aggregator:
    """Build the rule ``name`` (optionally inside norm bounding)."""
    if num_byzantine < 0:
        raise ConfigError(f"num_byzantine must be >= 0, got {num_byzantine}")
    rule: Aggregator
    if name == "fedavg":
        rule = WeightedMean()
    elif name == "median":
        rule = CoordinateMedian()
    elif name == "trimmed_mean":
        k = num_byzantine if num_byzantine > 0 else None
        rule = TrimmedMean(trim_ratio=trim_ratio, num_trimmed=k)
    elif name == "krum":
        rule = Krum(num_byzantine)
    elif name == "multi_krum":
        rule = MultiKrum(num_byzantine)
    elif name == "bulyan":
        rule = Bulyan(num_byzantine)
    elif name == "geometric_median":
        rule = GeometricMedian()
    elif name == "centered_clipping":
        rule = CenteredClipping(centered_clipping_tau, centered_clipping_iterations)
    elif name == "fltrust":
        if server_update is None:
            raise ConfigError("FLTrust needs the server's root dataset (a server_update function)")
        rule = FLTrust(server_update)
    elif name == "flame":
        rule = FLAME(noise_multiplier=flame_noise, seed=seed)
    elif name == "foolsgold":
        rule = FoolsGold(seed=seed)
    else:
        close = [a for a in AGGREGATORS if a.startswith(name[:3])] if name else []
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown aggregator {name!r}{hint} Choose one of {AGGREGATORS}")
    if norm_bound is not None:
        if not norm_bound > 0 or not math.isfinite(norm_bound):
            raise ConfigError(f"norm_bound must be a positive number, got {norm_bound}")
        rule = NormBounding(rule, norm_bound)
    if robust_lr_threshold is not None:
        rule = RobustLearningRate(rule, robust_lr_threshold)
    return rule
