"""Result types of the gradient-inversion defence evaluation, in a JSON-friendly form.

:func:`fedfort.redteam.privacy_inversion.evaluate_inversion_defences` returns an
:class:`InversionReport`: one :class:`DefenceRow` per defence setting, each holding one
:class:`TrialOutcome` per attacked image. ``to_json()`` on any of them gives plain dicts,
lists, numbers and strings (images as nested lists of floats rounded to 4 decimals, an
infinite PSNR -- an exact copy -- as the string ``"inf"``), ready for ``json.dumps`` and for a
report that draws the table and a grid of true/reconstructed images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["LEAK_PSNR_DB", "LEAK_SSIM", "DefenceRow", "InversionReport", "TrialOutcome"]

LEAK_PSNR_DB = 25.0
"""A reconstruction with PSNR at or above this (dB) counts as a leak."""
LEAK_SSIM = 0.8
"""A reconstruction with SSIM at or above this counts as a leak."""


def _number(value: float) -> float | str:
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return round(float(value), 4)


def _image(image: np.ndarray) -> list[list[float]]:
    rows: list[list[float]] = np.round(image.astype(np.float64), 4).tolist()
    return rows


@dataclass(frozen=True)
class TrialOutcome:
    """The best reconstruction of one attacked image under one defence.

    - ``image_index``: the image's index in the digits training split; ``true_image`` (8x8,
      pixels in [0, 1]) and ``true_label`` are what the client held.
    - ``reconstruction``/``recovered_label``: the attacker's best output, i.e. the attack
      whose reconstruction has the highest SSIM against the truth (``attack`` names it).
      Choosing with the truth favours the attacker, so a defence judged on it is judged
      conservatively.
    - ``mse``, ``psnr`` (dB, ``inf`` for an exact copy), ``ssim``: of that reconstruction.
    - ``baseline_ssim``: SSIM of the best attack's starting noise against the truth, i.e. the
      score of a reconstruction that learnt nothing.
    - ``reference_ssim``: the highest SSIM the reconstruction reaches against held-out digits
      that were in no update (the test split): the score of "a plausible digit" rather than
      *this client's* digit. A reconstruction that beats it identifies the client's image.
    - ``best_in_sum_ssim``: under secure aggregation only, the highest SSIM against any of
      the images whose updates were summed (``None`` elsewhere).
    - ``per_attack``: ``{attack: {"ssim", "psnr", "label_correct", "loss", "iterations"}}``
      for every attack that ran.

    Under secure aggregation the sum holds several clients' images; the scores are against
    the attacked client's image (the first client of the sum), and ``best_in_sum_ssim``
    says how close the reconstruction comes to anyone in the sum.
    """

    image_index: int
    true_image: np.ndarray
    true_label: int
    reconstruction: np.ndarray
    recovered_label: int
    attack: str
    mse: float
    psnr: float
    ssim: float
    baseline_ssim: float
    reference_ssim: float
    best_in_sum_ssim: float | None = None
    per_attack: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def label_correct(self) -> bool:
        return self.recovered_label == self.true_label

    @property
    def leaked(self) -> bool:
        """Whether the image was reconstructed: PSNR >= 25 dB or SSIM >= 0.8, label right."""
        close = self.psnr >= LEAK_PSNR_DB or self.ssim >= LEAK_SSIM
        return close and self.label_correct

    def to_json(self) -> dict[str, Any]:
        return {
            "image_index": self.image_index,
            "true_label": self.true_label,
            "recovered_label": self.recovered_label,
            "attack": self.attack,
            "mse": _number(self.mse),
            "psnr": _number(self.psnr),
            "ssim": _number(self.ssim),
            "baseline_ssim": _number(self.baseline_ssim),
            "reference_ssim": _number(self.reference_ssim),
            "best_in_sum_ssim": (
                None if self.best_in_sum_ssim is None else _number(self.best_in_sum_ssim)
            ),
            "leaked": self.leaked,
            "per_attack": {
                name: {k: _number(v) for k, v in scores.items()}
                for name, scores in self.per_attack.items()
            },
            "true_image": _image(self.true_image),
            "reconstruction": _image(self.reconstruction),
        }


@dataclass(frozen=True)
class DefenceRow:
    """One defence setting and what the attack achieved against it.

    - ``defence``: ``none``, ``clipping``, ``local_dp``, ``distributed_dp``,
      ``secure_aggregation`` or ``central_dp``; ``title`` a short human label.
    - ``parameters``: the setting (clip norm, target epsilon, clients in the sum, ...).
    - ``applicable``: ``False`` when the defence cannot hide an update from this adversary
      (central DP: the server sees the update before it adds noise); ``trials`` is then empty
      and ``note`` says why.
    - ``epsilon``/``delta``: the per-round guarantee computed by fedfort's accountant
      (``None`` where no DP applies); ``note`` says what it covers.
    - ``trials``: one :class:`TrialOutcome` per attacked image.
    """

    defence: str
    title: str
    parameters: dict[str, Any]
    applicable: bool
    note: str = ""
    epsilon: float | None = None
    delta: float | None = None
    trials: tuple[TrialOutcome, ...] = ()

    def _values(self, name: str) -> np.ndarray:
        return np.array([getattr(t, name) for t in self.trials], dtype=np.float64)

    @property
    def mean_ssim(self) -> float:
        return float(self._values("ssim").mean()) if self.trials else math.nan

    @property
    def max_ssim(self) -> float:
        return float(self._values("ssim").max()) if self.trials else math.nan

    @property
    def mean_psnr(self) -> float:
        """Mean PSNR over trials, with exact copies counted at 100 dB so the mean is finite."""
        return float(np.minimum(self._values("psnr"), 100.0).mean()) if self.trials else math.nan

    @property
    def mean_mse(self) -> float:
        return float(self._values("mse").mean()) if self.trials else math.nan

    @property
    def mean_baseline_ssim(self) -> float:
        return float(self._values("baseline_ssim").mean()) if self.trials else math.nan

    @property
    def mean_reference_ssim(self) -> float:
        return float(self._values("reference_ssim").mean()) if self.trials else math.nan

    @property
    def label_accuracy(self) -> float:
        return float(np.mean([t.label_correct for t in self.trials])) if self.trials else math.nan

    @property
    def leak_count(self) -> int:
        return sum(t.leaked for t in self.trials)

    def to_json(self) -> dict[str, Any]:
        summary = {
            "mean_mse": self.mean_mse,
            "mean_psnr": self.mean_psnr,
            "mean_ssim": self.mean_ssim,
            "max_ssim": self.max_ssim,
            "mean_baseline_ssim": self.mean_baseline_ssim,
            "mean_reference_ssim": self.mean_reference_ssim,
            "label_accuracy": self.label_accuracy,
        }
        return {
            "defence": self.defence,
            "title": self.title,
            "parameters": dict(self.parameters),
            "applicable": self.applicable,
            "note": self.note,
            "epsilon": None if self.epsilon is None else _number(self.epsilon),
            "delta": self.delta,
            "trials_run": len(self.trials),
            "leaked": self.leak_count,
            "summary": {k: None if math.isnan(v) else _number(v) for k, v in summary.items()},
            "trials": [t.to_json() for t in self.trials],
        }


@dataclass(frozen=True)
class InversionReport:
    """Every defence row of one evaluation, and the settings that produced it."""

    settings: dict[str, Any]
    rows: tuple[DefenceRow, ...]

    def rows_for(self, defence: str) -> list[DefenceRow]:
        """The rows of one defence kind (several for several epsilons)."""
        return [r for r in self.rows if r.defence == defence]

    def to_json(self) -> dict[str, Any]:
        return {"settings": dict(self.settings), "rows": [r.to_json() for r in self.rows]}
