"""End-to-end simulation: the accuracy bars, reproducibility, resume, runtimes and the CLI."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from torch import nn

from fedfort import Simulation, load_config
from fedfort.cli import main
from fedfort.cli.simulate import fresh_run_dir
from fedfort.config import RunConfig, parse_config
from fedfort.errors import CheckpointError, ConfigError, DatasetError, RoundFailed


def config(**sections) -> RunConfig:
    body = {"rounds": 4, "clients": {"count": 6}, **sections}
    return parse_config(body)


def run(cfg: RunConfig, out=None):
    with Simulation(cfg, out) as sim:
        return sim.run()


@pytest.mark.slow
def test_demo_config_reaches_the_accuracy_bar_reproducibly() -> None:
    """Digits, MLP, 10 clients, Dirichlet(0.5), 30 rounds of FedAvg: accuracy >= 0.93."""
    cfg = load_config("examples/demo.toml")
    assert (cfg.clients.count, cfg.data.alpha, cfg.rounds) == (10, 0.5, 30)
    first, second = run(cfg), run(cfg)
    assert first.final["accuracy"] >= 0.93
    assert first.final["accuracy"] == second.final["accuracy"]
    np.testing.assert_array_equal(first.model, second.model)


@pytest.mark.slow
def test_fedprox_and_scaffold_match_fedavg_on_strongly_non_iid_data() -> None:
    """Dirichlet(0.1), 20 clients: FedProx and SCAFFOLD finish within 2 points of FedAvg."""
    base = load_config("examples/demo.toml").with_overrides(
        {"clients.count": 20, "data.alpha": 0.1}
    )
    acc = {
        algo: run(base.with_overrides({"clients.algorithm": algo})).final["accuracy"]
        for algo in ("fedavg", "fedprox", "scaffold")
    }
    assert acc["fedavg"] > 0.8, acc
    assert acc["fedprox"] >= acc["fedavg"] - 0.02, acc
    assert acc["scaffold"] >= acc["fedavg"] - 0.02, acc


STATEFUL = {
    "rounds": 6,
    "clients": {"count": 8, "algorithm": "scaffold"},
    "server": {"optimizer": "fedadam", "lr": 0.05, "fraction": 0.5, "quorum": 0.5},
    "simulation": {"dropout_rate": 0.2},
}


def test_resumed_run_reaches_the_same_model_as_an_uninterrupted_one(tmp_path) -> None:
    """SCAFFOLD controls, FedAdam moments, selection RNG and dropouts all survive a restart."""
    cfg = parse_config(STATEFUL)
    whole = run(cfg, tmp_path / "whole")
    with Simulation(cfg, tmp_path / "split") as sim:
        sim.run(rounds=3)
    with Simulation.resume(tmp_path / "split") as sim:
        assert sim.engine.round == 3
        resumed = sim.run()
    np.testing.assert_array_equal(resumed.model, whole.model)
    assert [r["model_sha256"] for r in resumed.records] == [
        r["model_sha256"] for r in whole.records
    ]
    assert [r["selected"] for r in resumed.records] == [r["selected"] for r in whole.records]


def test_existing_run_is_not_overwritten_and_other_configs_cannot_resume_it(tmp_path) -> None:
    cfg = config()
    run(cfg, tmp_path)
    db = tmp_path / "checkpoints.sqlite"
    before = sqlite3.connect(db).execute("SELECT COUNT(*) FROM checkpoints").fetchone()
    with pytest.raises(ConfigError, match="already holds a run"):
        Simulation(cfg, tmp_path)
    after = sqlite3.connect(db).execute("SELECT COUNT(*) FROM checkpoints").fetchone()
    assert before == after == (5,)
    with pytest.raises(CheckpointError, match="different configuration"):
        Simulation(cfg.with_overrides({"seed": 9}), tmp_path, _resuming=True)
    with pytest.raises(CheckpointError, match="no run to resume"):
        Simulation.resume(tmp_path / "nothing")


def test_process_pool_gives_the_same_model_as_sequential() -> None:
    body = {**STATEFUL, "rounds": 3}
    sequential = run(parse_config(body))
    pooled = run(parse_config({**body, "simulation": {**body["simulation"], "workers": 2}}))
    np.testing.assert_array_equal(pooled.model, sequential.model)


def test_dropouts_below_quorum_are_retried_and_recorded() -> None:
    cfg = config(
        rounds=5,
        server={"quorum": 1.0, "max_attempts": 20},
        simulation={"dropout_rate": 0.15},
    )
    records = run(cfg).records
    discarded = [d for r in records for d in r["discarded_attempts"]]
    assert discarded, "with 15% dropouts and a full quorum some attempt must be discarded"
    assert all("quorum" in d["reason"] and d["dropped"] for d in discarded)
    assert all(r["participants"] == 6 and not r["dropped"] for r in records)


@pytest.mark.parametrize("workers", [0, 2])
def test_updates_after_the_deadline_count_as_dropped(workers: int) -> None:
    cfg = config(
        rounds=1,
        server={"deadline_s": 1e-6, "max_attempts": 2},
        simulation={"workers": workers},
    )
    with Simulation(cfg) as sim, pytest.raises(RoundFailed, match="quorum") as failure:
        sim.run()
    assert "after 2 attempts" in str(failure.value)
    assert sim.engine.round == 0


@pytest.mark.parametrize(
    ("model", "dataset"),
    [("logreg", "breast_cancer"), ("cnn", "digits"), ("mlp", "synthetic")],
)
def test_builtin_models_and_datasets_train(model: str, dataset: str) -> None:
    cfg = config(
        rounds=3,
        model={"name": model},
        data={
            "dataset": dataset,
            "partition": "iid",
            "synthetic_samples": 2000,
            "synthetic_classes": 4,
        },
    )
    result = run(cfg)
    assert result.final["accuracy"] > 0.5
    assert result.records[-1]["loss"] < result.records[0]["loss"] * 1.01


class TinyNet(nn.Module):
    def __init__(self, in_features: int, num_classes: int, width: int = 8) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(in_features, width), nn.Tanh())
        self.out = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.out(self.body(x))


def test_user_module_trains_in_process_and_on_workers() -> None:
    cfg = config(rounds=2, model={"name": "tiny", "options": {"width": 12}})
    with Simulation(cfg, model_factory=TinyNet) as sim:
        assert sim.spec.dim == 64 * 12 + 12 + 12 * 10 + 10
        sequential = sim.run()
    pooled_cfg = cfg.with_overrides({"simulation.workers": 2})
    with Simulation(pooled_cfg, model_factory=TinyNet) as sim:
        pooled = sim.run()
    np.testing.assert_array_equal(sequential.model, pooled.model)


def test_impossible_settings_say_what_to_change() -> None:
    with pytest.raises(DatasetError, match="use fewer clients"):
        Simulation(config(clients={"count": 2000}))
    with pytest.raises(ConfigError, match="SmallCNN needs square"):
        Simulation(config(model={"name": "cnn"}, data={"dataset": "breast_cancer"}))
    with pytest.raises(ConfigError, match="unknown model"):
        Simulation(config(model={"name": "resnet9000"}))


def test_cli_simulate_writes_results_and_plot(tmp_path, capsys) -> None:
    cfg = tmp_path / "run.toml"
    cfg.write_text('rounds = 5\n[clients]\ncount = 4\n[data]\npartition = "iid"\n')
    out = tmp_path / "out"
    args = ["simulate", "--config", str(cfg), "--out", str(out), "--quiet"]
    assert main([*args, "--rounds", "3", "--model", "logreg", "--seed", "2"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["model"]["name"] == "logreg"
    assert results["config"]["seed"] == 2
    assert [r["round"] for r in results["rounds"]] == [1, 2, 3]
    for record in results["rounds"]:
        assert {"round", "accuracy", "loss", "participants", "duration_s"} <= set(record)
        assert record["participants"] == 4
    assert results["final"]["rounds"] == 3
    assert 0.0 < results["final"]["accuracy"] <= 1.0
    png = (out / "training.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    assert "test accuracy" in capsys.readouterr().out

    # resume to 5 rounds: results cover every round
    assert main(["simulate", "--resume", "--out", str(out), "--rounds", "5", "--quiet"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert [r["round"] for r in results["rounds"]] == [1, 2, 3, 4, 5]


def test_cli_reports_config_errors_without_a_traceback(tmp_path, capsys) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[clients]\ncuont = 3\n")
    assert main(["simulate", "--config", str(cfg), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "clients.cuont" in err and "did you mean 'count'" in err
    assert main(["simulate", "--rounds", "0", "--out", str(tmp_path / "o")]) == 2
    assert "rounds" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    assert main(["simulate", "--resume", "--seed", "3", "--out", str(tmp_path / "o")]) == 2


def test_cli_default_out_is_a_fresh_dated_folder_per_run(tmp_path, capsys, monkeypatch) -> None:
    """Two runs with the default --out each get their own folder; neither fails or is lost."""
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "hospitals.toml"
    cfg.write_text('rounds = 1\n[clients]\ncount = 3\n[model]\nname = "logreg"\n')
    outs = []
    for _ in range(2):
        assert main(["simulate", "--config", str(cfg), "--quiet"]) == 0
        err = capsys.readouterr().err
        [line] = [x for x in err.splitlines() if x.startswith("fedfort: writing this run to ")]
        outs.append(Path(line.removeprefix("fedfort: writing this run to ")))
    assert outs[0] != outs[1]
    for out in outs:
        assert out.parent == Path("runs")
        assert re.fullmatch(r"hospitals-\d{8}-\d{6}(-\d+)?", out.name), out.name
        assert json.loads((out / "results.json").read_text())["final"]["rounds"] == 1
    # an explicit --out that holds a run keeps the refusal, with the way out
    assert main(["simulate", "--config", str(cfg), "--out", str(outs[0]), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--resume" in err
    assert main(["simulate", "--resume", "--rounds", "2", "--quiet"]) == 2
    assert "--resume continues the run in --out DIR" in capsys.readouterr().err
    # a run refused before it starts leaves no folder behind
    assert main(["simulate", "--config", str(cfg), "--clients", "2000", "--quiet"]) == 2
    assert sorted(Path("runs").iterdir()) == sorted(outs)


def test_fresh_run_dirs_are_unique_within_a_second(tmp_path) -> None:
    made = [fresh_run_dir("configs/site.toml", tmp_path) for _ in range(3)]
    assert len(set(made)) == 3 and all(p.is_dir() and p.parent == tmp_path for p in made)
    assert made[0].name.startswith("site-")
    assert fresh_run_dir(None, tmp_path).name.startswith("simulate-")
