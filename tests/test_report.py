"""The HTML compliance report: self-contained, faithful to the run, loud about a broken audit
chain, and safe against hostile client ids and rejection details."""

from __future__ import annotations

import base64
import json
import re
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from fedfort import Simulation
from fedfort.audit import verify_run
from fedfort.audit.rollback_request import request_rollback
from fedfort.config import parse_config
from fedfort.monitoring.run_state import read_run
from fedfort.report import REPORT_FILE, build_report, write_report
from fedfort.server.versions import ModelRegistry

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PAYLOAD = "<script>alert(1)</script>"
SMALL: dict[str, dict[str, Any]] = {
    "data": {"dataset": "digits", "partition": "iid"},
    "model": {"name": "logreg"},
    "clients": {"epochs": 1, "batch_size": 0, "lr": 0.5},
    "simulation": {"workers": 0},
}


def _run(out: Path, **body: Any) -> Path:
    sections = {**SMALL, **body}
    sections["clients"] = {**SMALL["clients"], **body.get("clients", {})}
    with Simulation(parse_config(sections), out_dir=out) as sim:
        sim.run()
    return out


def _pngs(text: str) -> list[bytes]:
    return [
        base64.b64decode(m) for m in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", text)
    ]


@pytest.fixture(scope="module")
def attacked(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sign-flip attack against trimmed mean with detection and reputation."""
    return _run(
        tmp_path_factory.mktemp("attacked") / "run",
        rounds=3,
        clients={"count": 8},
        attack={"name": "sign_flip", "scale": 10.0, "fraction": 0.25},
        defense={"aggregator": "trimmed_mean", "num_byzantine": 1},
        detection={"enabled": True},
        reputation={"enabled": True},
    )


def _copy(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "copy"))


def test_report_of_an_attacked_run_is_self_contained_and_shows_the_evidence(attacked: Path) -> None:
    path = write_report(attacked)
    assert path == attacked / REPORT_FILE and path.exists()
    text = path.read_text(encoding="utf-8")
    lowered = text.lower()
    assert "<script" not in lowered
    assert "http://" not in lowered and "https://" not in lowered
    assert "<link" not in lowered and "@import" not in lowered
    assert all(
        src.startswith("data:image/png;base64,") for src in re.findall(r'src="([^"]*)"', text)
    )
    pngs = _pngs(text)
    assert len(pngs) >= 4  # accuracy, loss, reputation, detections
    assert all(png.startswith(PNG_SIGNATURE) for png in pngs)
    assert 'alt="reputation per round"' in text and 'alt="detections per round"' in text
    assert 'alt="epsilon spent per round"' not in text  # not a private run

    state = read_run(attacked)
    final = state["rounds"][-1]["accuracy"]
    assert f"{final:.4f}" in text
    audit = verify_run(attacked)
    assert audit.ok
    assert audit.head_hash in text and "verified" in text
    assert "<b>aggregation rule</b>: trimmed_mean" in text
    assert "<b>anomaly detection</b>: on" in text and "<b>reputation</b>: on" in text
    # the configuration hash recorded by the audit log matches the stored configuration
    assert state["events"][0]["body"]["config_sha256"] in text
    assert ">matches<" in text
    # every model version is listed with its hash; the config is there in full
    for model in state["models"]:
        assert model["sha256"] in text
    assert "sign_flip" in text and "FAILED" not in text
    flagged = {c["id"] for c in state["clients"] if c["flagged"]}
    assert flagged and all(cid in text for cid in flagged)


def test_report_of_a_central_dp_run_shows_the_budget_and_the_epsilon_plot(tmp_path: Path) -> None:
    run = _run(
        tmp_path / "dp",
        rounds=3,
        clients={"count": 20},
        privacy={"mode": "central", "target_epsilon": 3.0, "delta": 1e-5, "secure_noise": False},
    )
    text = build_report(run)
    spent = read_run(run)["privacy"]["epsilon_spent"]
    assert 0 < spent <= 3.0
    assert f"<b>epsilon spent</b>: {spent:.6g}" in text
    assert "<b>target epsilon</b>: 3<" in text and "<b>delta</b>: 1e-05<" in text
    assert '<b>budget respected</b>: <span class="badge ok">yes</span>' in text
    assert "the server clips every update and adds the noise" in text
    assert "<b>accountant</b>: rdp" in text
    assert 'alt="epsilon spent per round"' in text
    assert all(png.startswith(PNG_SIGNATURE) for png in _pngs(text))


def test_report_of_a_secure_aggregation_run_shows_the_mode(tmp_path: Path) -> None:
    run = _run(
        tmp_path / "sa",
        rounds=2,
        clients={"count": 5},
        secure_aggregation={"mode": "secagg+", "value_range": 2.0},
    )
    text = build_report(run)
    assert "<b>mode</b>: secagg+" in text
    assert "<b>rounds aggregated securely</b>: 2 of 2" in text
    assert "<b>protocol dropouts (total)</b>: 0" in text


def test_a_tampered_audit_log_is_reported_as_failed_at_the_edited_entry(
    attacked: Path, tmp_path: Path
) -> None:
    run = _copy(attacked, tmp_path)
    db = sqlite3.connect(run / "audit.sqlite")
    try:
        with db:
            db.execute("DROP TRIGGER entries_append_only_update")
            changed = db.execute(
                "UPDATE entries SET body = replace(body, 'client-', 'client-x') WHERE seq = 4"
            ).rowcount
    finally:
        db.close()
    assert changed == 1
    text = build_report(run)
    assert '<div class="alert">Audit log FAILED at entry 4' in text
    assert '<span class="badge bad">FAILED</span>' in text
    assert "its content does not match its hash" in text
    assert '<span class="badge ok">verified</span>' not in text


def test_an_audit_entry_edited_into_garbage_is_still_reported_as_failed(
    attacked: Path, tmp_path: Path
) -> None:
    run = _copy(attacked, tmp_path)
    db = sqlite3.connect(run / "audit.sqlite")
    try:
        with db:
            db.execute("DROP TRIGGER entries_append_only_update")
            db.execute("UPDATE entries SET body = 'not json' WHERE seq = 1")
    finally:
        db.close()
    text = build_report(run)
    assert '<div class="alert">Audit log FAILED at entry 1' in text


def test_hostile_client_ids_and_rejection_details_are_escaped(
    attacked: Path, tmp_path: Path
) -> None:
    run = _copy(attacked, tmp_path)
    db = sqlite3.connect(run / "checkpoints.sqlite")
    try:
        (text,) = db.execute("SELECT record_json FROM checkpoints WHERE round = 1").fetchone()
        record = json.loads(text)
        record["selected"].append(PAYLOAD)
        record["rejected"].append({"client_id": PAYLOAD, "reason": "bad_shape", "detail": PAYLOAD})
        record["measurements"]["detect"]["flagged"].append(PAYLOAD)
        with db:
            db.execute(
                "UPDATE checkpoints SET record_json = ? WHERE round = 1", (json.dumps(record),)
            )
    finally:
        db.close()
    with ModelRegistry(run) as registry:
        request_rollback(registry, 1, f"operator says {PAYLOAD}")

    text = build_report(run)
    assert "<script" not in text.lower()
    assert text.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 3
    assert "<b>bad_shape</b>: 1" in text  # the rejection is counted by reason
    # the operator's rollback request is audited and reported, pending until the run resumes
    assert "operator request" in text and "pending" in text


def test_write_report_takes_an_output_path(attacked: Path, tmp_path: Path) -> None:
    out = write_report(attacked, tmp_path / "filed" / "compliance.html")
    assert out == tmp_path / "filed" / "compliance.html"
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_automatic_rollbacks_and_a_missing_audit_log_are_reported(tmp_path: Path) -> None:
    run = _run(
        tmp_path / "rollback",
        rounds=4,
        clients={"count": 6},
        attack={"name": "sign_flip", "scale": 50.0, "fraction": 0.4, "start_round": 3},
        governance={"audit": False, "rollback_drop": 0.05},
    )
    rolled = [r["round"] for r in read_run(run)["rounds"] if r["rollback"]]
    assert rolled  # the boosted sign flip from round 3 wrecks the candidate models
    text = build_report(run)
    assert '<span class="badge warn">absent</span>' in text
    assert "no audit log" in text
    assert f'<span class="badge warn">{len(rolled)}</span>' in text
    assert text.count("<td>automatic</td>") == len(rolled)
    assert "automatic rollback: the model of version" in text
