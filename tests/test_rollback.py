"""Model versions and rollback: automatic on accuracy drift, and by an operator.

The drift test runs the same poisoned round (a sign-flip coalition attacking in round 5 only)
with and without ``governance.rollback_drop`` and asserts the difference: without it the
global model is wrecked and takes rounds to recover; with it round 5 commits the best version
instead, training continues from there, and the audit log records why.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import demo_config
from fedfort.audit import AUDIT_FILE, read_entries, verify_run
from fedfort.audit.rollback_request import request_rollback
from fedfort.cli import main
from fedfort.config import RunConfig
from fedfort.server.versions import ModelRegistry
from fedfort.simulation import Simulation

POISONED = 5
ROUNDS = 8


def _config(drop: float | None) -> RunConfig:
    cfg = demo_config({"rounds": ROUNDS, "clients.epochs": 1, "governance.rollback_drop": drop})
    attack = {
        "name": "sign_flip",
        "fraction": 0.3,
        "scale": 10.0,
        "start_round": POISONED,
        "end_round": POISONED,
    }
    return cfg.with_overrides({"attack": attack})


def _accuracies(records: list[dict[str, Any]]) -> list[float]:
    return [float(r["accuracy"]) for r in records]


@pytest.fixture(scope="module")
def unguarded(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    with Simulation(_config(None), out_dir=tmp_path_factory.mktemp("unguarded")) as sim:
        return sim.run().records


def test_a_poisoned_round_is_rolled_back_and_training_continues(
    unguarded: list[dict[str, Any]], tmp_path: Path
) -> None:
    out = tmp_path / "guarded"
    with Simulation(_config(0.1), out_dir=out) as sim:
        records = sim.run().records
        rollbacks_metric = sim.metrics.registry.get_sample_value("fedfort_rollbacks_total")
    before = _accuracies(unguarded)
    after = _accuracies(records)
    # identical until the attack
    assert before[: POISONED - 1] == after[: POISONED - 1]
    best = max(after[: POISONED - 1])
    # without the defence the poisoned round wrecks the model ...
    assert before[POISONED - 1] < best - 0.3
    # ... with it round 5 commits the best version instead
    rolled = records[POISONED - 1]
    rollback = rolled["measurements"]["rollback"]
    best_round = 1 + after.index(best)
    assert rollback["to_version"] == best_round
    assert rolled["model_sha256"] == records[best_round - 1]["model_sha256"]
    assert rollback["to_sha256"] == rolled["model_sha256"]
    assert rollback["rejected_accuracy"] == pytest.approx(before[POISONED - 1])
    assert rollback["rejected_sha256"] == unguarded[POISONED - 1]["model_sha256"]
    assert after[POISONED - 1] == best
    # training continues from the best version and keeps improving
    assert after[-1] > best
    assert after[-1] > before[-1] + 0.1
    assert [r["round"] for r in records if "rollback" in r["measurements"]] == [POISONED]
    assert rollbacks_metric == 1.0
    # the audit log records it
    assert verify_run(out).ok
    logged = [e for e in read_entries(out / AUDIT_FILE) if e.kind == "rollback"]
    assert len(logged) == 1 and logged[0].round == POISONED
    assert logged[0].data["rejected_sha256"] == rollback["rejected_sha256"]
    assert logged[0].data["to_version"] == best_round
    assert "below the best version" in logged[0].data["reason"]
    # the poisoned model never became a version
    versions = {v.sha256 for v in ModelRegistry(out).versions()}
    assert rollback["rejected_sha256"] not in versions


def test_rollback_after_resume_loads_the_best_version_from_the_checkpoints(
    tmp_path: Path,
) -> None:
    straight = tmp_path / "straight"
    with Simulation(_config(0.1), out_dir=straight) as sim:
        expected = sim.run().records
    split = tmp_path / "split"
    with Simulation(_config(0.1), out_dir=split) as sim:
        sim.run(rounds=POISONED - 1)
    with Simulation.resume(split) as sim:
        assert sim.engine.stage("rollback").state_dict()["best_round"] is not None
        resumed = sim.run().records
    assert [r["model_sha256"] for r in resumed] == [r["model_sha256"] for r in expected]
    assert "rollback" in resumed[POISONED - 1]["measurements"]


def test_operator_rollback_is_audited_and_applied_on_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    cfg = demo_config({"rounds": 4, "clients.count": 5, "clients.epochs": 1})
    with Simulation(cfg, out_dir=out) as sim:
        records = sim.run().records
    assert main(["model", "list", str(out)]) == 0
    listing = capsys.readouterr().out
    for record in records:
        assert record["model_sha256"][:16] in listing
    assert main(["model", "show", str(out), "--version", "2"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["sha256"] == records[1]["model_sha256"] and shown["hash_verified"]
    npy = tmp_path / "v2.npy"
    assert main(["model", "export", str(out), "--version", "2", "--out", str(npy)]) == 0
    with ModelRegistry(out) as registry:
        assert np.array_equal(np.load(npy), registry.store.load(2).model)

    assert main(["model", "rollback", str(out), "--to", "9", "--reason", "x"]) == 2
    assert "version 9 does not exist" in capsys.readouterr().err
    assert main(["model", "rollback", str(out), "--to", "2", "--reason", " "]) == 2
    capsys.readouterr()
    assert main(["model", "rollback", str(out), "--to", "2", "--reason", "drift seen"]) == 0
    capsys.readouterr()
    assert main(["model", "list", str(out)]) == 0
    assert "pending: rollback to v2" in capsys.readouterr().out
    requested = [e for e in read_entries(out / AUDIT_FILE) if e.kind == "rollback_requested"]
    assert len(requested) == 1 and requested[0].data["reason"] == "drift seen"

    with Simulation.resume(out, rounds=5) as sim:
        assert np.array_equal(sim.model, ModelRegistry(out).store.load(2).model)
        sim.run()
    with ModelRegistry(out) as registry:
        assert registry.pending() is None
        assert [v.version for v in registry.versions()] == [0, 1, 2, 3, 4, 5]
    applied = [e for e in read_entries(out / AUDIT_FILE) if e.kind == "rollback"]
    assert len(applied) == 1
    assert applied[0].data["to_sha256"] == records[1]["model_sha256"]
    assert applied[0].data["from_sha256"] == records[3]["model_sha256"]
    assert applied[0].data["automatic"] is False
    result = verify_run(out)
    assert result.ok, result.describe()


def test_a_non_finite_candidate_is_rolled_back() -> None:
    from fedfort.server.engine import RoundContext, Stage
    from fedfort.server.rollback import DriftRollback

    class Optimizer(Stage):
        name = "server_optimizer"

        def run(self, ctx: RoundContext) -> None:
            return None

    stage = DriftRollback(0.2, Optimizer())
    good = np.ones(3, dtype=np.float32)

    def context(round_: int, model: np.ndarray, accuracy: float | None) -> RoundContext:
        ctx = RoundContext(
            round=round_,
            attempt=1,
            model=good,
            rng=np.random.default_rng(0),
            client_ids=("a",),
            executor=None,  # type: ignore[arg-type]
        )
        ctx.new_model = model
        ctx.evaluation = {} if accuracy is None else {"accuracy": accuracy, "loss": 0.5}
        return ctx

    first = context(1, good, 0.8)
    stage.run(first)
    stage.commit(first)
    skipped = context(2, good * 2, None)  # not evaluated this round: nothing to judge
    stage.run(skipped)
    assert "rollback" not in skipped.measurements
    bad = context(3, np.full(3, np.nan, dtype=np.float32), float("nan"))
    stage.run(bad)
    assert bad.measurements["rollback"]["to_version"] == 1
    assert bad.new_model is not None and np.array_equal(bad.new_model, good)
    assert bad.evaluation["accuracy"] == 0.8


def test_a_rollback_filed_while_the_run_is_live_waits_for_its_resume(tmp_path: Path) -> None:
    out = tmp_path / "run"
    cfg = demo_config({"rounds": 4, "clients.count": 4, "clients.epochs": 1})
    with Simulation(cfg, out_dir=out) as sim:
        sim.run(rounds=2)
        # another process (the CLI) files a rollback and appends to the same audit log
        with ModelRegistry(out) as registry:
            request_rollback(registry, 1, "filed while the run was live")
        sim.run()
    result = verify_run(out)
    assert result.ok, result.describe()  # both writers chained onto the same head
    kinds = [e.kind for e in read_entries(out / AUDIT_FILE)]
    assert kinds.count("rollback_requested") == 1 and "rollback" not in kinds
    with ModelRegistry(out) as registry:
        assert registry.pending() is not None  # not cleared by the live run's commits
        version_1 = registry.store.load(1).model
    with Simulation.resume(out, rounds=5) as sim:
        assert np.array_equal(sim.model, version_1)
        sim.run()
    with ModelRegistry(out) as registry:
        assert registry.pending() is None
    assert verify_run(out).ok
