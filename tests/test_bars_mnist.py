"""Bars for the MNIST red-team matrix (examples/redteam-mnist.toml: 28x28 MNIST, the small CNN,
10 clients with Dirichlet(0.5) label skew, 2 malicious clients, 5 rounds, seed 0): every attack
of the matrix hurts undefended FedAvg, and Multi-Krum holds against each of them.

The cells run are exactly those of the shipped config, so what the tests assert is what
`fedfort redteam --config examples/redteam-mnist.toml` reports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bars import bar_summary
from fedfort.redteam import load_redteam_config

pytestmark = pytest.mark.slow

CONFIG = Path(__file__).resolve().parents[1] / "examples" / "redteam-mnist.toml"
UNTARGETED = ("label_flip", "sign_flip", "gaussian_noise")
BACKDOOR = "backdoor_boosted"
HOLDS = "multi_krum"  # the shipped defence that holds against every attack of the matrix
MARGIN = 0.03  # a defence holds within 3 points of clean FedAvg ...
ASR_LIMIT = 0.10  # ... and keeps backdoor success at or below 10%


@pytest.fixture(scope="module")
def rows() -> dict[tuple[str, str], dict[str, Any]]:
    pairs = [(a, d) for a in (*UNTARGETED, BACKDOOR) for d in ("fedavg", HOLDS)]
    return bar_summary(pairs, CONFIG, own_baselines=False)


def test_the_bars_cover_every_attack_of_the_matrix() -> None:
    cfg = load_redteam_config(CONFIG)
    assert set(cfg.attacks) == {*UNTARGETED, BACKDOOR}
    assert (cfg.tolerance, cfg.asr_limit) == (MARGIN, ASR_LIMIT)


def test_clean_fedavg_learns_mnist(rows) -> None:
    assert rows[("none", "fedavg")]["accuracy_mean"] >= 0.85


@pytest.mark.parametrize(("attack", "least_drop"), [("sign_flip", 0.5), ("gaussian_noise", 0.5)])
def test_byzantine_updates_wreck_undefended_fedavg(rows, attack: str, least_drop: float) -> None:
    assert rows[(attack, "fedavg")]["drop_vs_fedavg_mean"] >= least_drop


def test_label_flipping_costs_undefended_fedavg_accuracy(rows) -> None:
    assert rows[("label_flip", "fedavg")]["drop_vs_fedavg_mean"] >= 0.05


def test_the_boosted_backdoor_is_planted_silently_in_undefended_fedavg(rows) -> None:
    row = rows[(BACKDOOR, "fedavg")]
    assert row["backdoor_asr_mean"] >= 0.8  # triggered non-0 digits read as 0
    assert row["drop_vs_fedavg_mean"] <= MARGIN  # clean accuracy does not give it away


@pytest.mark.parametrize("attack", [*UNTARGETED, BACKDOOR])
def test_multi_krum_holds_within_the_margin_of_clean_fedavg(rows, attack: str) -> None:
    assert rows[(attack, HOLDS)]["drop_vs_fedavg_mean"] <= MARGIN


def test_multi_krum_stops_the_backdoor(rows) -> None:
    assert rows[(BACKDOOR, HOLDS)]["backdoor_asr_mean"] <= ASR_LIMIT
