"""Bulyan: Krum selection followed by a coordinate-wise trimmed median (El Mhamdi et al. 2018)."""

from __future__ import annotations

import numpy as np

from fedfort.aggregation.base import AggregationResult, Aggregator, UpdateBatch, register
from fedfort.aggregation.distances import pairwise_sq_distances
from fedfort.aggregation.krum import check_num_byzantine, krum_scores
from fedfort.aggregation.median import coordinate_median
from fedfort.errors import AggregationError

__all__ = ["Bulyan"]


def bulyan_select(sq_dist: np.ndarray, f: int, theta: int) -> list[int]:
    """Indices of ``theta`` rows chosen one at a time by Krum on the rows not yet chosen.

    Each step scores the remaining ``r`` rows on the sub-matrix of the one full distance
    matrix, with Krum's ``r - f - 2`` neighbours (at least 1, at most ``r - 1``). Ties go to
    the lower index.
    """
    remaining = np.arange(sq_dist.shape[0])
    selected: list[int] = []
    for _ in range(theta):
        r = remaining.size
        neighbours = min(max(r - f - 2, 1), r - 1)
        if neighbours == 0:
            pick = 0
        else:
            pick = int(np.argmin(krum_scores(sq_dist[np.ix_(remaining, remaining)], neighbours)))
        selected.append(int(remaining[pick]))
        remaining = np.delete(remaining, pick)
    return selected


def closest_to_median_mean(updates: np.ndarray, beta: int) -> np.ndarray:
    """Per column, the mean of the ``beta`` values closest to the column's median (float32)."""
    deviation = np.abs(updates - coordinate_median(updates))
    closest = np.argpartition(deviation, beta - 1, axis=0)[:beta]
    values = np.take_along_axis(updates, closest, axis=0)
    mean: np.ndarray = values.mean(axis=0, dtype=np.float64).astype(np.float32)
    return mean


@register("bulyan", legacy=lambda d: {"num_byzantine": d["num_byzantine"]})
class Bulyan(Aggregator):
    """Bulyan (El Mhamdi et al., "The Hidden Vulnerability of Distributed Learning in
    Byzantium", ICML 2018).

    Defends against up to ``f = num_byzantine`` Byzantine clients, including attacks that hide
    inside Krum's tolerance by placing a large change in a single coordinate while staying
    close in L2 distance. First ``theta = n - 2f`` updates are selected by applying Krum
    repeatedly to the remaining ones; then, per coordinate, the ``beta = theta - 2f`` selected
    values closest to their median are averaged, which bounds every coordinate by honest
    values. Requires ``n >= 4f + 3``. Distances come from one Gram matrix
    (:func:`~fedfort.aggregation.distances.pairwise_sq_distances`) computed once per batch;
    ties in a Krum step go to the lower index.

    As in the paper, ``theta = n - 2f``: the last two Krum steps then run on ``2f + 2`` and
    ``2f + 1`` remaining updates, below Krum's own ``n > 2f + 2``, so colluding attackers that
    send identical updates can win one of those steps. The coordinate-wise step (which discards
    the ``2f`` values farthest from the median) is what bounds the result in that case.

    ``batch.weights`` is ignored on purpose: a robust rule counts each client once, so a client
    cannot buy influence by claiming many samples.
    """

    name = "bulyan"

    def __init__(self, num_byzantine: int) -> None:
        self.num_byzantine = check_num_byzantine(num_byzantine)

    def min_updates(self, num_byzantine: int = 0) -> int:
        """``n >= 4f + 3`` (El Mhamdi et al. 2018)."""
        return 4 * max(num_byzantine, self.num_byzantine) + 3

    def aggregate(self, batch: UpdateBatch) -> AggregationResult:
        f = self.num_byzantine
        n = batch.num_clients
        if n < 4 * f + 3:
            raise AggregationError(f"Bulyan needs n >= 4f + 3 updates (f={f}): got {n}")
        theta = n - 2 * f
        beta = theta - 2 * f
        chosen = bulyan_select(pairwise_sq_distances(batch.updates), f, theta)
        update = closest_to_median_mean(batch.updates[chosen], beta)
        ids = batch.client_ids
        return AggregationResult(update, {"selected": [ids[i] for i in chosen], "beta": beta})
