"""Membership inference building blocks: metrics, intervals, LiRA's fit and scores, shadows."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch.nn import functional as F  # noqa: N812

from fedfort.attacks.inference import (
    fit_lira,
    lira_scores,
    logit_confidence,
    loss_change_scores,
    membership_metrics,
    per_example_loss,
    t_interval,
    train_shadow_models,
)
from fedfort.attacks.inference.shadow_models import balanced_halves
from fedfort.client.training import LocalTrainer
from fedfort.data.datasets import load_dataset
from fedfort.errors import ConfigError
from fedfort.messages import LocalTrainingConfig
from fedfort.models import ModelSpec


def test_auc_and_tpr_of_hand_made_scores() -> None:
    scores = np.array([0.1, 0.4, 0.35, 0.8])
    labels = np.array([0, 0, 1, 1])
    m = membership_metrics(scores, labels, fpr=0.01)
    assert m.auc == pytest.approx(0.75)
    # at FPR 0 only the top member (0.8) is above every non-member
    assert m.tpr_at_fpr == pytest.approx(0.5)
    assert (m.members, m.non_members) == (2, 2)
    assert membership_metrics(-scores, labels).auc == pytest.approx(0.25)
    perfect = membership_metrics(np.array([0.0, 1.0, 2.0, 3.0]), np.array([0, 0, 1, 1]))
    assert (perfect.auc, perfect.tpr_at_fpr) == (1.0, 1.0)


def test_auc_of_gaussian_scores_matches_the_closed_form() -> None:
    rng = np.random.default_rng(0)
    n, gap = 20_000, 1.0
    scores = np.r_[rng.normal(gap, 1, n), rng.normal(0, 1, n)]
    labels = np.r_[np.ones(n), np.zeros(n)]
    m = membership_metrics(scores, labels, fpr=0.01)
    # AUC = Phi(gap / sqrt 2); TPR at FPR f = 1 - Phi(Phi^-1(1 - f) - gap)
    assert m.auc == pytest.approx(stats.norm.cdf(gap / math.sqrt(2)), abs=0.01)
    assert m.tpr_at_fpr == pytest.approx(stats.norm.sf(stats.norm.isf(0.01) - gap), abs=0.02)
    chance = membership_metrics(rng.normal(0, 1, 2 * n), labels)
    assert chance.auc == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize(
    ("scores", "labels", "fpr"),
    [
        (np.zeros(3), np.array([0, 1]), 0.01),  # lengths differ
        (np.zeros(2), np.array([0, 2]), 0.01),  # not 0/1
        (np.zeros(2), np.array([1, 1]), 0.01),  # one class only
        (np.array([0.0, np.nan]), np.array([0, 1]), 0.01),  # NaN score
        (np.zeros(2), np.array([0, 1]), 0.0),  # fpr out of range
        (np.zeros((2, 1)), np.array([0, 1]), 0.01),  # not 1-D
    ],
)
def test_metrics_refuse_bad_input(scores, labels, fpr) -> None:
    with pytest.raises(ConfigError):
        membership_metrics(scores, labels, fpr)


def test_t_interval_matches_scipy_and_respects_bounds() -> None:
    values = [0.61, 0.66, 0.70]
    ci = t_interval(values, 0.95)
    low, high = stats.t.interval(
        0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values)
    )
    assert (ci.low, ci.high) == (pytest.approx(low), pytest.approx(high))
    assert ci.mean == pytest.approx(np.mean(values)) and ci.n == 3
    clipped = t_interval([0.0, 0.02, 0.01], 0.95, bounds=(0.0, 1.0))
    assert clipped.low == 0.0 and clipped.high > clipped.mean
    single = t_interval([0.7])
    assert (single.low, single.mean, single.high) == (0.7, 0.7, 0.7)
    with pytest.raises(ConfigError):
        t_interval([])
    with pytest.raises(ConfigError):
        t_interval([0.5, math.nan])
    with pytest.raises(ConfigError):
        t_interval([0.5], level=1.0)


def _toy_shadows(shadows: int, n: int, seed: int = 0):
    """phi ~ N(mu_in, 0.5) when IN and N(mu_out, 0.5) when OUT, with per-candidate means."""
    rng = np.random.default_rng(seed)
    mu_out = rng.normal(0, 2, n)
    mu_in = mu_out + rng.uniform(0.5, 2.0, n)
    mask = balanced_halves(shadows, n, seed)
    phi = np.where(mask, mu_in, mu_out) + rng.normal(0, 0.5, (shadows, n))
    return phi, mask, mu_in, mu_out


def test_lira_fit_recovers_the_per_example_gaussians() -> None:
    phi, mask, mu_in, mu_out = _toy_shadows(shadows=64, n=500)
    fit = fit_lira(phi, mask, global_variance=True)
    # 32 draws per side: errors in units of the standard error 0.5 / sqrt(32) are N(0, 1)
    for fitted, true in ((fit.mean_in, mu_in), (fit.mean_out, mu_out)):
        z = (fitted - true) / (0.5 / math.sqrt(32))
        assert np.abs(z).max() < 5 and abs(z.mean()) < 0.2 and 0.9 < z.std() < 1.1
    assert fit.std_in == pytest.approx(np.full(500, 0.5), rel=0.05)
    own = fit_lira(phi, mask, global_variance=False)
    assert np.median(own.std_out) == pytest.approx(0.5, rel=0.1)
    assert own.std_out.std() > 0  # one estimate per candidate


def test_lira_scores_are_the_gaussian_likelihood_ratio_and_separate_members() -> None:
    phi, mask, mu_in, mu_out = _toy_shadows(shadows=16, n=2000, seed=1)
    fit = fit_lira(phi, mask)
    rng = np.random.default_rng(2)
    member = rng.random(2000) < 0.5
    target = np.where(member, mu_in, mu_out) + rng.normal(0, 0.5, 2000)
    online = lira_scores(fit, target, online=True)
    expected = stats.norm.logpdf(target, fit.mean_in, fit.std_in) - stats.norm.logpdf(
        target, fit.mean_out, fit.std_out
    )
    np.testing.assert_allclose(online, expected)
    offline = lira_scores(fit, target, online=False)
    np.testing.assert_allclose(offline, stats.norm.logcdf((target - fit.mean_out) / fit.std_out))
    labels = member.astype(int)
    # per-example calibration beats the raw statistic, whose means vary across candidates
    raw = membership_metrics(target, labels).auc
    assert membership_metrics(online, labels).auc > raw + 0.1
    assert membership_metrics(offline, labels).auc > raw + 0.1


def test_lira_refuses_bad_input() -> None:
    phi, mask, _, _ = _toy_shadows(shadows=4, n=10)
    with pytest.raises(ConfigError):
        fit_lira(phi, mask.astype(int))  # mask must be boolean
    with pytest.raises(ConfigError):
        fit_lira(phi[:1], mask[:1])  # one shadow
    with pytest.raises(ConfigError):
        fit_lira(phi, np.ones_like(mask))  # no OUT model
    with pytest.raises(ConfigError):
        fit_lira(phi[:, :5], mask)  # shapes differ
    fit = fit_lira(phi, mask)
    with pytest.raises(ConfigError):
        lira_scores(fit, np.zeros(9))
    with pytest.raises(ConfigError):
        lira_scores(fit, np.full(10, np.inf))
    with pytest.raises(ConfigError):
        balanced_halves(3, 10, 0)


def test_balanced_halves_put_every_candidate_in_half_of_the_shadows() -> None:
    mask = balanced_halves(8, 300, seed=3)
    assert mask.dtype == np.bool_ and (mask.sum(axis=0) == 4).all()
    assert not np.array_equal(mask, balanced_halves(8, 300, seed=4))


def _trainer(num_classes: int = 3) -> LocalTrainer:
    return LocalTrainer(ModelSpec("logreg", 4, num_classes, {}).build(seed=0))


def test_logit_confidence_and_loss_match_their_definitions() -> None:
    trainer = _trainer()
    vector = np.random.default_rng(0).normal(0, 1, trainer.spec.dim).astype(np.float32)
    x = np.random.default_rng(1).normal(0, 1, (6, 4)).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1, 2])
    phi = logit_confidence(trainer, vector, x, y)
    with torch.no_grad():
        trainer.bound.load(vector)
        logits = trainer.model(torch.from_numpy(x)).double()
    p = torch.softmax(logits, dim=1)[torch.arange(6), torch.from_numpy(y)].numpy()
    np.testing.assert_allclose(phi, np.log(p / (1 - p)), rtol=1e-6)
    loss = per_example_loss(trainer, vector, x, y)
    expected = F.cross_entropy(logits, torch.from_numpy(y), reduction="none").numpy()
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    np.testing.assert_allclose(loss_change_scores(trainer, vector, vector, x, y), 0.0)
    with pytest.raises(ConfigError):
        per_example_loss(trainer, vector, x, y[:3])


def test_shadow_models_fit_their_in_half_better() -> None:
    data = load_dataset("digits", seed=0)
    x, y = data.x_train[:60], data.y_train[:60]
    trainer = LocalTrainer(ModelSpec("logreg", 64, 10, {}).build(seed=0))
    initial = trainer.bound.flatten()
    local = LocalTrainingConfig(epochs=20, batch_size=0, lr=0.5)
    shadows = train_shadow_models(
        trainer, initial, x, y, num_shadows=4, clients=2, rounds=1, local=local, seed=0
    )
    assert shadows.phi.shape == (4, 60) and np.isfinite(shadows.phi).all()
    assert (shadows.in_mask.sum(axis=0) == 2).all()
    assert shadows.phi[shadows.in_mask].mean() > shadows.phi[~shadows.in_mask].mean() + 0.5
    with pytest.raises(ConfigError):
        train_shadow_models(
            trainer, initial, x[:4], y[:4], num_shadows=2, clients=3, rounds=1, local=local
        )
