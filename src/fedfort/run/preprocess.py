"""Fitting the federation's feature transform from its clients' statistics.

``[data] standardize`` and ``[data] impute`` ask for one transform every client applies
(:class:`~fedfort.data.preprocessing.Preprocessing`). It is fitted from the sum of the
clients' :class:`~fedfort.data.preprocessing.FeatureStatistics`, computed over the rows each
client trains on (after its ``[edge]`` protection), before the first round.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedfort.config import RunConfig
from fedfort.data.preprocessing import FeatureStatistics, Preprocessing

__all__ = ["fit_preprocessing", "needs_preprocessing"]


def needs_preprocessing(config: RunConfig) -> bool:
    """Whether the run fits a federated transform before its first round."""
    return config.data.standardize or config.data.impute != "none"


def fit_preprocessing(config: RunConfig, client_features: Sequence[np.ndarray]) -> Preprocessing:
    """The transform from the clients' feature matrices, each summarised where it lives."""
    total = FeatureStatistics.sum([FeatureStatistics.of(x) for x in client_features])
    return Preprocessing.from_statistics(
        total, standardize=config.data.standardize, impute=config.data.impute == "mean"
    )
