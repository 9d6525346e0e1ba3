"""The aggregation interface: one batch of verified updates in, one vector out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedfort.errors import ConfigError

__all__ = ["AggregationResult", "Aggregator", "UpdateBatch"]


@dataclass(frozen=True)
class UpdateBatch:
    """Verified updates of one round, stacked: ``updates[i]`` came from ``client_ids[i]``.

    ``weights`` are the clients' sample counts (float64), used by weighted rules.
    """

    updates: np.ndarray
    weights: np.ndarray
    client_ids: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.updates.ndim != 2:
            raise ConfigError(f"updates must be a (n, d) matrix, got shape {self.updates.shape}")
        n = self.updates.shape[0]
        if self.weights.shape != (n,) or len(self.client_ids) != n:
            raise ConfigError("updates, weights and client_ids must have the same length")
        if n == 0:
            raise ConfigError("cannot aggregate an empty batch")

    @property
    def num_clients(self) -> int:
        return int(self.updates.shape[0])

    @property
    def dim(self) -> int:
        return int(self.updates.shape[1])


@dataclass(frozen=True)
class AggregationResult:
    """The aggregate update and what the rule measured on the way.

    ``diagnostics`` is JSON-friendly (e.g. which clients were selected, trimmed or clipped)
    and flows unchanged into the round record under the aggregator's name.
    """

    update: np.ndarray
    diagnostics: dict[str, Any] = field(default_factory=dict)


class Aggregator(ABC):
    """A rule that combines a batch of client updates into one update."""

    name: str = "aggregator"

    @abstractmethod
    def aggregate(self, batch: UpdateBatch) -> AggregationResult:
        """Combine ``batch`` into one float32 vector of length ``batch.dim``."""
