"""Bars for backdoors on the shipped matrix (digits, MLP, 20 clients, Dirichlet(0.5), 4
malicious clients with a 3x3 trigger, 30 rounds, seeds 0-2): plain and boosted poisoning plant
the backdoor under FedAvg, and a shipped defence stops each without costing clean accuracy.
"""

from __future__ import annotations

from typing import Any

import pytest

from bars import bar_summary

pytestmark = pytest.mark.slow

BEST = {"backdoor": "trimmed_mean", "backdoor_boosted": "detect_reputation"}


@pytest.fixture(scope="module")
def rows() -> dict[tuple[str, str], dict[str, Any]]:
    pairs = [(a, "fedavg") for a in BEST] + list(BEST.items())
    return bar_summary(pairs)


@pytest.mark.parametrize("attack", list(BEST))
def test_backdoor_succeeds_against_fedavg(rows, attack: str) -> None:
    assert rows[(attack, "fedavg")]["backdoor_asr_mean"] >= 0.9


@pytest.mark.parametrize(("attack", "defense"), list(BEST.items()))
def test_best_defence_stops_the_backdoor_and_keeps_clean_accuracy(
    rows, attack: str, defense: str
) -> None:
    row = rows[(attack, defense)]
    assert row["backdoor_asr_mean"] <= 0.10
    assert row["drop_vs_fedavg_mean"] <= 0.03


def test_detection_catches_boosted_backdoors(rows) -> None:
    row = rows[("backdoor_boosted", "detect_reputation")]
    assert row["detection_precision_mean"] >= 0.9
    assert row["detection_recall_mean"] >= 0.9
    assert row["first_quarantine_round_max"] is not None
    assert row["first_quarantine_round_max"] <= 5
    assert row["honest_quarantined_at_end_max"] == 0
