"""Components a user writes outside fedfort, for tests/test_open_core_attacks.py.

Each class is defined at module level (a run names it by import path
``"user_components:Name"``) and is not registered, as a user's plugin would be.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import nn

from fedfort.aggregation import AggregationResult, Aggregator, UpdateBatch
from fedfort.attacks import Attack, AttackView
from fedfort.run.features import Feature, Pipeline, RunParts
from fedfort.server import RoundContext, Stage


class AppendingRule(Aggregator):
    """A rule whose constructor appends to the list it is given and keeps a derived value
    under another name: the run must record the arguments it was called with."""

    name = "appending_rule"

    def __init__(self, weights: list[float] | None = None, k: int = 2) -> None:
        self.weights = weights if weights is not None else []
        self.weights.append(1.0)
        self.twice_k = 2 * k

    def aggregate(self, batch: UpdateBatch) -> AggregationResult:
        return AggregationResult(batch.updates.mean(axis=0).astype(np.float32), {})


class NestedOnlyRule(Aggregator):
    """A rule only ever used inside a wrapper (never registered nor named on its own)."""

    name = "nested_only"

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale

    def aggregate(self, batch: UpdateBatch) -> AggregationResult:
        update = batch.updates.mean(axis=0) * np.float32(self.scale)
        return AggregationResult(update.astype(np.float32), {})


class FixedOutput(Aggregator):
    """A rule that ignores the updates and returns a constant vector: ``nan``, ``inf``,
    ``zero``, or one of the wrong length (``short``)."""

    name = "fixed_output"

    def __init__(self, kind: str = "zero") -> None:
        self.kind = kind

    def aggregate(self, batch: UpdateBatch) -> AggregationResult:
        dim = batch.updates.shape[1]
        values = {"nan": np.nan, "inf": np.inf, "zero": 0.0, "short": 1.0}
        size = dim - 1 if self.kind == "short" else dim
        return AggregationResult(np.full(size, values[self.kind], dtype=np.float32), {})


class WideNet(nn.Module):
    """A user's model whose width is a constructor option."""

    def __init__(self, in_features: int, num_classes: int, width: int = 8) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_features, width), nn.ReLU(), nn.Linear(width, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x.flatten(1))
        return out


class FractionShift(Attack):
    """An attack with an option named like a key every ``[attack]`` table uses (``fraction``):
    the table would give it to the run, never to the attack."""

    name = "fraction_shift"

    def __init__(self, fraction: float = 0.5, shift: float = 1.0) -> None:
        self.fraction = fraction
        self.shift = shift

    def craft(self, view: AttackView) -> np.ndarray:
        return np.full_like(view.own, np.float32(self.shift * self.fraction))


class ScaleUpdates(Stage):
    """A user's stage: every accepted delta times ``factor``."""

    name = "scale_updates"

    def __init__(self, factor: float) -> None:
        self.factor = factor
        self.rounds_seen = 0  # state that changes as the run goes: not part of the identity

    def run(self, ctx: RoundContext) -> None:
        self.rounds_seen += 1
        ctx.accepted = [
            dataclasses.replace(u, delta=u.delta * np.float32(self.factor)) for u in ctx.accepted
        ]


class Scaling(Feature):
    """A user's feature contributing :class:`ScaleUpdates` to the screen slot."""

    name = "scaling"

    def __init__(self, factor: float) -> None:
        self.factor = factor

    def contribute(self, parts: RunParts, pipeline: Pipeline) -> None:
        pipeline.add("screen", ScaleUpdates(self.factor))


class PerClientScale(Aggregator):
    """A rule with a table of per-client scales (keys as the user wrote them)."""

    name = "per_client_scale"

    def __init__(self, scales: dict[str, float] | None = None) -> None:
        self.scales = dict(scales or {})

    def aggregate(self, batch: UpdateBatch) -> AggregationResult:
        return AggregationResult(batch.updates.mean(axis=0).astype(np.float32), {})


def not_a_model(in_features: int, num_classes: int) -> list[int]:
    """A "model factory" that returns something else than an ``nn.Module``."""
    return [in_features, num_classes]


class PositionalWeights(Aggregator):
    """A rule taking its weights as extra positional arguments (``*weights``)."""

    name = "positional_weights"

    def __init__(self, *weights: float, scale: float = 1.0) -> None:
        self.weights = weights
        self.scale = scale

    def aggregate(self, batch: UpdateBatch) -> AggregationResult:
        return AggregationResult(batch.updates.mean(axis=0).astype(np.float32), {})
