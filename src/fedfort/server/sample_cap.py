"""The sample-count cap: a client's self-reported ``num_samples`` is an attack surface.

FedAvg weighs client ``i``'s update by its sample count ``n_i`` (McMahan et al., AISTATS 2017),
and the server cannot see the data behind ``n_i``: one client that reports ``2**62`` receives
all of the aggregate's weight and sets the global model alone, whatever the other clients
sent. :class:`CapSampleCounts` runs after verification and bounds each client's count by

1. its *declared* count, when the federation has one: the size of the partition the
   simulation gave the client, or the count the operator recorded for it in
   ``server.declared_sample_counts`` when it joined. A client then weighs at most what it
   declared, so inflating its count gains it nothing;
2. otherwise ``ratio`` times the round's *lower median* count (``server.sample_count_ratio``,
   2 by default), a bound that needs no declaration. The lower median (the ``ceil(n/2)``-th
   smallest count) is an honest client's count whenever fewer than half of the round's
   clients lie: inflating a count cannot raise it and deflating one cannot push it below the
   smallest honest count. ``m`` liars among ``n`` clients of similar size then get at most
   ``m * ratio / (m * ratio + n - m)`` of the weight instead of all of it, and an honest
   client with more than ``ratio`` times the median's data is capped too;
3. always ``max_count`` (``server.max_sample_count``, unset by default), an absolute bound.

Each capped client is counted in the round record under ``sample_cap``, with the count it
claimed and the one it was given. Counts are capped in the accepted updates themselves, so
every later stage (aggregation, detection, the weighted ``train_loss``) uses the capped value.

Secure aggregation hides counts from the server, so this stage does not run there: each client
clamps its own weight at ``secure_aggregation.max_weight`` (lowered to
``server.max_sample_count`` when that is smaller), which the server cannot check.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

from fedfort.errors import ConfigError
from fedfort.measurements import SampleCapMeasurement
from fedfort.messages import ClientUpdate
from fedfort.server.engine import RoundContext, Stage

__all__ = ["CapSampleCounts", "relative_cap"]


def relative_cap(counts: Sequence[int], ratio: float) -> int:
    """``ratio`` times the lower median of ``counts`` (rounded down, at least 1)."""
    if not counts:
        raise ConfigError("the relative sample-count cap needs at least one count")
    lower_median = sorted(counts)[(len(counts) - 1) // 2]
    return max(1, math.floor(ratio * lower_median))


def _bounded(count: int, limit: int | None) -> int:
    return count if limit is None else min(count, limit)


class CapSampleCounts(Stage):
    """Bound each accepted update's ``num_samples`` (see the module docstring).

    ``declared`` maps client ids to their declared counts; ``ratio`` bounds the others relative
    to the round's lower median (``None``: no relative bound); ``max_count`` bounds everyone.
    """

    name = "sample_cap"

    def __init__(
        self,
        declared: Mapping[str, int] | None = None,
        *,
        max_count: int | None = None,
        ratio: float | None = 2.0,
    ) -> None:
        declared = dict(declared or {})
        bad = {cid: n for cid, n in declared.items() if isinstance(n, bool) or int(n) != n or n < 1}
        if bad:
            raise ConfigError(f"declared sample counts must be positive integers, got {bad}")
        if max_count is not None and max_count < 1:
            raise ConfigError(f"max_sample_count must be >= 1 or unset, got {max_count}")
        if ratio is not None and not ratio >= 1:
            raise ConfigError(f"sample_count_ratio must be >= 1 or unset, got {ratio}")
        self.declared = {cid: int(n) for cid, n in declared.items()}
        self.max_count = max_count
        self.ratio = ratio

    def limits(self, updates: Sequence[ClientUpdate]) -> dict[str, int | None]:
        """Each update's largest allowed count (``None``: unbounded)."""
        limits: dict[str, int | None] = {}
        for u in updates:
            limit = self.declared.get(u.client_id)
            if self.max_count is not None:
                limit = self.max_count if limit is None else min(limit, self.max_count)
            limits[u.client_id] = limit
        undeclared = [u for u in updates if u.client_id not in self.declared]
        if self.ratio is not None and undeclared:
            counts = [_bounded(int(u.num_samples), limits[u.client_id]) for u in updates]
            bound = relative_cap(counts, self.ratio)
            for u in undeclared:
                current = limits[u.client_id]
                limits[u.client_id] = bound if current is None else min(current, bound)
        return limits

    def run(self, ctx: RoundContext) -> None:
        if not ctx.accepted:
            return
        limits = self.limits(ctx.accepted)
        claimed: dict[str, int] = {}
        given: dict[str, int] = {}
        kept: list[ClientUpdate] = []
        for update in ctx.accepted:
            limit = limits[update.client_id]
            if limit is not None and update.num_samples > limit:
                claimed[update.client_id] = int(update.num_samples)
                given[update.client_id] = limit
                update = dataclasses.replace(update, num_samples=limit)
            kept.append(update)
        ctx.accepted = kept
        ctx.measure(SampleCapMeasurement(capped=len(claimed), claimed=claimed, given=given))
