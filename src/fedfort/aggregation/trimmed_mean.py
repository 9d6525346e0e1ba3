"""Coordinate-wise trimmed mean of the client updates (Yin et al., ICML 2018)."""

from __future__ import annotations

import math

import numpy as np

from fedfort.aggregation.base import AggregationResult, Aggregator, UpdateBatch, register
from fedfort.errors import AggregationError, ConfigError

__all__ = ["TrimmedMean", "coordinate_trimmed_mean"]


def coordinate_trimmed_mean(updates: np.ndarray, k: int) -> np.ndarray:
    """Per column of ``updates`` (``(n, d)``), drop the ``k`` largest and ``k`` smallest values
    and average the remaining ``n - 2k``; float32 of shape ``(d,)``. Requires ``n > 2k``.

    One ``np.sort`` along the client axis: on the machines measured it beats two
    single-index ``np.partition`` calls (0.35 s against 0.63 s for 100 x 1,000,000) because the
    sort is vectorised across columns. Sums are accumulated in float64. The input is not
    modified.
    """
    n = updates.shape[0]
    middle = updates if k == 0 else np.sort(updates, axis=0)[k : n - k]
    total = middle.sum(axis=0, dtype=np.float64)
    mean: np.ndarray = (total / (n - 2 * k)).astype(np.float32)
    return mean


@register(
    "trimmed_mean",
    legacy=lambda d: {"trim_ratio": d["trim_ratio"], "num_trimmed": d["num_byzantine"] or None},
)
class TrimmedMean(Aggregator):
    """Coordinate-wise trimmed mean (Yin et al., "Byzantine-Robust Distributed Learning:
    Towards Optimal Statistical Rates", ICML 2018).

    Defends against up to ``k`` Byzantine clients per side: in every coordinate the ``k``
    largest and ``k`` smallest values are discarded before averaging, so ``k`` arbitrary
    updates cannot push any coordinate outside the range of the honest values.
    ``k = num_trimmed`` if given (it takes precedence), else ``floor(trim_ratio * n)``. The batch
    must have ``n > 2k`` updates. With ``k = 0`` the rule is the plain unweighted mean.

    ``batch.weights`` is ignored on purpose: a robust rule counts each client once, so a client
    cannot buy influence by claiming many samples.
    """

    name = "trimmed_mean"

    def __init__(self, trim_ratio: float = 0.1, num_trimmed: int | None = None) -> None:
        if not 0.0 <= trim_ratio < 0.5:
            raise ConfigError(f"trim_ratio must be in [0, 0.5), got {trim_ratio}")
        if num_trimmed is not None and (
            isinstance(num_trimmed, bool) or not isinstance(num_trimmed, int) or num_trimmed < 0
        ):
            raise ConfigError(f"num_trimmed must be a non-negative integer, got {num_trimmed!r}")
        self.trim_ratio = float(trim_ratio)
        self.num_trimmed = num_trimmed

    def trimmed_per_side(self, n: int) -> int:
        """How many values are dropped at each end of every coordinate for ``n`` updates."""
        if self.num_trimmed is not None:
            return self.num_trimmed
        # The epsilon keeps e.g. 0.29 * 100 = 28.999999999999996 from flooring to 28.
        return math.floor(self.trim_ratio * n + 1e-9)

    def min_updates(self, num_byzantine: int = 0) -> int:
        """``n > 2k`` when ``k`` are trimmed per side (with ``k = 0`` it trims
        ``floor(trim_ratio * n) < n / 2`` per side, valid for every ``n``)."""
        return 2 * max(num_byzantine, self.num_trimmed or 0) + 1

    def aggregate(self, batch: UpdateBatch) -> AggregationResult:
        n = batch.num_clients
        k = self.trimmed_per_side(n)
        if n <= 2 * k:
            raise AggregationError(
                f"trimmed mean needs n > 2k updates (k={k} trimmed per side): got {n}"
            )
        update = coordinate_trimmed_mean(batch.updates, k)
        return AggregationResult(update, {"trimmed_per_side": k})
