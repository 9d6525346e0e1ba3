"""How many updates each aggregation rule needs to be well defined.

These are the papers' conditions on ``n`` for a tolerated number ``f`` of Byzantine updates:
Krum and Multi-Krum need ``n > 2f + 2`` (Blanchard et al. 2017), Bulyan ``n >= 4f + 3``
(El Mhamdi et al. 2018), the median and geometric median a strict honest majority
``n >= 2f + 1``, and the trimmed mean ``n > 2f`` when it trims ``f`` per side. Configurations
are checked against them before a run starts.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["AggregatorName", "min_updates"]

AggregatorName = Literal[
    "fedavg",
    "median",
    "trimmed_mean",
    "krum",
    "multi_krum",
    "bulyan",
    "geometric_median",
    "centered_clipping",
    "fltrust",
    "flame",
    "foolsgold",
]


def min_updates(name: str, num_byzantine: int) -> int:
    """The fewest updates a round must aggregate for rule ``name`` to be well defined."""
    f = num_byzantine
    if name in ("krum", "multi_krum"):
        return 2 * f + 3
    if name == "bulyan":
        return 4 * f + 3
    if name in ("median", "geometric_median"):
        return 2 * f + 1
    if name == "trimmed_mean":
        # with f = 0 it trims floor(trim_ratio * n) < n / 2 per side, valid for every n
        return 2 * f + 1
    return 1
