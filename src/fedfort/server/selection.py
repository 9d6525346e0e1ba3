"""Client selection: which clients train in a round.

:class:`SelectClients` samples ``max(min_clients, ceil(fraction * n))`` clients without
replacement from the engine's seeded generator. A :class:`SelectionPolicy` can weight the
draw or exclude clients (weight 0); reputation-weighted selection and quarantine plug in here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from fedfort.errors import ConfigError
from fedfort.measurements import SelectionMeasurement
from fedfort.server.engine import RoundContext, Stage

__all__ = ["SelectClients", "SelectionPolicy", "UniformSelection"]


class SelectionPolicy(Protocol):
    """Non-negative selection weights for the candidate clients of a round."""

    def weights(self, client_ids: Sequence[str], round_: int) -> np.ndarray:
        """One weight per client; 0 excludes the client from this round."""
        ...


class UniformSelection:
    """Every client equally likely."""

    def weights(self, client_ids: Sequence[str], round_: int) -> np.ndarray:
        return np.ones(len(client_ids), dtype=np.float64)


class SelectClients(Stage):
    """Seeded sampling of the round's participants."""

    name = "select"

    def __init__(
        self,
        fraction: float = 1.0,
        min_clients: int = 1,
        policy: SelectionPolicy | None = None,
    ) -> None:
        if not 0.0 < fraction <= 1.0:
            raise ConfigError(f"selection fraction must be in (0, 1], got {fraction}")
        if min_clients < 1:
            raise ConfigError(f"min_clients must be >= 1, got {min_clients}")
        self.fraction = fraction
        self.min_clients = min_clients
        self.policy: SelectionPolicy = policy or UniformSelection()

    def sample_size(self, num_clients: int) -> int:
        return min(num_clients, max(self.min_clients, math.ceil(self.fraction * num_clients)))

    def run(self, ctx: RoundContext) -> None:
        ids = ctx.client_ids
        weights = np.asarray(self.policy.weights(ids, ctx.round), dtype=np.float64)
        if weights.shape != (len(ids),) or not np.all(np.isfinite(weights)) or weights.min() < 0:
            raise ConfigError("a selection policy must return one finite weight >= 0 per client")
        eligible = int(np.count_nonzero(weights))
        k = min(self.sample_size(len(ids)), eligible)
        if k == 0:
            ctx.discard("no client is eligible for selection")
            return
        chosen = ctx.rng.choice(len(ids), size=k, replace=False, p=weights / weights.sum())
        ctx.selected = [ids[i] for i in np.sort(chosen)]
        ctx.measure(SelectionMeasurement(selected=k, eligible=eligible))
