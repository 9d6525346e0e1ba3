"""A run's pipeline is assembled from features; a user's feature joins it and its identity."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import fedfort
from fedfort.config import parse_config
from fedfort.errors import ConfigError
from fedfort.run.features import SLOTS, Feature, Pipeline, default_features
from fedfort.server import RoundContext, Stage


class ClipUpdates(Stage):
    """Scale every accepted delta to L2 norm <= max_norm."""

    name = "clip_updates"

    def __init__(self, max_norm: float) -> None:
        self.max_norm = max_norm

    def run(self, ctx: RoundContext) -> None:
        deltas = np.stack([u.delta for u in ctx.accepted])
        norms = np.linalg.norm(deltas, axis=1)
        scale = np.minimum(1.0, self.max_norm / np.maximum(norms, 1e-12)).astype(np.float32)
        ctx.accepted = [
            dataclasses.replace(u, delta=deltas[i] * scale[i]) for i, u in enumerate(ctx.accepted)
        ]
        ctx.measure(self.name, clipped=int((norms > self.max_norm).sum()))


class Clipping(Feature):
    name = "clipping"

    def contribute(self, parts, pipeline):
        pipeline.add("screen", ClipUpdates(0.01))


def test_the_config_switches_features_on_and_each_takes_its_slot():
    names = lambda cfg: [type(f).__name__ for f in default_features(parse_config(cfg))]  # noqa: E731
    assert names({}) == ["Privacy", "Averaging"]
    full = names(
        {
            "clients": {"algorithm": "scaffold"},
            "detection": {"enabled": True},
            "reputation": {"enabled": True},
            "governance": {"rollback_drop": 0.2},
        }
    )
    assert full == [
        "Privacy",
        "Scaffold",
        "Detection",
        "Averaging",
        "DriftRollbackFeature",
        "Reputation",
    ]
    with fedfort.Simulation(
        {"clients": {"algorithm": "scaffold"}, "detection": {"enabled": True}, "rounds": 1}
    ) as sim:
        order = [s.name for s in sim.engine.stages]
    assert order.index("verify") < order.index("sample_cap") < order.index("detect")
    assert (
        order.index("aggregate") < order.index("scaffold_control") < order.index("server_optimizer")
    )


def test_one_stage_slots_go_to_the_first_provider_and_bad_slots_are_refused():
    pipeline = Pipeline()
    first, second = ClipUpdates(1.0), ClipUpdates(2.0)
    assert pipeline.provide("aggregate", first) and not pipeline.provide("aggregate", second)
    assert pipeline.provided("aggregate") is first
    with pytest.raises(ConfigError, match="unknown pipeline slot 'sreen'"):
        pipeline.add("sreen", first)
    with pytest.raises(ConfigError, match="holds one stage"):
        pipeline.add("select", first)
    with pytest.raises(ConfigError, match=r"no feature provided the \['select'\]"):
        pipeline.stages()
    pipeline.directive("privacy", lambda: None)
    with pytest.raises(ConfigError, match="two features give the broadcast directive"):
        pipeline.directive("privacy", lambda: None)
    assert SLOTS.index("screen") < SLOTS.index("quorum") < SLOTS.index("aggregate")


def test_a_users_feature_runs_and_is_part_of_the_runs_identity(tmp_path):
    config = {"clients": {"count": 4}, "rounds": 2}
    with fedfort.Simulation(config, tmp_path / "run", features=[Clipping()]) as sim:
        names = [s.name for s in sim.engine.stages]
        assert names.index("clip_updates") < names.index("aggregate")
        record = sim.run(1).records[-1]
    assert record["measurements"]["clip_updates"]["clipped"] == 4  # every update was clipped
    with (
        fedfort.Simulation.resume(tmp_path / "run") as sim,
        pytest.raises(ConfigError, match="clip_updates"),
    ):
        sim.run()
    with fedfort.Simulation.resume(tmp_path / "run", features=[Clipping()]) as sim:
        assert sim.run().records[-1]["round"] == 2


class NoisyMedian(Stage):
    """A user's own private aggregate: clipped coordinate median plus Gaussian noise."""

    name = "noisy_median"

    def __init__(self, clip: float, std: float) -> None:
        self.clip, self.std = clip, std

    def run(self, ctx: RoundContext) -> None:
        x = np.stack([u.delta for u in ctx.accepted]).astype(np.float64)
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        clipped = x * np.minimum(1.0, self.clip / np.maximum(norms, 1e-12))
        noise = np.random.default_rng().normal(0.0, self.std, x.shape[1])
        ctx.aggregate = (np.median(clipped, axis=0) + noise).astype(np.float32)
        ctx.measure(self.name, noise_std=self.std)


class OwnPrivacy(Feature):
    name = "own_privacy"

    def contribute(self, parts, pipeline):
        if not pipeline.provide("aggregate", NoisyMedian(clip=1.0, std=0.01)):
            raise ConfigError("the round's aggregate is already provided")


def test_a_users_feature_can_provide_the_rounds_aggregate():
    with fedfort.Simulation({"clients": {"count": 4}, "rounds": 1}, features=[OwnPrivacy()]) as sim:
        names = [s.name for s in sim.engine.stages]
        assert "noisy_median" in names and "aggregate" not in names
        assert names.index("quorum") < names.index("noisy_median") < names.index("server_optimizer")
        before = sim.model.copy()
        record = sim.run().records[-1]
    assert record["measurements"]["noisy_median"] == {"noise_std": 0.01}
    assert not np.array_equal(sim.model, before)
    # fedfort's secure aggregation provides the aggregate first: the feature is told, not ignored
    secure = {
        "clients": {"count": 10},
        "rounds": 1,
        "secure_aggregation": {"mode": "secagg", "corrupt_fraction": 0.1},
    }
    with pytest.raises(ConfigError, match="already provided"):
        fedfort.Simulation(secure, features=[OwnPrivacy()])
