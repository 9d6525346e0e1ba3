"""Robust aggregators, detection and reputation wired through the config into real runs."""

from __future__ import annotations

import numpy as np
import pytest

from fedfort import Simulation
from fedfort.aggregation.registry import AGGREGATORS, make_aggregator
from fedfort.config import parse_config
from fedfort.errors import ConfigError


@pytest.mark.parametrize("aggregator", AGGREGATORS)
def test_every_aggregator_trains_the_demo_model(aggregator: str) -> None:
    cfg = parse_config(
        {
            "rounds": 5,
            "clients": {"count": 10},
            "defense": {"aggregator": aggregator, "num_byzantine": 1},
        }
    )
    with Simulation(cfg) as sim:
        result = sim.run()
    assert result.final["accuracy"] > 0.25  # chance is 0.1
    assert result.records[-1]["measurements"]["aggregate"]["rule"] == aggregator


def test_norm_bound_wraps_the_configured_rule() -> None:
    cfg = parse_config({"rounds": 2, "clients": {"count": 6}, "defense": {"norm_bound": 0.01}})
    with Simulation(cfg) as sim:
        record = sim.run().records[-1]
    aggregate = record["measurements"]["aggregate"]
    assert aggregate["rule"] == "norm_bound(fedavg)"
    assert len(aggregate["clipped"]) == 6


def test_impossible_robustness_settings_are_refused_before_the_run() -> None:
    with pytest.raises(ConfigError, match="needs at least 9 updates per round"):
        parse_config(
            {"clients": {"count": 8}, "defense": {"aggregator": "krum", "num_byzantine": 3}}
        )
    with pytest.raises(ConfigError, match="bulyan"):
        parse_config(
            {
                "clients": {"count": 20},
                "server": {"fraction": 0.3},
                "defense": {"aggregator": "bulyan", "num_byzantine": 2},
            }
        )
    with pytest.raises(ConfigError, match="unknown aggregator"):
        make_aggregator("krumm")
    with pytest.raises(ConfigError, match="fltrust_root_samples"):
        Simulation(
            parse_config({"defense": {"aggregator": "fltrust", "fltrust_root_samples": 1000}})
        )


def test_resume_restores_detector_history_reputation_and_aggregator_state(tmp_path) -> None:
    body = {
        "rounds": 6,
        "clients": {"count": 10},
        "server": {"fraction": 0.8},
        "defense": {"aggregator": "centered_clipping", "centered_clipping_tau": 0.5},
        "detection": {"enabled": True},
        "reputation": {"enabled": True, "penalty": 0.9, "quarantine_threshold": 0.45},
    }
    cfg = parse_config(body)
    with Simulation(cfg, tmp_path / "whole") as sim:
        whole = sim.run()
        ledger = sim.ledger
        assert ledger is not None and ledger.scores
    with Simulation(cfg, tmp_path / "split") as sim:
        sim.run(rounds=3)
    with Simulation.resume(tmp_path / "split") as sim:
        resumed = sim.run()
        assert sim.ledger is not None
        assert sim.ledger.scores == ledger.scores
    np.testing.assert_array_equal(whole.model, resumed.model)
    assert [r["selected"] for r in whole.records] == [r["selected"] for r in resumed.records]
