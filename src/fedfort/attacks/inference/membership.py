"""Membership inference: was this sample in the training data of a model or an update?

An honest-but-curious server (or anyone who gets the final model) asks, for a candidate
sample ``(x, y)``, whether it was part of some client's training data. Two attacks:

- **Loss threshold** (Yeom, Giacomelli, Fredrikson and Jha, "Privacy Risk in Machine Learning:
  Analyzing the Connection to Overfitting", CSF 2018): members have lower loss, so the score is
  ``-loss(x, y)``. Against one client's update the server knows the model before and after
  (``w`` and ``w + delta``), and the score is the loss the update took off the sample,
  ``loss(w) - loss(w + delta)`` (:func:`loss_change_scores`).
- **LiRA**, the likelihood-ratio attack (Carlini, Chien, Nasr, Song, Terzis and Tramèr,
  "Membership Inference Attacks From First Principles", IEEE S&P 2022): shadow models trained
  on random halves of a data pool give, for every candidate, the distribution of the
  logit-scaled confidence ``phi = log(p_y / (1 - p_y))`` when the candidate was IN the
  training data and when it was OUT. Each is fitted with a Gaussian (:func:`fit_lira`);
  the *online* score is the log-likelihood ratio ``log N(phi; mu_in, s_in) - log N(phi;
  mu_out, s_out)``, the *offline* score (OUT models only) the one-sided
  ``log Pr[Z <= phi]``, ``Z ~ N(mu_out, s_out)``. Everything is vectorised over the
  candidates: a (shadows, candidates) matrix in, one score per candidate out.

:func:`membership_metrics` turns scores into ROC AUC and the TPR at a low FPR (1% by default,
the operating point LiRA argues for) with scikit-learn; :func:`t_interval` folds the figures
of several seeds into a mean and a Student-t confidence interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats
from sklearn.metrics import roc_auc_score, roc_curve
from torch.nn import functional as F  # noqa: N812

from fedfort.client.training import LocalTrainer
from fedfort.errors import ConfigError

__all__ = [
    "Interval",
    "LiraFit",
    "MembershipMetrics",
    "fit_lira",
    "lira_scores",
    "logit_confidence",
    "loss_change_scores",
    "membership_metrics",
    "per_example_loss",
    "t_interval",
]

#: per-example standard deviation floor, so a shadow set with identical values stays finite
_MIN_STD = 1e-3


@dataclass(frozen=True)
class MembershipMetrics:
    """How well scores separate members (label 1) from non-members (label 0).

    ``auc`` is the ROC AUC (0.5 = guessing); ``tpr_at_fpr`` the largest true-positive rate at a
    false-positive rate of at most ``fpr`` (the ROC curve is a step function; it is read off,
    not interpolated). ``members`` and ``non_members`` count the scored samples.
    """

    auc: float
    tpr_at_fpr: float
    fpr: float
    members: int
    non_members: int


def _check_scores(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64)
    lab = np.asarray(labels)
    if s.ndim != 1 or lab.shape != s.shape:
        raise ConfigError(
            f"scores and labels must be 1-D arrays of one length, got shapes {s.shape} and "
            f"{lab.shape}"
        )
    if not np.isin(lab, (0, 1)).all():
        raise ConfigError("membership labels must be 0 (non-member) or 1 (member)")
    if not np.isfinite(s).all():
        raise ConfigError("membership scores must be finite (no NaN or infinity)")
    lab = lab.astype(np.int64)
    if lab.min() == lab.max():
        raise ConfigError("membership metrics need both members and non-members among the labels")
    return s, lab


def membership_metrics(
    scores: np.ndarray, labels: np.ndarray, fpr: float = 0.01
) -> MembershipMetrics:
    """ROC AUC and TPR at ``fpr`` of ``scores`` (higher = more likely a member)."""
    if not 0.0 < fpr < 1.0:
        raise ConfigError(f"fpr must be in (0, 1), got {fpr}")
    s, lab = _check_scores(scores, labels)
    false_pos, true_pos, _ = roc_curve(lab, s, drop_intermediate=False)
    within = false_pos <= fpr
    return MembershipMetrics(
        auc=float(roc_auc_score(lab, s)),
        tpr_at_fpr=float(true_pos[within].max()),
        fpr=fpr,
        members=int(lab.sum()),
        non_members=int((1 - lab).sum()),
    )


@dataclass(frozen=True)
class Interval:
    """A mean over seeds with a two-sided Student-t confidence interval at ``level``.

    With one seed the interval is the point itself (``n = 1``; no spread is known).
    """

    mean: float
    low: float
    high: float
    n: int
    level: float

    def to_dict(self) -> dict[str, float | int]:
        return {"mean": self.mean, "low": self.low, "high": self.high, "n": self.n}


def t_interval(
    values: Sequence[float],
    level: float = 0.95,
    bounds: tuple[float, float] | None = None,
) -> Interval:
    """Mean and Student-t interval ``mean +- t_{(1+level)/2, n-1} * sd / sqrt(n)``.

    ``bounds`` clips the interval to the range the quantity can take (``(0, 1)`` for AUC and
    TPR), where the symmetric t-interval of a few seeds would otherwise spill over.
    """
    if not 0.0 < level < 1.0:
        raise ConfigError(f"confidence level must be in (0, 1), got {level}")
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size == 0 or not np.isfinite(v).all():
        raise ConfigError("a confidence interval needs at least one finite value")
    mean = float(v.mean())
    if v.size == 1:
        return Interval(mean, mean, mean, 1, level)
    half = float(stats.t.ppf((1 + level) / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return Interval(mean, low, high, int(v.size), level)


def _logits(trainer: LocalTrainer, vector: np.ndarray, x: np.ndarray) -> torch.Tensor:
    trainer.bound.load(np.ascontiguousarray(vector, dtype=np.float32))
    trainer.model.eval()
    with torch.no_grad():
        out: torch.Tensor = trainer.model(torch.from_numpy(np.ascontiguousarray(x)))
    return out


def _check_xy(x: np.ndarray, y: np.ndarray) -> None:
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ConfigError(
            f"need one label per sample and at least one sample, got {x.shape[0]} samples and "
            f"{y.shape[0]} labels"
        )


def per_example_loss(
    trainer: LocalTrainer, vector: np.ndarray, x: np.ndarray, y: np.ndarray
) -> np.ndarray:
    """Cross-entropy of every sample under the model with weights ``vector``."""
    _check_xy(x, y)
    logits = _logits(trainer, vector, x)
    loss = F.cross_entropy(logits, torch.from_numpy(y.astype(np.int64)), reduction="none")
    return loss.double().numpy()


def logit_confidence(
    trainer: LocalTrainer, vector: np.ndarray, x: np.ndarray, y: np.ndarray
) -> np.ndarray:
    """LiRA's statistic ``phi = log(p_y / (1 - p_y))`` for every sample, computed stably as
    ``z_y - logsumexp(z_j, j != y)`` from the logits ``z``."""
    _check_xy(x, y)
    z = _logits(trainer, vector, x).double()
    target = torch.from_numpy(y.astype(np.int64))
    true = z.gather(1, target[:, None])[:, 0]
    others = z.scatter(1, target[:, None], -math.inf)
    return (true - torch.logsumexp(others, dim=1)).numpy()


def loss_change_scores(
    trainer: LocalTrainer,
    before: np.ndarray,
    after: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
) -> np.ndarray:
    """``loss(before) - loss(after)`` per sample: what the update between them took off it.

    Against one client's update ``after = w + delta``; against a securely aggregated round,
    where only the sum is revealed, ``after`` is the next global model.
    """
    change: np.ndarray = per_example_loss(trainer, before, x, y) - per_example_loss(
        trainer, after, x, y
    )
    return change


@dataclass(frozen=True)
class LiraFit:
    """Per-candidate Gaussians of ``phi`` over the IN and the OUT shadow models.

    Arrays have one entry per candidate. A candidate that no shadow held IN (or OUT) gets the
    mean of the other candidates' means for that side, and the global standard deviation.
    """

    mean_in: np.ndarray
    std_in: np.ndarray
    mean_out: np.ndarray
    std_out: np.ndarray


def _side(
    phi: np.ndarray, mask: np.ndarray, global_variance: bool
) -> tuple[np.ndarray, np.ndarray]:
    count = mask.sum(axis=0)
    total = np.where(mask, phi, 0.0).sum(axis=0)
    seen = count > 0
    mean = np.divide(total, count, out=np.zeros_like(total), where=seen)
    if seen.any():
        mean[~seen] = mean[seen].mean()
    resid = np.where(mask, phi - mean, 0.0)
    ss = (resid**2).sum(axis=0)
    dof = count - 1
    pooled = math.sqrt(ss.sum() / max(int(dof[dof > 0].sum()), 1)) if (dof > 0).any() else 1.0
    if global_variance:
        std = np.full_like(mean, pooled)
    else:
        std = np.where(dof > 0, np.sqrt(ss / np.maximum(dof, 1)), pooled)
    return mean, np.maximum(std, _MIN_STD)


def fit_lira(phi: np.ndarray, in_mask: np.ndarray, *, global_variance: bool = True) -> LiraFit:
    """Fit LiRA's Gaussians from shadow statistics.

    ``phi`` is (shadows, candidates): :func:`logit_confidence` of every candidate under every
    shadow model; ``in_mask`` (same shape, bool) says which shadow trained on which candidate.
    ``global_variance`` uses one standard deviation per side, pooled over candidates, as the
    paper recommends with few shadow models (under 64); otherwise each candidate has its own.
    """
    p = np.asarray(phi, dtype=np.float64)
    m = np.asarray(in_mask)
    if p.ndim != 2 or m.shape != p.shape:
        raise ConfigError(
            f"phi and in_mask must be (shadows, candidates) arrays of one shape, got {p.shape} "
            f"and {m.shape}"
        )
    if m.dtype != np.bool_:
        raise ConfigError("in_mask must be a boolean array")
    if p.shape[0] < 2:
        raise ConfigError("LiRA needs at least 2 shadow models")
    if not np.isfinite(p).all():
        raise ConfigError("shadow statistics must be finite")
    if not m.any() or m.all():
        raise ConfigError("LiRA needs both IN and OUT shadow models")
    mean_in, std_in = _side(p, m, global_variance)
    mean_out, std_out = _side(p, ~m, global_variance)
    return LiraFit(mean_in, std_in, mean_out, std_out)


def lira_scores(fit: LiraFit, phi: np.ndarray, *, online: bool = True) -> np.ndarray:
    """Membership scores of the target's ``phi`` (one per candidate, in ``fit``'s order).

    Online: the Gaussian log-likelihood ratio IN over OUT. Offline: ``log Pr[Z <= phi]`` under
    the OUT Gaussian, a one-sided test that needs no shadow model trained on the candidate.
    """
    t = np.asarray(phi, dtype=np.float64)
    if t.shape != fit.mean_out.shape:
        raise ConfigError(
            f"target statistics have shape {t.shape}; the fit has {fit.mean_out.shape} candidates"
        )
    if not np.isfinite(t).all():
        raise ConfigError("target statistics must be finite")
    log_out = stats.norm.logpdf(t, fit.mean_out, fit.std_out)
    if online:
        return np.asarray(stats.norm.logpdf(t, fit.mean_in, fit.std_in) - log_out)
    return np.asarray(stats.norm.logcdf((t - fit.mean_out) / fit.std_out))
