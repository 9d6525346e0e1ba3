"""A tampered run directory is not resumed: signed checkpoints and the config a resume keeps.

Each attack plays someone who can rewrite ``checkpoints.sqlite`` (plain ``sqlite3``) but does
not hold the run's audit key, on a run directory written by a short real run:

- a poisoned global model with its SHA-256 recomputed;
- the robust aggregation rule switched from median to FedAvg in the stored config, with the
  config identity recomputed;
- ``[access]`` pointed at the attacker's own token store (whose admin token would start and
  steer the run);
- the last round erased from the audit log together with its checkpoint row.

Every one resumed without a word on a fedfort without signed checkpoints (run these tests with
``PYTHONPATH=<older src>``: each fails because the resume succeeds); now each resume is
refused with an error that names what failed. A resume given a configuration that differs
from the stored one (``fedfort server --resume --config ...``) is refused naming the keys.
"""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import demo_config
from fedfort.config import RunConfig, parse_config
from fedfort.errors import CheckpointError
from fedfort.params import vector_sha256
from fedfort.simulation import Simulation

ROUNDS = 2


def _config(tokens: Path) -> RunConfig:
    return demo_config(
        {
            "rounds": ROUNDS,
            "clients.count": 5,
            "clients.epochs": 1,
            "defense.aggregator": "median",
            "access.tokens": str(tokens),
        }
    )


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RunConfig]:
    base = tmp_path_factory.mktemp("tamper")
    config = _config(base / "operators-tokens.sqlite")
    with Simulation(config, out_dir=base / "run") as sim:
        sim.run()
    return base / "run", config


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def _rewrite_stored_config(run: Path, change: dict[str, Any]) -> None:
    """Edit the stored config and recompute every identity the checkpoint holds."""
    db = sqlite3.connect(run / "checkpoints.sqlite")
    meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
    cfg = parse_config(json.loads(meta["config"])).with_overrides(change)
    updates = {"config": json.dumps(cfg.to_dict(), sort_keys=True), "identity": cfg.identity_hash()}
    if "config_identity" in meta:
        updates["config_identity"] = cfg.config_identity()
    for key, value in updates.items():
        db.execute("UPDATE meta SET value = ? WHERE key = ?", (value, key))
    db.commit()
    db.close()


def _resume(run: Path) -> Simulation:
    return Simulation.resume(run, rounds=ROUNDS + 1)


def test_an_untouched_run_resumes(run_copy: Path) -> None:
    with _resume(run_copy) as sim:
        assert sim.engine.round == ROUNDS
        assert sim.config.defense.aggregator == "median"


def test_a_poisoned_model_with_a_recomputed_sha256_is_refused(run_copy: Path) -> None:
    db = sqlite3.connect(run_copy / "checkpoints.sqlite")
    blob = db.execute("SELECT model FROM checkpoints WHERE round = ?", (ROUNDS,)).fetchone()[0]
    model = np.load(io.BytesIO(blob), allow_pickle=False)
    poisoned = (-10.0 * model).astype(np.float32)
    db.execute(
        "UPDATE checkpoints SET model = ?, model_sha256 = ? WHERE round = ?",
        (_npy(poisoned), vector_sha256(poisoned), ROUNDS),
    )
    db.commit()
    db.close()
    with pytest.raises(CheckpointError, match=f"round {ROUNDS} .*fails its signature check"):
        _resume(run_copy).close()


def _audit_verify(run: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from fedfort.cli import main

    capsys.readouterr()
    code = main(["audit", "verify", str(run)])
    return code, capsys.readouterr().out


def test_median_switched_to_fedavg_with_a_recomputed_identity_is_refused(
    run_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _rewrite_stored_config(run_copy, {"defense.aggregator": "fedavg"})
    with pytest.raises(CheckpointError, match=r"'config' .*fails its signature check"):
        _resume(run_copy).close()
    code, out = _audit_verify(run_copy, capsys)
    assert code == 1 and "FAILED at entry 1 (run_start)" in out
    assert "differs in: defense.aggregator" in out


def test_access_pointed_at_another_token_store_is_refused(
    run_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _rewrite_stored_config(run_copy, {"access.tokens": str(tmp_path / "attacker-tokens.sqlite")})
    with pytest.raises(CheckpointError, match=r"'config' .*fails its signature check"):
        _resume(run_copy).close()
    code, out = _audit_verify(run_copy, capsys)
    assert code == 1 and "differs in: access.tokens" in out


def test_the_last_round_erased_with_its_checkpoint_is_not_resumed(run_copy: Path) -> None:
    audit = sqlite3.connect(run_copy / "audit.sqlite")
    audit.execute("DROP TRIGGER entries_append_only_delete")
    audit.execute("DELETE FROM entries WHERE round >= ?", (ROUNDS,))
    seq, digest = audit.execute("SELECT seq, hash FROM entries ORDER BY seq DESC").fetchone()
    audit.commit()
    audit.close()
    db = sqlite3.connect(run_copy / "checkpoints.sqlite")
    db.execute("DELETE FROM checkpoints WHERE round = ?", (ROUNDS,))
    db.execute(
        "UPDATE meta SET value = ? WHERE key = 'audit_head'",
        (json.dumps({"seq": seq, "hash": digest}),),
    )
    db.commit()
    db.close()
    with pytest.raises(CheckpointError, match=r"audit log .* fails verification"):
        _resume(run_copy).close()


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"defense.aggregator": "fedavg"}, "defense.aggregator"),
        ({"access.tokens": "/elsewhere/tokens.sqlite"}, "access.tokens"),
        ({"alerts.enabled": True, "alerts.webhook_url": "https://x.test/h"}, "alerts.enabled"),
        ({"monitoring.dashboard_address": "0.0.0.0:8321"}, "monitoring.dashboard_address"),
        ({"network.rate_per_s": 1e6}, "network.rate_per_s"),
    ],
)
def test_a_resume_given_another_config_is_refused_naming_the_keys(
    finished_run: tuple[Path, RunConfig],
    run_copy: Path,
    change: dict[str, Any],
    named: str,
) -> None:
    given = finished_run[1].with_overrides(change)
    with pytest.raises(CheckpointError, match=f"differs in: .*{named}"):
        Simulation(given, run_copy, _resuming=True).close()


def test_a_resume_may_change_the_allow_listed_keys(
    finished_run: tuple[Path, RunConfig], run_copy: Path
) -> None:
    given = finished_run[1].with_overrides(
        {"rounds": ROUNDS + 2, "simulation.workers": 0, "network.address": "127.0.0.1:50999"}
    )
    with Simulation(given, run_copy, _resuming=True) as sim:
        result = sim.run()
    assert [r["round"] for r in result.records] == list(range(1, ROUNDS + 3))


def test_config_identity_covers_every_security_table() -> None:
    base = RunConfig()
    for change in (
        {"access.tokens": "t.sqlite"},
        {"alerts.enabled": True},
        {"network.rate_per_s": 1.0},
        {"monitoring.metrics_address": "127.0.0.1:9464"},
        {"governance.audit": False},
        {"defense.aggregator": "median"},
        {"secure_aggregation.mode": "secagg"},
    ):
        assert base.with_overrides(change).config_identity() != base.config_identity(), change
    for change in ({"rounds": 99}, {"simulation.workers": 3}, {"network.address": "0.0.0.0:1"}):
        assert base.with_overrides(change).config_identity() == base.config_identity(), change
    # what the identity is: a hash of the config, not of anything else
    assert len(base.config_identity()) == len(hashlib.sha256().hexdigest())


def test_a_crash_between_checkpoint_and_audit_is_recovered_on_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not an attack: the server died after checkpointing round 2 and before auditing it."""
    from fedfort.audit import AuditTrail, read_entries, verify_run

    original = AuditTrail.on_commit

    def dies_in_round_2(self: AuditTrail, engine: Any, record: Any) -> None:
        if record.round == 2:
            raise KeyboardInterrupt("the server was killed")
        original(self, engine, record)

    out = tmp_path / "run"
    config = _config(tmp_path / "tokens.sqlite")
    monkeypatch.setattr(AuditTrail, "on_commit", dies_in_round_2)
    with Simulation(config, out_dir=out) as sim, pytest.raises(KeyboardInterrupt):
        sim.run()
    monkeypatch.setattr(AuditTrail, "on_commit", original)
    assert not verify_run(out).ok  # round 2 is checkpointed but not audited
    with Simulation.resume(out, rounds=3) as sim:
        sim.run()
    result = verify_run(out)
    assert result.ok, result.describe()
    entries = list(read_entries(out / "audit.sqlite"))
    assert [e.round for e in entries if e.kind == "model_version"] == [1, 2, 3]
    assert [e.round for e in entries if e.kind == "round_recovered"] == [2]
