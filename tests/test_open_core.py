"""The open core: components as objects, registries open to a user's own components, and a
run's identity that names them all (so a resume rebuilds them or refuses)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import fedfort
from fedfort.aggregation import Krum, NormBounding
from fedfort.config import load_config, parse_config
from fedfort.errors import ConfigError
from fedfort.privacy import DPFedAvg
from fedfort.run.resume import stored_config

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = ROOT / "examples" / "plugins"
PLUGIN_TOML = PLUGINS / "plugin-run.toml"


class MyNet(nn.Module):
    """A user's own model, not known to fedfort's model registry."""

    def __init__(self, in_features: int = 64, num_classes: int = 10) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(in_features, 32), nn.ReLU(), nn.Linear(32, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.body(x)
        return out


@pytest.fixture
def plugins(monkeypatch):
    """``clinic_rules`` (a module outside the package) importable, as a user's would be."""
    monkeypatch.syspath_prepend(str(PLUGINS))
    import clinic_rules

    return clinic_rules


def test_the_objects_first_example_runs_as_written(tmp_path):
    torch.manual_seed(0)
    run = fedfort.Simulation(
        model=MyNet(),
        aggregator=NormBounding(Krum(num_byzantine=2), max_norm=5.0),
        privacy=DPFedAvg(target_epsilon=3.0, delta=1e-5),
        rounds=3,
        out_dir=tmp_path / "x",
    )
    with run:
        result = run.run()
    assert len(result.records) == 3
    cfg = run.config
    # every component is named in the run's config, so its stored identity names it
    assert cfg.defense.aggregator == "norm_bound"
    assert cfg.defense.options == {
        "inner": {"ref": "krum", "options": {"num_byzantine": 2}},
        "max_norm": 5.0,
    }
    assert cfg.privacy.mode == "central" and cfg.privacy.target_epsilon == 3.0
    assert cfg.model.name == f"{MyNet.__module__}:MyNet"
    # DP around the robust rule: the private stage runs the user's rule on clipped updates
    private = run.engine.stage("aggregate")
    assert isinstance(private.rule, NormBounding) and isinstance(private.rule.inner, Krum)
    noise = result.records[-1]["measurements"]["aggregate"]
    assert noise["rule"] == "dp_central(norm_bound(krum))"
    assert noise["noise_std"] == pytest.approx(2 * run.config.privacy.clip_norm * _z(run))
    spent = [r["epsilon"] for r in result.records if r.get("epsilon") is not None]
    assert spent and 0 < spent[-1] <= 3.0
    stored = stored_config(tmp_path / "x")  # the run's signed identity names every component
    assert stored["defense"]["options"]["inner"] == {"ref": "krum", "options": {"num_byzantine": 2}}
    assert stored["model"]["name"] == f"{MyNet.__module__}:MyNet"


def _z(run):
    return run.engine.stage("aggregate").plan.update_noise_multiplier


def test_a_robust_object_is_the_rule_that_runs():
    rule = NormBounding(Krum(num_byzantine=2), max_norm=5.0)
    with fedfort.Simulation(aggregator=rule, clients=8, rounds=1) as run:
        built = run.engine.stage("aggregate").aggregator
        assert isinstance(built, NormBounding) and isinstance(built.inner, Krum)
        assert built.max_norm == 5.0 and built.inner.num_byzantine == 2
        # the rule's own precondition (n > 2f + 2) is checked against the run
        assert built.min_updates(0) == 7
    with pytest.raises(ConfigError, match="needs at least 7 updates"):
        fedfort.Simulation(aggregator=rule, clients=6, rounds=1)


def test_outside_rule_and_attack_from_toml_python_and_resume(plugins, tmp_path):
    # from a TOML config, by import path
    config = load_config(PLUGIN_TOML)
    assert config.defense.aggregator == "clinic_rules:MedianOfMeans"
    with fedfort.Simulation(config, tmp_path / "toml") as sim:
        rule = sim.engine.stage("aggregate").aggregator
        assert isinstance(rule, plugins.MedianOfMeans) and rule.groups == 5
        assert isinstance(sim.attack, plugins.ConstantShift) and sim.attack.shift == 0.5
        assert len(sim.malicious) == 2
        from_toml = sim.run(3)
    assert from_toml.records[-1]["measurements"]["aggregate"]["groups"] == 5

    # the same components as objects build the same run, bit for bit
    with fedfort.Simulation(
        config.with_overrides({"defense.aggregator": "fedavg", "defense.options": {}}),
        aggregator=plugins.MedianOfMeans(groups=5),
        attack=plugins.ConstantShift(shift=0.5),
        malicious_fraction=0.2,
    ) as sim:
        assert sim.config.identity_hash() == config.identity_hash()
        from_objects = sim.run(3)
    assert np.array_equal(from_objects.model, from_toml.model)

    # a resume rebuilds both from the run's stored identity
    with fedfort.Simulation.resume(tmp_path / "toml", rounds=4) as resumed:
        rule = resumed.engine.stage("aggregate").aggregator
        assert isinstance(rule, plugins.MedianOfMeans) and rule.groups == 5
        assert isinstance(resumed.attack, plugins.ConstantShift) and resumed.attack.shift == 0.5
        assert resumed.run().records[-1]["round"] == 4


def test_the_outside_rule_defends_where_the_mean_fails(plugins):
    config = load_config(PLUGIN_TOML).with_overrides({"rounds": 5})
    with fedfort.Simulation(config) as sim:
        robust = sim.run().records[-1]["accuracy"]
    mean = config.with_overrides({"defense.aggregator": "fedavg", "defense.options": {}})
    with fedfort.Simulation(mean) as sim:
        broken = sim.run().records[-1]["accuracy"]
    assert broken < 0.2 < robust - 0.1


def test_component_errors_name_the_key(plugins):
    base = {"clients": {"count": 12}}
    with pytest.raises(ConfigError, match=r"no option 'group'.*did you mean 'groups'"):
        parse_config(
            {
                **base,
                "defense": {"aggregator": "clinic_rules:MedianOfMeans", "options": {"group": 3}},
            }
        )
    with pytest.raises(ConfigError, match="did you mean 'median'"):
        parse_config({**base, "defense": {"aggregator": "medain"}})
    with pytest.raises(ConfigError, match=r"cannot import 'no_such_pkg\.rules'"):
        parse_config({**base, "defense": {"aggregator": "no_such_pkg.rules:Rule"}})
    with pytest.raises(ConfigError, match="has no 'Nope'"):
        parse_config({**base, "attack": {"name": "clinic_rules:Nope"}})
    with pytest.raises(ConfigError, match="is not a Aggregator"):
        parse_config({**base, "defense": {"aggregator": "clinic_rules:ConstantShift"}})
    with pytest.raises(ConfigError, match=r"no option 'shfit'.*did you mean 'shift'"):
        parse_config({**base, "attack": {"name": "clinic_rules:ConstantShift", "shfit": 1.0}})


def test_a_registered_rule_is_named_like_fedforts_own(tmp_path):
    from fedfort.aggregation import AGGREGATOR_REGISTRY, register
    from fedfort.aggregation.mean import WeightedMean

    @register("unweighted_mean_for_test")
    class UnweightedMean(WeightedMean):
        def __init__(self) -> None:
            super().__init__(weighted=False)

    try:
        config = parse_config({"defense": {"aggregator": "unweighted_mean_for_test"}})
        assert isinstance(config.defense.rule(), UnweightedMean)
        assert AGGREGATOR_REGISTRY.spec_of(UnweightedMean()).ref == "unweighted_mean_for_test"
    finally:
        AGGREGATOR_REGISTRY.unregister("unweighted_mean_for_test")


class _Scale(fedfort.Stage):
    name = "scale_for_test"

    def run(self, ctx):  # a hand-inserted stage that changes nothing
        return None


def test_a_hand_inserted_stage_is_part_of_the_identity(tmp_path):
    config = parse_config({"clients": {"count": 4}, "rounds": 2})
    with fedfort.Simulation(config, tmp_path / "run") as sim:
        names = [s.name for s in sim.engine.stages]
        sim.engine.stages.insert(names.index("verify") + 1, _Scale())
        sim.run(1)
    with (
        fedfort.Simulation.resume(tmp_path / "run") as sim,
        pytest.raises(ConfigError, match=r"scale_for_test .*insert the same stages"),
    ):
        sim.run()
    with fedfort.Simulation.resume(tmp_path / "run") as sim:
        names = [s.name for s in sim.engine.stages]
        sim.engine.stages.insert(names.index("verify") + 1, _Scale())
        assert sim.run().records[-1]["round"] == 2


def test_cli_runs_an_outside_component_by_import_path_and_resumes(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PLUGINS), *sys.path])}
    fedfort_cli = [sys.executable, "-m", "fedfort.cli"]
    out = tmp_path / "cli"
    first = subprocess.run(
        [
            *fedfort_cli,
            "simulate",
            "--config",
            str(PLUGIN_TOML),
            "--out",
            str(out),
            "--rounds",
            "2",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert first.returncode == 0, first.stderr
    resumed = subprocess.run(
        [*fedfort_cli, "simulate", "--out", str(out), "--resume", "--rounds", "3"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "finished 3 rounds" in resumed.stdout
    bare = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    refused = subprocess.run(
        [*fedfort_cli, "simulate", "--out", str(out), "--resume", "--rounds", "4"],
        env=bare,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert refused.returncode != 0 and "cannot import 'clinic_rules'" in refused.stderr


def test_server_optimizers_are_components_too():
    from fedfort.server.optimizers import ServerAdam, ServerMomentum

    with fedfort.Simulation(server_optimizer=ServerAdam(lr=0.02, tau=1e-2), rounds=1) as sim:
        assert sim.config.server.optimizer == "fedadam"
        assert sim.config.server.optimizer_options["lr"] == 0.02
        built = sim.engine.stage("server_optimizer").optimizer
        assert isinstance(built, ServerAdam) and built.lr == 0.02 and built.tau == 1e-2
    # the flat keys still build fedfort's own optimizers
    flat = parse_config({"server": {"optimizer": "fedavgm", "momentum": 0.5}})
    with fedfort.Simulation(flat, rounds=1) as sim:
        built = sim.engine.stage("server_optimizer").optimizer
        assert isinstance(built, ServerMomentum) and built.momentum == 0.5
    with pytest.raises(ConfigError, match="did you mean 'fedadam'"):
        parse_config({"server": {"optimizer": "fedadm"}})
    with pytest.raises(ConfigError, match=r"no option 'betta1'.*did you mean 'beta1'"):
        parse_config({"server": {"optimizer": "fedadam", "optimizer_options": {"betta1": 0.8}}})
