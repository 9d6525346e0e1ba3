"""Bars for untargeted poisoning on the shipped matrix (digits, MLP, 20 clients, Dirichlet(0.5),
4 malicious clients, 30 rounds, seeds 0-2): the attacks are real and the defences hold.

Means are over the three seeds, as `fedfort redteam` reports them.
"""

from __future__ import annotations

from typing import Any

import pytest

from bars import bar_summary

pytestmark = pytest.mark.slow

UNTARGETED = ("sign_flip", "gaussian_noise", "alie_z1_5", "ipm", "min_max", "min_sum", "label_flip")
BEST = "detect_reputation"  # the best shipped defence against every attack of this module
HURT = "multi_krum"  # a robust aggregator ALIE and Min-Max measurably hurt


@pytest.fixture(scope="module")
def rows() -> dict[tuple[str, str], dict[str, Any]]:
    pairs = [(a, BEST) for a in UNTARGETED]
    pairs += [("sign_flip", "fedavg"), ("gaussian_noise", "fedavg")]
    pairs += [("alie_z1_5", HURT), ("min_max", HURT)]
    return bar_summary(pairs)


@pytest.mark.parametrize("attack", ["sign_flip", "gaussian_noise"])
def test_undefended_fedavg_loses_at_least_50_points(rows, attack: str) -> None:
    assert rows[(attack, "fedavg")]["drop_vs_fedavg_mean"] >= 0.50


@pytest.mark.parametrize("attack", UNTARGETED)
def test_best_defence_stays_within_3_points_of_clean_fedavg(rows, attack: str) -> None:
    assert rows[(attack, BEST)]["drop_vs_fedavg_mean"] <= 0.03


@pytest.mark.parametrize("attack", ["alie_z1_5", "min_max"])
def test_alie_and_min_max_measurably_hurt_a_robust_aggregator(rows, attack: str) -> None:
    row = rows[(attack, HURT)]
    assert row["accuracy_drop_mean"] > 0.03  # against multi-Krum's own no-attack run


@pytest.mark.parametrize("attack", ["sign_flip", "gaussian_noise"])
def test_detection_finds_the_attackers_and_reputation_quarantines_only_them(
    rows, attack: str
) -> None:
    row = rows[(attack, BEST)]
    assert row["detection_precision_mean"] >= 0.9
    assert row["detection_recall_mean"] >= 0.9
    assert row["first_quarantine_round_max"] is not None
    assert row["first_quarantine_round_max"] <= 5
    assert row["honest_quarantined_at_end_max"] == 0
