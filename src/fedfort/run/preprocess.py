"""Fitting the federation's feature transform from its clients' statistics.

``[data] standardize`` and ``[data] impute`` ask for one transform every client applies
(:class:`~fedfort.data.preprocessing.Preprocessing`). Before round 1 the server runs the
statistics round through the runtime (:func:`fedfort.server.statistics.collect_statistics`):
each client computes the :class:`~fedfort.data.preprocessing.FeatureStatistics` of the rows it
trains on (after its ``[edge]`` protection) and the server obtains their sum -- through a
secure-aggregation session when ``[secure_aggregation]`` is on, in the clear otherwise.

When the run is private (``[privacy] mode``), the statistics are released with the Gaussian
mechanism at the run's privacy unit: every value is clipped to the declared range
(``[data] value_bound``, or ``[edge.features]`` min/max) and rescaled to ``[-1, 1]``, each
client's rows are capped at ``[data] count_bound``, so one client moves the sum by at most
``count_bound * sqrt(3 d)`` (:func:`~fedfort.client.statistics.statistics_sensitivity`); the
noise is the run's multiplier ``z`` times that (central: the server's; distributed: one share
per client; local: each client's own, at the round's local multiplier) and the release is one
more Gaussian event in the run's privacy ledger (:func:`statistics_event`), which
calibration already counts.

:func:`fit_preprocessing` is the pooled reference: the same transform from every client's
rows summed in one place (tests compare the federated result with it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedfort.client.statistics import statistics_sensitivity
from fedfort.config import RunConfig
from fedfort.data.preprocessing import FeatureStatistics, Preprocessing
from fedfort.messages import FeatureTransform
from fedfort.privacy.accounting import PrivacyEvent
from fedfort.privacy.mechanisms import LocalGaussian
from fedfort.run.privacy import statistics_event
from fedfort.server.statistics import (
    CollectedStatistics,
    StatisticsSettings,
    collect_statistics,
)

__all__ = [
    "FittedTransform",
    "fit_preprocessing",
    "fit_transform",
    "needs_preprocessing",
    "statistics_plan",
    "transform_message",
]


def needs_preprocessing(config: RunConfig) -> bool:
    """Whether the run fits a federated transform before its first round."""
    return config.data.standardize or config.data.impute != "none"


def fit_preprocessing(config: RunConfig, client_features: Sequence[np.ndarray]) -> Preprocessing:
    """The transform from the clients' feature matrices pooled in one place (the reference
    the federated statistics round must match)."""
    total = FeatureStatistics.sum([FeatureStatistics.of(x) for x in client_features])
    return _from_statistics(config, total)


def _from_statistics(config: RunConfig, stats: FeatureStatistics) -> Preprocessing:
    return Preprocessing.from_statistics(
        stats, standardize=config.data.standardize, impute=config.data.impute == "mean"
    )


def transform_message(transform: Preprocessing) -> FeatureTransform:
    """The transform as the tasks carry it."""
    return FeatureTransform(transform.fill, transform.shift, transform.scale)


@dataclass(frozen=True)
class StatisticsPlan:
    """The statistics round of a run: how it is asked for, and its privacy release."""

    settings: StatisticsSettings
    event: PrivacyEvent | None = None
    sensitivity: float | None = None


def _bounds(config: RunConfig, d: int) -> tuple[np.ndarray, np.ndarray]:
    bound = config.data.value_bound
    if bound is not None:
        return np.full(d, -bound), np.full(d, bound)
    features = config.edge.features
    assert features.min is not None and features.max is not None  # checked by the config
    return np.full(d, float(features.min)), np.full(d, float(features.max))


def statistics_plan(config: RunConfig, num_features: int, num_clients: int) -> StatisticsPlan:
    """The statistics round ``config`` asks for (its settings and privacy event)."""
    sa, priv, d = config.secure_aggregation, config.privacy, num_features
    common: dict[str, Any] = {
        "run_id": config.identity_hash()[:32],
        "num_features": d,
        "mode": sa.mode if sa.enabled else None,
        "threshold": sa.threshold,
        "degree": sa.degree,
        "corrupt_fraction": sa.corrupt_fraction,
        "dropout_fraction": sa.dropout_fraction,
        "deadline_s": config.server.deadline_s,
        "step_deadline_s": sa.step_deadline_s,
        "max_attempts": config.server.max_attempts,
        "max_rows": config.server.max_sample_count,
    }
    if priv.mode == "none":
        return StatisticsPlan(StatisticsSettings(**common))
    lower, upper = _bounds(config, d)
    count = float(config.data.count_bound or 1)
    sensitivity = statistics_sensitivity(d, count)
    private: dict[str, Any] = {"lower": lower, "upper": upper, "max_count": count}
    if priv.mode == "local":
        z = LocalGaussian(priv.local_epsilon or 1.0, priv.local_delta, 1.0).noise_multiplier
        # each client's vector alone is private: the diameter of its range is 2 * sensitivity
        private["client_noise_std"] = z * 2.0 * sensitivity
    else:
        assert priv.noise_multiplier is not None  # calibrated() ran
        z = priv.noise_multiplier
        if priv.mode == "central":
            private["central_noise_std"] = z * sensitivity
        else:
            shares = min(priv.noise_shares or num_clients, num_clients)
            private["client_noise_std"] = z * sensitivity / math.sqrt(shares)
            private["shares"] = shares
    event = statistics_event(z)
    return StatisticsPlan(StatisticsSettings(**common, **private), event, sensitivity)


#: under DP, the smallest standard deviation a feature is given, as a share of its declared
#: half-range: a variance the noise drove to (or near) zero would otherwise blow the feature up
PRIVATE_STD_FLOOR = 0.05


def _denormalised(total: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> FeatureStatistics:
    """Statistics in the features' own units from noisy sums of values rescaled to [-1, 1].

    Post-processing of the release (no privacy cost): a count below 1 becomes 1, the mean is
    clipped into the range and the second moment into ``[mean**2 + floor**2, 1]`` with
    ``floor = PRIVATE_STD_FLOOR``, so noise can neither move a mean out of the declared range
    nor make a standard deviation smaller than 5% of the half-range (a transformed value in
    the range then stays within 40).
    """
    s = FeatureStatistics.from_vector(total)
    count = np.maximum(s.count, 1.0)
    mean = np.clip(s.total / count, -1.0, 1.0)
    second = np.clip(s.squares / count, mean**2 + PRIVATE_STD_FLOOR**2, 1.0 + PRIVATE_STD_FLOOR**2)
    mid, half = (upper + lower) / 2.0, (upper - lower) / 2.0
    mean_x = mid + half * mean
    var_x = half**2 * (second - mean**2)
    return FeatureStatistics(count, count * mean_x, count * (var_x + mean_x**2))


@dataclass(frozen=True)
class FittedTransform:
    """The fitted transform and what the run records of its statistics round."""

    transform: Preprocessing
    record: dict[str, Any]


def fit_transform(
    config: RunConfig,
    channel: object,
    client_ids: Sequence[str],
    directory: Callable[[], Mapping[str, bytes]],
    num_features: int,
) -> FittedTransform:
    """Run the statistics round through ``channel`` and fit the transform from its sum."""
    plan = statistics_plan(config, num_features, len(client_ids))
    settings = plan.settings
    collected: CollectedStatistics = collect_statistics(channel, client_ids, directory, settings)
    if settings.lower is not None and settings.upper is not None:
        stats = _denormalised(collected.total, settings.lower, settings.upper)
    else:
        stats = FeatureStatistics.from_vector(collected.total)
    transform = _from_statistics(config, stats)
    record: dict[str, Any] = {
        "transform": transform.to_dict(),
        "sha256": transform_message(transform).digest(),
        "secure_aggregation": settings.mode or "none",
        "clients": len(collected.included),
        "attempts": collected.attempts,
        "measurements": collected.measurements,
    }
    if plan.event is not None:
        record["privacy"] = {
            "event": plan.event.to_dict(),
            "sensitivity": plan.sensitivity,
            "value_range": [float(settings.lower.min()), float(settings.upper.max())]
            if settings.lower is not None and settings.upper is not None
            else None,
            "count_bound": settings.max_count,
        }
    return FittedTransform(transform, record)


def recorded_event(record: Mapping[str, Any]) -> PrivacyEvent | None:
    """The privacy event of a stored statistics record (``None`` for a non-private run)."""
    privacy = record.get("privacy")
    if not privacy:
        return None
    return PrivacyEvent.from_dict(dict(privacy["event"]))
