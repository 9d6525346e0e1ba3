"""How many updates an aggregation rule needs to be well defined.

Each rule states its own condition in :meth:`~fedfort.aggregation.Aggregator.min_updates`, next
to its code: Krum and Multi-Krum need ``n > 2f + 2`` (Blanchard et al. 2017), Bulyan
``n >= 4f + 3`` (El Mhamdi et al. 2018), the median and geometric median a strict honest
majority ``n >= 2f + 1``, and the trimmed mean ``n > 2f`` when it trims ``f`` per side.
Configurations are checked against them before a run starts.
"""

from __future__ import annotations

from fedfort.aggregation.registry import make_aggregator

__all__ = ["min_updates"]


def min_updates(name: str, num_byzantine: int) -> int:
    """The fewest updates a round must aggregate for rule ``name`` to be well defined."""
    rule = make_aggregator(name, num_byzantine=num_byzantine, server_update=lambda m: m)
    return rule.min_updates(num_byzantine)
