"""Bars for gradient inversion by a curious server, over 10 digits images (10 seeds).

The attack works without a defence and against clipping alone; local DP at a per-round
epsilon <= 8 and secure aggregation with distributed DP bring it down to noise; secure
aggregation alone over 10 single-image clients does *not* (the measured finding, asserted
too). Every row's reconstruction is the best of DLG, iDLG and Inverting Gradients, chosen by
its SSIM against the true image -- the attacker's best case.
"""

from __future__ import annotations

import numpy as np
import pytest

from fedfort.attacks.inference.inversion_results import LEAK_PSNR_DB, LEAK_SSIM, DefenceRow
from fedfort.redteam.privacy_inversion import InversionExperiment, evaluate_inversion_defences

pytestmark = pytest.mark.slow

TRIALS = 10


@pytest.fixture(scope="module")
def undefended() -> DefenceRow:
    exp = InversionExperiment(trials=TRIALS, defences=("none",), attacks=("dlg", "idlg"))
    (row,) = evaluate_inversion_defences(exp).rows
    return row


@pytest.fixture(scope="module")
def defended() -> dict[str, DefenceRow]:
    exp = InversionExperiment(
        trials=TRIALS,
        defences=("clipping", "local_dp", "secure_aggregation", "secure_distributed_dp"),
        local_epsilons=(8.0,),
        distributed_epsilons=(8.0,),
        secure_clients=10,
    )
    return {row.defence: row for row in evaluate_inversion_defences(exp).rows}


def _noise_level(row: DefenceRow) -> None:
    """The reconstructions are no better than noise and identify no client's image."""
    assert len(row.trials) == TRIALS
    assert row.leak_count == 0
    assert row.mean_ssim <= 0.2
    for trial in row.trials:
        assert trial.psnr < LEAK_PSNR_DB and trial.ssim < LEAK_SSIM
        # no closer to the client's digit than to some digit that was in no update
        assert trial.ssim < trial.reference_ssim


def test_dlg_or_idlg_rebuild_8_of_10_undefended_images(undefended):
    rebuilt = 0
    for trial in undefended.trials:
        scores = [trial.per_attack[name] for name in ("dlg", "idlg")]
        rebuilt += any(
            (s["psnr"] >= LEAK_PSNR_DB or s["ssim"] >= LEAK_SSIM) and s["label_correct"] == 1.0
            for s in scores
        )
    assert rebuilt >= 8
    assert undefended.leak_count >= 8 and undefended.label_accuracy == 1.0
    assert len({t.image_index for t in undefended.trials}) == TRIALS


def test_clipping_alone_does_not_stop_the_attack(undefended, defended):
    clipped = defended["clipping"]
    assert clipped.leak_count >= 8
    assert clipped.mean_ssim >= 0.9
    # clipping did change what the server sees: L2 matching (iDLG) at the wrong scale now
    # fails, while cosine matching (Inverting Gradients) ignores the scale
    idlg = np.array([t.per_attack["idlg"]["ssim"] for t in clipped.trials])
    cosine = np.array([t.per_attack["inverting_gradients"]["ssim"] for t in clipped.trials])
    assert idlg.mean() < 0.8 <= cosine.mean()
    assert undefended.leak_count >= 8


def test_local_dp_at_epsilon_8_brings_the_attack_to_noise(undefended, defended):
    row = defended["local_dp"]
    assert row.epsilon is not None and row.epsilon <= 8.0
    _noise_level(row)
    assert undefended.leak_count >= 8  # the same images leak without it


def test_secure_aggregation_with_distributed_dp_brings_the_attack_to_noise(defended):
    row = defended["secure_distributed_dp"]
    assert row.epsilon is not None and row.epsilon <= 8.0
    assert row.parameters["clients"] == 10
    _noise_level(row)


def test_secure_aggregation_alone_blurs_but_does_not_hide_ten_single_image_clients(
    undefended, defended
):
    row = defended["secure_aggregation"]
    assert row.parameters["clients"] == 10
    # no client's image comes back exactly any more ...
    assert all(t.psnr < LEAK_PSNR_DB for t in row.trials)
    assert row.leak_count <= 2 < undefended.leak_count
    # ... but the reconstructions are digits, not noise: secure aggregation alone does not
    # meet the noise bar for single-image clients (see docs/gradient-inversion.md)
    assert row.mean_ssim > 0.2 > row.mean_baseline_ssim
    assert all(t.best_in_sum_ssim is not None for t in row.trials)
