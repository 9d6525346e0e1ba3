"""Federated feature scaling and imputation: one transform from every client's sums.

A hospital standardising its own columns with its own mean and variance would train on
features scaled differently from every other hospital's. ``[data] standardize = true``
instead computes each feature's *global* mean and variance from the clients' per-feature
counts, sums and sums of squares (:class:`FeatureStatistics`), which add up across clients, so
the server needs only their sum, never one client's statistics in the clear (they can be
secure-aggregated like an update), and every client then applies the same
:class:`Preprocessing`. ``[data] impute = "mean"`` fills missing values with the same global
means. With pooled data the result equals the pooled statistics to float tolerance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedfort.errors import DatasetError

__all__ = ["FeatureStatistics", "Preprocessing"]

#: a feature whose global variance is below this is centred but not scaled
MIN_VARIANCE = 1e-12


@dataclass(frozen=True)
class FeatureStatistics:
    """Per-feature sums one client contributes: non-missing counts, sums, sums of squares.

    They are additive: the federation's statistics are the sum over clients. As one flat
    float64 vector (:meth:`vector`, ``3 * d`` values) they go through secure aggregation like
    a model update.
    """

    count: np.ndarray
    total: np.ndarray
    squares: np.ndarray

    @classmethod
    def of(cls, x: np.ndarray) -> FeatureStatistics:
        """The statistics of the rows of ``x`` (NaN marks a missing value)."""
        values = np.asarray(x, dtype=np.float64)
        present = ~np.isnan(values)
        filled = np.where(present, values, 0.0)
        return cls(
            present.sum(axis=0).astype(np.float64), filled.sum(axis=0), (filled**2).sum(axis=0)
        )

    @property
    def num_features(self) -> int:
        return int(self.count.shape[0])

    def vector(self) -> np.ndarray:
        return np.concatenate([self.count, self.total, self.squares])

    @classmethod
    def from_vector(cls, vector: np.ndarray) -> FeatureStatistics:
        v = np.asarray(vector, dtype=np.float64)
        if v.ndim != 1 or v.shape[0] % 3 or v.shape[0] == 0:
            raise DatasetError(f"feature statistics need 3 * d values, got shape {v.shape}")
        d = v.shape[0] // 3
        return cls(v[:d].copy(), v[d : 2 * d].copy(), v[2 * d :].copy())

    @classmethod
    def sum(cls, parts: Sequence[FeatureStatistics]) -> FeatureStatistics:
        if not parts:
            raise DatasetError("no client statistics to combine")
        return cls.from_vector(np.sum([p.vector() for p in parts], axis=0))


@dataclass(frozen=True)
class Preprocessing:
    """The transform every client applies: fill missing values, then centre and scale.

    ``fill`` replaces a missing value of feature ``j`` (``NaN`` when imputation is off, which
    leaves it missing); ``(x - shift) / scale`` follows (``shift = 0``, ``scale = 1`` when
    standardisation is off).
    """

    fill: np.ndarray
    shift: np.ndarray
    scale: np.ndarray

    @classmethod
    def from_statistics(
        cls, stats: FeatureStatistics, *, standardize: bool, impute: bool
    ) -> Preprocessing:
        """The transform from the federation's summed statistics.

        The variance is the population variance ``E[x^2] - E[x]^2`` (clamped at 0: noisy
        sums may dip below). A feature no client has a value for cannot be imputed.
        """
        count = np.asarray(stats.count, dtype=np.float64)
        if np.any(count < 1):
            empty = np.flatnonzero(count < 1).tolist()
            raise DatasetError(
                f"features at positions {empty[:8]} have no values at any client: drop them"
            )
        mean = stats.total / count
        variance = np.maximum(stats.squares / count - mean**2, 0.0)
        d = mean.shape[0]
        fill = mean if impute else np.full(d, np.nan)
        shift = mean if standardize else np.zeros(d)
        scale = (
            np.where(variance > MIN_VARIANCE, np.sqrt(variance), 1.0) if standardize else np.ones(d)
        )
        return cls(fill, shift, scale)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """``x`` transformed (a float32 copy)."""
        values = np.asarray(x, dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != self.fill.shape[0]:
            raise DatasetError(
                f"preprocessing is for {self.fill.shape[0]} features, the data has shape "
                f"{values.shape}"
            )
        filled = np.where(np.isnan(values), self.fill[None, :], values)
        out: np.ndarray = ((filled - self.shift) / self.scale).astype(np.float32)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "fill": [None if np.isnan(v) else float(v) for v in self.fill.tolist()],
            "shift": self.shift.tolist(),
            "scale": self.scale.tolist(),
        }

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> Preprocessing:
        fill = np.array([np.nan if v is None else float(v) for v in body["fill"]], dtype=np.float64)
        shift = np.asarray(body["shift"], dtype=np.float64)
        scale = np.asarray(body["scale"], dtype=np.float64)
        if not (fill.shape == shift.shape == scale.shape) or fill.ndim != 1:
            raise DatasetError(
                "a preprocessing transform needs fill, shift and scale of one length"
            )
        if not (np.all(np.isfinite(shift)) and np.all(np.isfinite(scale)) and np.all(scale > 0)):
            raise DatasetError("a preprocessing transform needs finite shifts and positive scales")
        return cls(fill, shift, scale)
