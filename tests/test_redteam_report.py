"""Red-team summary (means, drops, verdicts) and report files, on synthetic cells."""

from __future__ import annotations

import statistics
from typing import Any

import pytest

from fedfort.redteam.report import write_report
from fedfort.redteam.summary import summarize

ATTACKS = ["none", "sign_flip", "backdoor"]
DEFENSES = ["fedavg", "median", "multi_krum+detect"]
KINDS = {"none": "none", "sign_flip": "untargeted", "backdoor": "backdoor"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# (attack, defense) -> accuracy per seed (seeds 0 and 1)
ACCURACY: dict[tuple[str, str], tuple[float, float]] = {
    ("none", "fedavg"): (0.90, 0.92),
    ("none", "median"): (0.89, 0.91),
    ("none", "multi_krum+detect"): (0.90, 0.90),
    ("sign_flip", "fedavg"): (0.10, 0.12),
    ("sign_flip", "median"): (0.84, 0.86),
    ("sign_flip", "multi_krum+detect"): (0.89, 0.91),
    ("backdoor", "fedavg"): (0.90, 0.90),
    ("backdoor", "median"): (0.80, 0.82),
    ("backdoor", "multi_krum+detect"): (0.89, 0.91),
}
ASR: dict[tuple[str, str], tuple[float, float]] = {
    ("backdoor", "fedavg"): (0.95, 0.85),
    ("backdoor", "median"): (0.02, 0.04),
    ("backdoor", "multi_krum+detect"): (0.06, 0.08),
}


def make_cells(
    accuracy: dict[tuple[str, str], tuple[float, float]] = ACCURACY,
    asr: dict[tuple[str, str], tuple[float, float]] = ASR,
) -> list[dict[str, Any]]:
    cells = []
    for (attack, defense), values in accuracy.items():
        for seed, acc in enumerate(values):
            detect = defense == "multi_krum+detect"
            cells.append(
                {
                    "attack": attack,
                    "attack_kind": KINDS[attack],
                    "defense": defense,
                    "seed": seed,
                    "accuracy": acc,
                    "backdoor_asr": asr[(attack, defense)][seed] if attack == "backdoor" else None,
                    "detection_precision": (0.8, 1.0)[seed] if detect else None,
                    "detection_recall": 1.0 if detect else None,
                    "malicious_quarantined": (2, 3)[seed] if detect else None,
                    "first_quarantine_round": (4, None)[seed] if detect else None,
                    "honest_quarantined_at_end": (0, 1)[seed] if detect else None,
                    "duration_s": 1.5,
                }
            )
    return cells


def rows_by_key(summary: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["attack"], r["defense"]): r for r in summary["rows"]}


def verdict(summary: dict[str, Any], attack: str) -> dict[str, Any]:
    return next(v for v in summary["verdicts"] if v["attack"] == attack)


@pytest.fixture
def summary() -> dict[str, Any]:
    return summarize(make_cells(), attacks=ATTACKS, defenses=DEFENSES)


def test_rows_follow_the_given_order_with_means_and_sample_stds(summary) -> None:
    keys = [(r["attack"], r["defense"]) for r in summary["rows"]]
    assert keys == [(a, d) for a in ATTACKS for d in DEFENSES]
    assert summary["attacks"] == ATTACKS and summary["defenses"] == DEFENSES
    assert (summary["tolerance"], summary["asr_limit"]) == (0.03, 0.10)
    row = rows_by_key(summary)[("none", "fedavg")]
    assert row["seeds"] == 2 and row["attack_kind"] == "none"
    assert row["accuracy_mean"] == pytest.approx(0.91)
    assert row["accuracy_std"] == pytest.approx(statistics.stdev([0.90, 0.92]))
    assert row["backdoor_asr_mean"] is None and row["backdoor_asr_std"] is None
    assert row["detection_precision_mean"] is None and row["malicious_quarantined_mean"] is None
    assert row["honest_quarantined_at_end_max"] is None
    assert row["first_quarantine_round_max"] is None
    backdoor = rows_by_key(summary)[("backdoor", "fedavg")]
    assert backdoor["backdoor_asr_mean"] == pytest.approx(0.90)
    assert backdoor["backdoor_asr_std"] == pytest.approx(statistics.stdev([0.95, 0.85]))


def test_detection_and_quarantine_aggregates(summary) -> None:
    row = rows_by_key(summary)[("sign_flip", "multi_krum+detect")]
    assert row["detection_precision_mean"] == pytest.approx(0.9)
    assert row["detection_recall_mean"] == pytest.approx(1.0)
    assert row["detection_recall_std"] == pytest.approx(0.0)
    assert row["malicious_quarantined_mean"] == pytest.approx(2.5)
    assert row["honest_quarantined_at_end_max"] == 1
    assert row["first_quarantine_round_max"] is None  # seed 1 never quarantined them all
    cells = [c for c in make_cells() if c["seed"] == 0]
    one_seed = rows_by_key(summarize(cells, attacks=ATTACKS, defenses=DEFENSES))
    row = one_seed[("sign_flip", "multi_krum+detect")]
    assert row["seeds"] == 1 and row["accuracy_std"] == 0.0
    assert row["first_quarantine_round_max"] == 4


def test_drops_are_paired_by_seed(summary) -> None:
    rows = rows_by_key(summary)
    median = rows[("sign_flip", "median")]
    assert median["accuracy_drop_mean"] == pytest.approx(0.05)  # vs none/median
    assert median["drop_vs_fedavg_mean"] == pytest.approx(0.06)  # vs none/fedavg
    assert rows[("sign_flip", "fedavg")]["drop_vs_fedavg_mean"] == pytest.approx(0.80)
    assert rows[("none", "median")]["accuracy_drop_mean"] == pytest.approx(0.0)
    assert rows[("none", "median")]["drop_vs_fedavg_mean"] == pytest.approx(0.01)


def test_drops_are_none_without_reference_runs() -> None:
    cells = [c for c in make_cells() if c["attack"] != "none"]
    rows = rows_by_key(summarize(cells, attacks=ATTACKS, defenses=DEFENSES))
    assert rows[("sign_flip", "median")]["accuracy_drop_mean"] is None
    assert rows[("sign_flip", "median")]["drop_vs_fedavg_mean"] is None
    cells = [c for c in make_cells() if c["defense"] != "fedavg"]
    summary = summarize(cells, attacks=ATTACKS, defenses=DEFENSES)
    median = rows_by_key(summary)[("sign_flip", "median")]
    assert median["drop_vs_fedavg_mean"] is None
    assert median["accuracy_drop_mean"] == pytest.approx(0.05)
    flip = verdict(summary, "sign_flip")
    assert flip["undefended_accuracy"] is None and flip["undefended_asr"] is None
    # Without FedAvg, survival falls back to the drop against the defence's own no-attack run.
    assert flip["best_defense"] == "multi_krum+detect" and flip["survives"] is True


def test_untargeted_verdict_picks_the_most_accurate_defence(summary) -> None:
    assert [v["attack"] for v in summary["verdicts"]] == ["sign_flip", "backdoor"]
    flip = verdict(summary, "sign_flip")
    assert flip["attack_kind"] == "untargeted"
    assert flip["best_defense"] == "multi_krum+detect"
    assert flip["survives"] is True
    assert flip["surviving_defenses"] == ["multi_krum+detect"]
    assert flip["hurt_defenses"] == ["median"]  # fedavg is never listed
    assert flip["undefended_accuracy"] == pytest.approx(0.11)
    assert flip["undefended_asr"] is None


def test_nothing_survives_an_overwhelming_attack() -> None:
    accuracy = dict(ACCURACY)
    accuracy[("sign_flip", "median")] = (0.50, 0.52)
    accuracy[("sign_flip", "multi_krum+detect")] = (0.70, 0.74)
    summary = summarize(make_cells(accuracy), attacks=ATTACKS, defenses=DEFENSES)
    flip = verdict(summary, "sign_flip")
    assert flip["best_defense"] == "multi_krum+detect"
    assert flip["survives"] is False
    assert flip["surviving_defenses"] == []
    assert flip["hurt_defenses"] == ["median", "multi_krum+detect"]


def test_backdoor_verdict_respects_the_accuracy_tolerance(summary) -> None:
    door = verdict(summary, "backdoor")
    # median has the lowest ASR (0.03) but loses 10 points of accuracy: excluded.
    assert door["best_defense"] == "multi_krum+detect"
    assert door["survives"] is True
    assert door["surviving_defenses"] == ["multi_krum+detect"]
    assert door["hurt_defenses"] == ["median"]
    assert door["undefended_accuracy"] == pytest.approx(0.90)
    assert door["undefended_asr"] == pytest.approx(0.90)


def test_backdoor_verdict_when_the_asr_stays_high() -> None:
    asr = dict(ASR)
    asr[("backdoor", "multi_krum+detect")] = (0.20, 0.30)
    summary = summarize(make_cells(asr=asr), attacks=ATTACKS, defenses=DEFENSES)
    door = verdict(summary, "backdoor")
    assert door["best_defense"] == "multi_krum+detect"
    assert door["survives"] is False
    assert door["surviving_defenses"] == []
    assert door["hurt_defenses"] == ["median", "multi_krum+detect"]


def test_backdoor_verdict_falls_back_to_the_lowest_asr() -> None:
    accuracy = dict(ACCURACY)
    accuracy[("backdoor", "multi_krum+detect")] = (0.70, 0.72)
    accuracy[("backdoor", "fedavg")] = (0.60, 0.60)
    summary = summarize(make_cells(accuracy), attacks=ATTACKS, defenses=DEFENSES)
    door = verdict(summary, "backdoor")
    assert door["best_defense"] == "median"
    assert door["survives"] is False


def test_invalid_cells_raise_value_error() -> None:
    cells = make_cells()
    del cells[3]["backdoor_asr"]
    with pytest.raises(ValueError, match="backdoor_asr"):
        summarize(cells, attacks=ATTACKS, defenses=DEFENSES)
    with pytest.raises(ValueError, match="krum"):
        summarize(make_cells(), attacks=ATTACKS, defenses=["fedavg", "median"])
    with pytest.raises(ValueError, match="backdoor"):
        summarize(make_cells(), attacks=["none", "sign_flip"], defenses=DEFENSES)
    with pytest.raises(ValueError, match="duplicate"):
        summarize([*make_cells(), make_cells()[0]], attacks=ATTACKS, defenses=DEFENSES)


def test_write_report_writes_every_file(summary, tmp_path) -> None:
    out = tmp_path / "report"
    meta = {"dataset": "digits", "rounds": 5, "seeds": 2}
    paths = write_report(summary, make_cells(), out, meta=meta)
    assert set(paths) == {
        "markdown",
        "html",
        "heatmap_accuracy",
        "heatmap_accuracy_drop",
        "heatmap_backdoor_asr",
    }
    assert all(p.parent == out and p.is_file() for p in paths.values())
    for name in ("heatmap_accuracy", "heatmap_accuracy_drop", "heatmap_backdoor_asr"):
        assert paths[name].read_bytes().startswith(PNG_MAGIC)
    markdown = paths["markdown"].read_text(encoding="utf-8")
    assert markdown.startswith("# fedfort red-team report")
    assert "- dataset: digits" in markdown and "- rounds: 5" in markdown
    assert (
        "| sign_flip | untargeted | 0.110 | multi_krum+detect | 0.900 | — | yes | median |"
        in markdown
    )
    assert "| backdoor | backdoor | 0.900 | multi_krum+detect | 0.900 | 0.070 | yes | median |" in (
        markdown
    )
    assert "0.910 ± 0.014" in markdown  # none/fedavg accuracy
    assert "| sign_flip | 80.0 | 6.0 | 1.0 |" in markdown  # drop vs no-attack FedAvg
    assert "## Backdoor attack success" in markdown and "## Detection" in markdown
    assert "| sign_flip | multi_krum+detect | 0.900 | 1.000 | 2.5 | — | 1 |" in markdown
    for png in ("heatmap_accuracy.png", "heatmap_accuracy_drop.png", "heatmap_backdoor_asr.png"):
        assert f"]({png})" in markdown
    page = paths["html"].read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert '<img src="heatmap_accuracy.png"' in page
    assert "<table>" in page and "<td>multi_krum+detect</td>" in page
    assert "<script" not in page and "http" not in page


def test_html_escapes_labels_and_no_backdoor_heatmap_without_backdoors(tmp_path) -> None:
    cells = [c for c in make_cells() if c["attack"] != "backdoor"]
    for cell in cells:
        if cell["defense"] == "median":
            cell["defense"] = "a<b&c"
    summary = summarize(cells, attacks=ATTACKS, defenses=["fedavg", "a<b&c", "multi_krum+detect"])
    paths = write_report(summary, cells, tmp_path, title="T <&>")
    assert "heatmap_backdoor_asr" not in paths
    assert not (tmp_path / "heatmap_backdoor_asr.png").exists()
    page = paths["html"].read_text(encoding="utf-8")
    assert "a&lt;b&amp;c" in page and "a<b&c" not in page
    assert "<title>T &lt;&amp;&gt;</title>" in page
    markdown = paths["markdown"].read_text(encoding="utf-8")
    assert "## Backdoor attack success" not in markdown
    assert "heatmap_backdoor_asr.png" not in markdown and "heatmap_backdoor_asr.png" not in page


def test_empty_matrix_writes_only_the_documents(tmp_path) -> None:
    summary = summarize([], attacks=ATTACKS, defenses=DEFENSES)
    assert summary["rows"] == [] and summary["verdicts"] == []
    paths = write_report(summary, [], tmp_path)
    assert set(paths) == {"markdown", "html"}
    assert "- runs: 0" in paths["markdown"].read_text(encoding="utf-8")
