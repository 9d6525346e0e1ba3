"""The aggregation interface: one batch of verified updates in, one vector out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from fedfort.errors import ConfigError
from fedfort.registry import Component, Registry

__all__ = ["AGGREGATOR_REGISTRY", "AggregationResult", "Aggregator", "UpdateBatch", "register"]


@dataclass(frozen=True)
class UpdateBatch:
    """Verified updates of one round, stacked: ``updates[i]`` came from ``client_ids[i]``.

    ``weights`` are the clients' sample counts (float64), used by weighted rules. ``model`` is
    the current global model (rules such as FLTrust compute a server update from it) and
    ``round`` the round number.
    """

    updates: np.ndarray
    weights: np.ndarray
    client_ids: tuple[str, ...]
    model: np.ndarray | None = None
    round: int = 0

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
    and flows unchanged into the round record under the aggregator's name. ``state`` is the
    rule's state after this round (e.g. centered clipping's center); the engine applies it with
    :meth:`Aggregator.load_state_dict` only if the round commits.
    """

    update: np.ndarray
    diagnostics: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] | None = None


class Aggregator(Component, ABC):
    """A rule that combines a batch of client updates into one update.

    The extension contract is this class: implement :meth:`aggregate` (and
    :meth:`state_dict` / :meth:`load_state_dict` for state across rounds), state the rule's
    precondition in :meth:`min_updates`, and register it with :func:`register` (or name it in
    a config by import path). Wrappers (:class:`~fedfort.aggregation.NormBounding`,
    :class:`~fedfort.aggregation.robust_lr.RobustLearningRate`) take any rule as ``inner``.
    """

    name: str = "aggregator"
    #: True only for the plain mean: secure aggregation or a DP sum computes it without
    #: reading a single update. Every other rule reads single updates and is refused there.
    sum_compatible: ClassVar[bool] = False
    #: True for rules that wrap another rule given as ``inner``
    wrapper: ClassVar[bool] = False

    def min_updates(self, num_byzantine: int = 0) -> int:
        """The fewest updates a round must hold for this rule to be well defined when the run
        tolerates ``num_byzantine`` Byzantine clients (the rule's own ``f`` when it has one)."""
        return 1

    @abstractmethod
    def aggregate(self, batch: UpdateBatch) -> AggregationResult:
        """Combine ``batch`` into one float32 vector of length ``batch.dim``.

        Raise :class:`~fedfort.errors.AggregationError` when the batch violates the rule's
        precondition; never modify ``batch``.
        """

    def state_dict(self) -> dict[str, Any]:
        """State carried across rounds (checkpointed); empty for stateless rules."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore state from :meth:`state_dict` or from a committed ``result.state``."""
        return None


#: every aggregation rule, fedfort's own and the user's, by name
AGGREGATOR_REGISTRY: Registry[Aggregator] = Registry("aggregator", Aggregator)
#: class decorator: ``@register("my_rule")`` (see :class:`fedfort.registry.Registry`)
register = AGGREGATOR_REGISTRY.register
