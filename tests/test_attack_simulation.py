"""Attacks inside real runs: runtimes agree, resume is exact, the CLI and the red team work."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedfort import Simulation
from fedfort.cli import main
from fedfort.config import parse_config
from fedfort.errors import ConfigError
from fedfort.redteam import load_redteam_config, plan_cells

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _config(attack: dict[str, object], **extra: object) -> dict[str, object]:
    return {"rounds": 4, "clients": {"count": 10}, "attack": attack, **extra}


@pytest.mark.parametrize(
    "attack",
    [
        {"name": "alie", "fraction": 0.3},
        {"name": "backdoor", "fraction": 0.3, "boost": 3.0, "proximal_mu": 0.1},
        {"name": "gaussian_noise", "fraction": 0.3, "relative": True},
    ],
)
def test_attacks_run_identically_in_process_and_on_a_worker_pool(attack) -> None:
    cfg = parse_config(_config(attack))
    with Simulation(cfg) as sim:
        sequential = sim.run()
    with Simulation(cfg.with_overrides({"simulation.workers": 2})) as sim:
        pooled = sim.run()
    np.testing.assert_array_equal(sequential.model, pooled.model)
    assert sequential.malicious == pooled.malicious and len(sequential.malicious) == 3


def test_replay_state_is_checkpointed_so_resume_matches(tmp_path) -> None:
    body = _config(
        {"name": "replay", "fraction": 0.3},
        rounds=6,
        detection={"enabled": True, "action": "record"},
    )
    cfg = parse_config(body)
    with Simulation(cfg, tmp_path / "whole") as sim:
        whole = sim.run()
    with Simulation(cfg, tmp_path / "split") as sim:
        sim.run(rounds=3)
    with Simulation.resume(tmp_path / "split") as sim:
        resumed = sim.run()
    np.testing.assert_array_equal(whole.model, resumed.model)
    assert whole.security is not None and resumed.security is not None
    assert whole.security["detection_counts"] == resumed.security["detection_counts"]
    # from its second round on, every replay is caught by the history component
    assert whole.security["detection_recall"] >= 0.8


def test_a_backdoor_run_reports_its_success_rate_every_round() -> None:
    cfg = parse_config(_config({"name": "backdoor", "fraction": 0.3, "boost": 3.0}, rounds=3))
    with Simulation(cfg) as sim:
        result = sim.run()
    rates = [r["measurements"]["evaluate"]["backdoor_asr"] for r in result.records]
    assert len(rates) == 3 and all(0.0 <= r <= 1.0 for r in rates)
    assert result.security is not None
    assert result.security["backdoor_asr"] == rates[-1]
    clean = parse_config(_config({"name": "none"}, rounds=3))
    with Simulation(clean) as sim:
        assert sim.run().security is None


def test_cli_simulate_takes_an_attack_and_writes_the_security_summary(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    args = ["simulate", "--rounds", "3", "--clients", "10", "--attack", "sign_flip"]
    assert main([*args, "--attack-fraction", "0.2", "--out", str(out), "--quiet"]) == 0
    body = json.loads((out / "results.json").read_text())
    assert body["security"]["attack"]["name"] == "sign_flip"
    assert len(body["security"]["malicious"]) == 2
    assert main(["simulate", "--attack", "teleport", "--out", str(tmp_path / "x")]) == 2
    assert "attack" in capsys.readouterr().err


def test_cli_redteam_writes_the_report(tmp_path, capsys) -> None:
    config = tmp_path / "rt.toml"
    config.write_text(
        """
seeds = [0]
[base]
rounds = 2
clients = { count = 10 }
[attacks.sign_flip]
name = "sign_flip"
[defenses.fedavg]
[defenses.multi_krum]
defense = { aggregator = "multi_krum", num_byzantine = 2 }
""",
        encoding="utf-8",
    )
    out = tmp_path / "out"
    assert main(["redteam", "--config", str(config), "--out", str(out), "--quiet"]) == 0
    for name in ("redteam.json", "report.md", "report.html", "heatmap_accuracy.png"):
        assert (out / name).is_file(), name
    body = json.loads((out / "redteam.json").read_text())
    assert {(c["attack"], c["defense"]) for c in body["cells"]} == {
        ("sign_flip", "fedavg"),
        ("sign_flip", "multi_krum"),
        ("none", "fedavg"),
        ("none", "multi_krum"),
    }
    assert "sign_flip" in capsys.readouterr().out


def test_redteam_configs_are_validated_before_anything_runs(tmp_path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(
        '[base]\n[attacks.x]\nname = "sign_flip"\nscale = -1\n[defenses.fedavg]\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match="attack=x defense=fedavg"):
        plan_cells(load_redteam_config(config))
    config.write_text('[attacks.x]\nname = "sign_flip"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="defenses"):
        load_redteam_config(config)


@pytest.mark.parametrize("name", ["redteam.toml", "redteam-demo.toml", "redteam-mnist.toml"])
def test_shipped_redteam_configs_are_valid(name: str) -> None:
    cfg = load_redteam_config(EXAMPLES / name)
    cells = plan_cells(cfg)
    assert len(cells) == (len(cfg.attacks) + 1) * len(cfg.defenses) * len(cfg.seeds)
