"""The sample-count cap: one client reporting num_samples = 2**62 cannot take over FedAvg."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from fedfort import Simulation
from fedfort.config import parse_config
from fedfort.errors import ConfigError
from fedfort.messages import ClientUpdate
from fedfort.server import RoundContext
from fedfort.server.sample_cap import CapSampleCounts, relative_cap
from tampering import tamper

HUGE = 2**62
ROUNDS = 5


def ctx_with(counts: dict[str, int]) -> RoundContext:
    ctx = RoundContext(1, 1, np.zeros(2, np.float32), np.random.default_rng(0), (), None)  # type: ignore[arg-type]
    ctx.accepted = [ClientUpdate(1, c, np.zeros(2, np.float32), n) for c, n in counts.items()]
    return ctx


def test_declared_counts_bound_their_clients_and_the_ratio_bounds_the_rest() -> None:
    ctx = ctx_with({"a": 100, "b": 120, "c": HUGE, "d": 90, "e": 5000})
    CapSampleCounts({"c": 110}, ratio=2.0).run(ctx)
    given = {u.client_id: u.num_samples for u in ctx.accepted}
    # c is held to what it declared; e (undeclared) to 2 x the lower median of (90..110..) = 220
    assert given == {"a": 100, "b": 120, "c": 110, "d": 90, "e": 220}
    m = ctx.measurements["sample_cap"]
    assert m["capped"] == 2 and m["claimed"] == {"c": HUGE, "e": 5000}
    assert m["given"] == {"c": 110, "e": 220}


def test_max_count_bounds_everyone_and_honest_rounds_are_untouched() -> None:
    ctx = ctx_with({"a": 100, "b": 300})
    CapSampleCounts({"a": 500}, max_count=250, ratio=None).run(ctx)
    assert [u.num_samples for u in ctx.accepted] == [100, 250]
    honest = ctx_with({"a": 100, "b": 150, "c": 120})
    CapSampleCounts({}, ratio=2.0).run(honest)
    assert [u.num_samples for u in honest.accepted] == [100, 150, 120]
    assert honest.measurements["sample_cap"]["capped"] == 0


def test_a_minority_cannot_move_the_lower_median() -> None:
    honest = [100, 110, 120, 130, 140, 150]
    clean = relative_cap(honest, 2.0)
    for lie in (1, HUGE):  # deflating or inflating
        assert relative_cap([*honest, lie, lie, lie, lie, lie], 2.0) in range(200, 2 * 150 + 1)
    assert clean == 2 * 120


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ConfigError, match="ratio"):
        CapSampleCounts(ratio=0.5)
    with pytest.raises(ConfigError, match="max_sample_count"):
        CapSampleCounts(max_count=0)
    with pytest.raises(ConfigError, match="positive integers"):
        CapSampleCounts({"a": 0})
    cfg = parse_config({"rounds": 1, "clients": {"count": 3}})
    bad = cfg.with_overrides({"server.declared_sample_counts": {"client-999": 10}})
    with pytest.raises(ConfigError, match="client-999"):
        Simulation(bad)


def attacked_run(arm: str) -> tuple[float, dict[str, Any]]:
    """Four clean rounds, then in round 5 the label-flipping client reports 2**62 samples.

    ``arm``: ``clean`` (no one inflates), ``uncapped`` (the cap stage removed: the attack
    without the defence), ``declared`` (the simulation's default: each client is capped at
    its partition size), ``ratio`` (no declared counts, as in a deployment: 2 x median).
    """
    cfg = parse_config(
        {
            "rounds": ROUNDS,
            "clients": {"count": 10},
            "attack": {
                "name": "label_flip",
                "mode": "all_to_one",
                "fraction": 0.1,
                "start_round": ROUNDS,
            },
        }
    )
    with Simulation(cfg) as sim:
        stages = sim.engine.stages
        if arm == "uncapped":
            sim.engine.stages = [s for s in stages if s.name != "sample_cap"]
        if arm == "ratio":
            cap = sim.engine.stage("sample_cap")
            assert isinstance(cap, CapSampleCounts)
            cap.declared = {}
        if arm != "clean":
            (liar,) = sim.malicious
            tamper(sim, ROUNDS, {liar: lambda u: dataclasses.replace(u, num_samples=HUGE)})
        result = sim.run()
    last = result.records[-1]
    return float(last["accuracy"]), last["measurements"].get("sample_cap", {})


def test_an_inflated_sample_count_no_longer_takes_over_fedavg() -> None:
    clean, _ = attacked_run("clean")
    uncapped, none = attacked_run("uncapped")
    declared, measured = attacked_run("declared")
    ratio, by_ratio = attacked_run("ratio")
    # without the cap the liar's update is the whole aggregate: ~0.81 -> ~0.10 in one round
    assert clean > 0.7 and uncapped < 0.2 and none == {}, (clean, uncapped)
    # capped at its declared (partition) size the liar weighs what it really holds
    assert declared >= clean - 0.02, (clean, declared)
    assert measured["capped"] == 1 and list(measured["claimed"].values()) == [HUGE]
    # with no declaration it weighs at most 2 median clients: far from a takeover
    assert ratio > uncapped + 0.4 and by_ratio["capped"] == 1, (uncapped, ratio)
