"""Krum and Multi-Krum (Blanchard et al., NeurIPS 2017)."""

from __future__ import annotations

import numpy as np

from fedfort.aggregation.base import AggregationResult, Aggregator, UpdateBatch, register
from fedfort.aggregation.distances import pairwise_sq_distances
from fedfort.errors import AggregationError, ConfigError

__all__ = ["Krum", "MultiKrum", "check_num_byzantine", "krum_scores"]


def check_num_byzantine(num_byzantine: int) -> int:
    """Validate a constructor's ``num_byzantine`` (a non-negative int) or raise ConfigError."""
    if isinstance(num_byzantine, bool) or not isinstance(num_byzantine, int) or num_byzantine < 0:
        raise ConfigError(f"num_byzantine must be a non-negative integer, got {num_byzantine!r}")
    return num_byzantine


def krum_scores(sq_dist: np.ndarray, num_neighbours: int) -> np.ndarray:
    """Krum score of every row: the sum of its ``num_neighbours`` smallest squared distances to
    the *other* rows of the square matrix ``sq_dist`` (float64, shape ``(n,)``).

    One ``np.partition`` along the rows; ``sq_dist`` is not modified. Requires
    ``1 <= num_neighbours <= n - 1``.
    """
    dist = np.array(sq_dist, dtype=np.float64, copy=True)
    np.fill_diagonal(dist, np.inf)  # a row is not its own neighbour
    nearest = np.partition(dist, num_neighbours - 1, axis=1)[:, :num_neighbours]
    scores: np.ndarray = nearest.sum(axis=1)
    return scores


def _scored(batch: UpdateBatch, f: int, rule: str) -> np.ndarray:
    n = batch.num_clients
    if n <= 2 * f + 2:
        raise AggregationError(f"{rule} needs n > 2f + 2 updates (f={f}): got {n}")
    return krum_scores(pairwise_sq_distances(batch.updates), n - f - 2)


@register("krum", legacy=lambda d: {"num_byzantine": d["num_byzantine"]})
class Krum(Aggregator):
    """Krum (Blanchard et al., "Machine Learning with Adversaries: Byzantine Tolerant Gradient
    Descent", NeurIPS 2017).

    Defends against up to ``f = num_byzantine`` Byzantine clients sending arbitrary updates.
    Each update is scored by the sum of squared distances to its ``n - f - 2`` nearest other
    updates, and the single update with the lowest score is returned: an outlier, or a small
    group of colluding updates far from the honest ones, scores high and is never chosen.
    Requires ``n > 2f + 2``. Distances come from one Gram matrix
    (:func:`~fedfort.aggregation.distances.pairwise_sq_distances`); ties go to the lower index.

    ``batch.weights`` is ignored on purpose: a robust rule counts each client once, so a client
    cannot buy influence by claiming many samples.
    """

    name = "krum"

    def __init__(self, num_byzantine: int) -> None:
        self.num_byzantine = check_num_byzantine(num_byzantine)

    def min_updates(self, num_byzantine: int = 0) -> int:
        """``n > 2f + 2`` (Blanchard et al. 2017)."""
        return 2 * max(num_byzantine, self.num_byzantine) + 3

    def aggregate(self, batch: UpdateBatch) -> AggregationResult:
        scores = _scored(batch, self.num_byzantine, "Krum")
        best = int(np.argmin(scores))
        update = batch.updates[best].astype(np.float32, copy=True)
        ids = batch.client_ids
        return AggregationResult(
            update,
            {
                "selected": [ids[best]],
                "scores": {cid: float(s) for cid, s in zip(ids, scores, strict=True)},
            },
        )


@register("multi_krum", legacy=lambda d: {"num_byzantine": d["num_byzantine"]})
class MultiKrum(Aggregator):
    """Multi-Krum (Blanchard et al., "Machine Learning with Adversaries: Byzantine Tolerant
    Gradient Descent", NeurIPS 2017).

    Defends against up to ``f = num_byzantine`` Byzantine clients like :class:`Krum`, but
    averages the ``m = num_selected`` lowest-scored updates (default ``m = n - f``) instead of
    returning one, which keeps most of the variance reduction of averaging. Requires
    ``n > 2f + 2`` and ``m <= n - f``. Ties in the score go to the lower index.

    ``batch.weights`` is ignored on purpose (the selected updates are averaged unweighted): a
    robust rule counts each client once, so a client cannot buy influence by claiming many
    samples.
    """

    name = "multi_krum"

    def __init__(self, num_byzantine: int, num_selected: int | None = None) -> None:
        self.num_byzantine = check_num_byzantine(num_byzantine)
        if num_selected is not None and (
            isinstance(num_selected, bool) or not isinstance(num_selected, int) or num_selected < 1
        ):
            raise ConfigError(f"num_selected must be a positive integer, got {num_selected!r}")
        self.num_selected = num_selected

    def min_updates(self, num_byzantine: int = 0) -> int:
        """``n > 2f + 2`` (Blanchard et al. 2017)."""
        return 2 * max(num_byzantine, self.num_byzantine) + 3

    def aggregate(self, batch: UpdateBatch) -> AggregationResult:
        f = self.num_byzantine
        scores = _scored(batch, f, "Multi-Krum")
        n = batch.num_clients
        m = n - f if self.num_selected is None else self.num_selected
        if m > n - f:
            raise AggregationError(
                f"Multi-Krum can select at most n - f = {n - f} updates (f={f}): asked for {m}"
            )
        chosen = np.argsort(scores, kind="stable")[:m]
        share = np.zeros(n, dtype=np.float32)
        share[chosen] = 1.0 / m
        update = (share @ batch.updates).astype(np.float32, copy=False)  # one GEMV, no copy
        ids = batch.client_ids
        return AggregationResult(
            update,
            {
                "selected": [ids[i] for i in chosen],
                "scores": {cid: float(s) for cid, s in zip(ids, scores, strict=True)},
            },
        )
