"""`fedfort redteam privacy`: the CLI, its config, the report, and the privacy bars.

The bars run the shipped example's overfit target (examples/redteam-privacy.toml: digits,
5 clients of about 36 rows each, 100 full-batch local epochs, 3 rounds) on fedfort's real
federation, three seeds, seeded noise, Student-t 95% intervals over the seeds:

- without a defence, LiRA on the final global model has AUC with a lower CI bound > 0.55, and
  the curious server's loss-change attack on round 1's updates too;
- with central DP-FedAvg at epsilon 10 (delta 1e-5, from fedfort's accountant) every attack
  on the final model falls to a mean AUC <= 0.55, at least 0.1 below the undefended LiRA;
- with local DP (10 per round, composed by the accountant) the update attack falls to <= 0.55;
- with secure aggregation the update attack falls below the undefended lower bound, while
  the final model's leak is untouched (secure aggregation hides updates, not the model);
- central DP leaves the update attack where it was (the server sees the update first).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fedfort.cli import main
from fedfort.errors import ConfigError
from fedfort.redteam.privacy import load_privacy_redteam_config
from fedfort.redteam.privacy_membership import MembershipSettings, evaluate_membership

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "redteam-privacy.toml"

TINY = """
seeds = [0]

[base]
rounds = 2
data = { dataset = "digits", partition = "iid", test_fraction = 0.9 }
model = { name = "logreg" }
clients = { count = 3, epochs = 5, batch_size = 0, lr = 0.5 }

[defenses.none]

[defenses.secure_aggregation]
secure_aggregation = { mode = "secagg", dropout_fraction = 0.0 }  # 3 clients: no dropout slack

[defenses.local_dp]
privacy = { mode = "local", local_epsilon = 4.0, secure_noise = false }

[membership]
shadows = 2
update_round = 1

[inversion]
trials = 1
defences = ["none", "secure_aggregation", "central_dp"]
secure_clients = 3
lbfgs_iterations = 5
adam_iterations = 5
attacks = ["idlg"]
"""


def test_cli_writes_privacy_json_and_both_reports(tmp_path, capsys) -> None:
    config = tmp_path / "privacy.toml"
    config.write_text(TINY)
    out = tmp_path / "out"
    assert main(["redteam", "privacy", "--config", str(config), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "membership AUC" in printed and "report.html" in printed

    body = json.loads((out / "privacy.json").read_text())
    rows = body["membership"]["rows"]
    assert set(rows) == {"none", "secure_aggregation", "local_dp"}
    assert rows["none"]["server_sees"] == "individual update"
    assert rows["secure_aggregation"]["server_sees"] == "aggregate"
    assert rows["local_dp"]["epsilon"]["mean"] > 0 and rows["none"]["epsilon"] is None
    assert rows["local_dp"]["kind"] == "local_dp"
    for row in rows.values():
        assert set(row["global_model"]) == {"loss_threshold", "lira_online", "lira_offline"}
        assert 0 <= row["client_update"]["loss_change"]["auc"]["mean"] <= 1
    assert [r["defence"] for r in body["inversion"]["rows"]] == [
        "none",
        "secure_aggregation",
        "central_dp",
    ]

    md = (out / "report.md").read_text()
    for heading in (
        "Leakage per defence, both attacks",
        "Membership inference on the final global model",
        "Membership inference on client updates (round 1)",
        "Gradient inversion of one client's update",
        "Original vs reconstructed images",
    ):
        assert heading in md
    assert "Central DP does not hide an update from the server that adds the noise" in md
    assert "SSIM" in md and "TPR@1%FPR" in md
    assert (out / "inversion_grid.png").read_bytes()[:4] == b"\x89PNG"

    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 1
    assert 'src="inversion_grid.png"' not in page  # self-contained
    assert "lira_online AUC" in page and "PSNR (dB)" in page


def test_plain_redteam_command_still_needs_its_config(capsys) -> None:
    assert main(["redteam"]) == 2
    assert "needs --config" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["redteam", "privacy"])  # --config is required


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("shadows = 2", "shadows = 3", "even"),
        ("shadows = 2", "shadow = 2", "membership.shadow"),
        ("[membership]", '[defenses.bad]\nprivacy = { mode = "central" }\n[membership]', "'bad'"),
        ("trials = 1", "trials = 1\nno_such_field = 1", "inversion"),
        ("trials = 1", "trials = 0", "trials"),
        ("update_round = 1", "update_round = 3", "update_round = 3"),
    ],
)
def test_bad_configs_are_refused_before_anything_runs(tmp_path, old, new, message) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(TINY.replace(old, new))
    with pytest.raises(ConfigError, match=message):
        load_privacy_redteam_config(path)
    out = tmp_path / "out"
    assert main(["redteam", "privacy", "--config", str(path), "--out", str(out)]) == 2
    assert not out.exists()


def test_the_shipped_example_is_valid() -> None:
    cfg = load_privacy_redteam_config(EXAMPLE)
    assert "none" in cfg.defenses and len(cfg.seeds) >= 3


@pytest.fixture(scope="module")
def bars() -> dict[str, Any]:
    cfg = load_privacy_redteam_config(EXAMPLE)
    seeded = {"privacy": {"secure_noise": False}}

    def defence(name: str) -> dict[str, Any]:
        body = dict(cfg.defenses[name])
        if "privacy" in body:
            body["privacy"] = {**body["privacy"], **seeded["privacy"]}
        return body

    names = ("none", "central_dp_eps10", "local_dp_eps10", "secure_aggregation")
    result = evaluate_membership(
        cfg.base,
        {n: defence(n) for n in names},
        cfg.seeds,
        MembershipSettings(shadows=cfg.membership.shadows, update_round=1),
    )
    rows: dict[str, Any] = result["rows"]
    return rows


def _auc(row: dict[str, Any], target: str, attack: str) -> dict[str, float]:
    auc: dict[str, float] = row[target][attack]["auc"]
    return auc


@pytest.mark.slow
def test_membership_leaks_from_an_overfit_model_and_update_without_defences(bars) -> None:
    none = bars["none"]
    assert none["accuracy"]["mean"] > 0.85
    assert max(_auc(none, "global_model", a)["low"] for a in ("lira_online", "lira_offline")) > 0.55
    assert _auc(none, "client_update", "loss_change")["low"] > 0.55


@pytest.mark.slow
def test_central_dp_closes_the_model_leak_but_not_the_update_leak(bars) -> None:
    none, dp = bars["none"], bars["central_dp_eps10"]
    assert 0.99 * 10 <= dp["epsilon"]["mean"] <= 10.0  # from the accountant, via the results
    lira = max(_auc(none, "global_model", a)["mean"] for a in ("lira_online", "lira_offline"))
    for attack in ("loss_threshold", "lira_online", "lira_offline"):
        assert _auc(dp, "global_model", attack)["mean"] <= 0.55
        assert _auc(dp, "global_model", attack)["mean"] <= lira - 0.1
    # the server that adds central noise reads the raw update first
    assert _auc(dp, "client_update", "loss_change")["mean"] == pytest.approx(
        _auc(none, "client_update", "loss_change")["mean"]
    )


@pytest.mark.slow
def test_local_dp_and_secure_aggregation_close_the_update_leak(bars) -> None:
    none, local, secure = bars["none"], bars["local_dp_eps10"], bars["secure_aggregation"]
    undefended = _auc(none, "client_update", "loss_change")
    assert _auc(local, "client_update", "loss_change")["mean"] <= 0.55
    assert local["epsilon"]["mean"] > 10  # ten per round, composed over the rounds
    assert secure["server_sees"] == "aggregate"
    assert _auc(secure, "client_update", "loss_change")["mean"] < undefended["low"]
    # secure aggregation hides updates, not the model every client receives (its fixed-point
    # encoding rounds with OS randomness, so the model differs from plain FedAvg by ~1e-7)
    assert _auc(secure, "global_model", "lira_offline")["mean"] == pytest.approx(
        _auc(none, "global_model", "lira_offline")["mean"], abs=0.005
    )


@pytest.mark.parametrize(
    "kwargs", [{"shadows": 3}, {"shadows": -2}, {"fpr": 0.0}, {"level": 1.0}, {"update_round": 0}]
)
def test_membership_settings_refuse_bad_values(kwargs) -> None:
    with pytest.raises(ConfigError):
        MembershipSettings(**kwargs)
