"""Untargeted model poisoning: crafted updates that drag the global model off course.

All attacks work on the coalition's ``(m, d)`` matrix at once. The statistical attacks (ALIE,
IPM, Min-Max, Min-Sum) estimate the benign mean and spread from ``view.observed`` (the honest
updates of the round for an omniscient coalition, as the papers assume) and send one crafted
vector from every member, which is what makes them hard to tell apart from each other.

- :class:`SignFlip`: ``-scale * g`` (the "reverse gradient" attack of Fang et al., USENIX
  Security 2020, with scaling).
- :class:`GaussianNoise`: ``N(0, sigma^2)`` per coordinate, instead of (or added to) ``g``
  (Blanchard et al., NeurIPS 2017, Gaussian Byzantine workers).
- :class:`ALIE`: "A Little Is Enough" (Baruch et al., NeurIPS 2019): ``mu - z * sigma`` per
  coordinate, with ``z`` from the paper's formula ``s = floor(n/2 + 1) - m``,
  ``z = Phi^-1((n - s) / n)`` unless given.
- :class:`IPM`: inner-product manipulation (Xie et al., "Fall of Empires", UAI 2020):
  ``-epsilon * mu``.
- :class:`MinMax` and :class:`MinSum` (Shejwalkar & Houmansadr, "Manipulating the Byzantine",
  NDSS 2021, the aggregation-agnostic attacks): ``mu + gamma * p`` for a perturbation ``p``
  (inverse unit vector, inverse standard deviation or inverse sign), with the largest
  ``gamma`` found by the paper's halving search such that the malicious update is no
  farther from every benign update than the benign updates are from each other (Min-Max),
  or its summed squared distance to the benign updates is no larger than any benign
  update's (Min-Sum). The search adapts ``gamma`` to the round's benign spread, so the
  attack stays inside whatever a distance-based aggregator accepts.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, Literal

import numpy as np
from scipy.stats import norm

from fedfort.aggregation.distances import pairwise_sq_distances
from fedfort.attacks.base import Attack, AttackView
from fedfort.errors import ConfigError

__all__ = ["ALIE", "IPM", "GaussianNoise", "MinMax", "MinSum", "SignFlip", "alie_z"]

Perturbation = Literal["unit_vec", "std", "sign"]


def _same_for_all(view: AttackView, vector: np.ndarray) -> np.ndarray:
    return np.broadcast_to(vector.astype(np.float32), view.own.shape).copy()


class SignFlip(Attack):
    """Send ``-scale`` times the honest update."""

    name = "sign_flip"

    def __init__(self, scale: float = 10.0) -> None:
        if not scale > 0:
            raise ConfigError(f"sign_flip scale must be > 0, got {scale}")
        self.scale = scale

    def craft(self, view: AttackView) -> np.ndarray:
        return (view.own * np.float32(-self.scale)).astype(np.float32, copy=False)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "scale": self.scale}


class GaussianNoise(Attack):
    """Send Gaussian noise of standard deviation ``sigma`` (``replace``) or add it (``add``).

    With ``relative`` the standard deviation is ``sigma`` times the root mean square of the
    global model's entries, so the noise keeps pace with the model: a fixed ``sigma`` is
    drowned out once the accumulated noise has scaled up the weights (and, for ReLU networks,
    the honest gradients with them).
    """

    name = "gaussian_noise"

    def __init__(
        self,
        sigma: float = 1.0,
        mode: Literal["replace", "add"] = "replace",
        relative: bool = False,
    ) -> None:
        if not sigma > 0 or mode not in ("replace", "add"):
            raise ConfigError("gaussian_noise needs sigma > 0 and mode replace or add")
        self.sigma = sigma
        self.mode = mode
        self.relative = relative

    def craft(self, view: AttackView) -> np.ndarray:
        std = self.sigma
        if self.relative and view.model.size:
            std *= float(np.sqrt(np.mean(np.square(view.model, dtype=np.float64))))
        noise = view.rng.standard_normal(view.own.shape, dtype=np.float32) * np.float32(std)
        return noise if self.mode == "replace" else view.own + noise

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "sigma": self.sigma,
            "mode": self.mode,
            "relative": self.relative,
        }


def alie_z(num_selected: int, num_malicious: int) -> float:
    """Baruch et al.'s ``z_max``: ``s = floor(n/2 + 1) - m``, ``z = Phi^-1((n - s) / n)``.

    With a malicious majority (``s <= 0``) the formula leaves the valid range; ``z`` is then
    capped at ``Phi^-1(1 - 1 / (2n))``.
    """
    n, m = num_selected, num_malicious
    if n < 1 or m < 0:
        raise ConfigError(f"ALIE needs n >= 1 clients and m >= 0 attackers, got {n}, {m}")
    s = math.floor(n / 2 + 1) - m
    p = min((n - s) / n, 1 - 1 / (2 * n))
    return float(norm.ppf(max(p, 0.5)))


class ALIE(Attack):
    """ "A Little Is Enough": shift every coordinate by ``z`` benign standard deviations."""

    name = "alie"
    uses_statistics = True

    def __init__(self, z: float | None = None) -> None:
        if z is not None and not z > 0:
            raise ConfigError(f"alie z must be > 0 or unset (paper formula), got {z}")
        self.z = z

    def z_for(self, view: AttackView) -> float:
        return self.z if self.z is not None else alie_z(view.num_selected, view.num_malicious)

    def craft(self, view: AttackView) -> np.ndarray:
        obs = view.observed.astype(np.float64)
        crafted = obs.mean(axis=0) - self.z_for(view) * obs.std(axis=0)
        return _same_for_all(view, crafted)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "z": self.z if self.z is not None else "paper formula"}


class IPM(Attack):
    """Inner-product manipulation: send ``-epsilon`` times the benign mean."""

    name = "ipm"
    uses_statistics = True

    def __init__(self, epsilon: float = 0.5) -> None:
        if not epsilon > 0:
            raise ConfigError(f"ipm epsilon must be > 0, got {epsilon}")
        self.epsilon = epsilon

    def craft(self, view: AttackView) -> np.ndarray:
        mean = view.observed.astype(np.float64).mean(axis=0)
        return _same_for_all(view, -self.epsilon * mean)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "epsilon": self.epsilon}


class _Optimised(Attack, ABC):
    """Shared machinery of Min-Max and Min-Sum: ``mu + gamma * p`` with ``gamma`` searched."""

    uses_statistics = True

    def __init__(
        self, perturbation: Perturbation = "unit_vec", gamma_init: float = 10.0, tol: float = 1e-5
    ) -> None:
        if perturbation not in ("unit_vec", "std", "sign"):
            raise ConfigError(f"perturbation must be unit_vec, std or sign: {perturbation}")
        if not gamma_init > 0 or not tol > 0:
            raise ConfigError("gamma_init and tol must be > 0")
        self.perturbation = perturbation
        self.gamma_init = gamma_init
        self.tol = tol
        self.last_gamma: float | None = None

    def _direction(self, obs: np.ndarray, mean: np.ndarray) -> np.ndarray:
        direction: np.ndarray
        if self.perturbation == "unit_vec":
            direction = -mean / max(float(np.linalg.norm(mean)), 1e-12)
        elif self.perturbation == "std":
            direction = -obs.std(axis=0)
        else:
            direction = -np.sign(mean)
        return direction

    @abstractmethod
    def _accepts(self, sq_dists: np.ndarray, benign_sq: np.ndarray) -> bool:
        """Whether a candidate with squared distances ``sq_dists`` to the benign updates
        stays within what the benign pairwise squared distances ``benign_sq`` allow."""

    def craft(self, view: AttackView) -> np.ndarray:
        obs = view.observed.astype(np.float64)
        mean = obs.mean(axis=0)
        direction = self._direction(obs, mean)
        benign_sq = pairwise_sq_distances(obs).astype(np.float64)
        # ||mu + g p - b_i||^2 = ||mu - b_i||^2 + 2 g <p, mu - b_i> + g^2 ||p||^2, for all i at once
        centred = mean[None, :] - obs
        base = np.einsum("ij,ij->i", centred, centred)
        cross = centred @ direction
        pp = float(direction @ direction)
        gamma, step, best = self.gamma_init, self.gamma_init / 2, 0.0
        while abs(best - gamma) > self.tol:
            sq = np.maximum(base + 2 * gamma * cross + gamma * gamma * pp, 0.0)
            if self._accepts(sq, benign_sq):
                best = gamma
                gamma += step
            else:
                gamma -= step
            step /= 2
        self.last_gamma = best
        return _same_for_all(view, mean + best * direction)

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "perturbation": self.perturbation,
            "gamma_init": self.gamma_init,
        }


class MinMax(_Optimised):
    """Min-Max: no farther from any benign update than the two farthest benign updates."""

    name = "min_max"

    def _accepts(self, sq_dists: np.ndarray, benign_sq: np.ndarray) -> bool:
        return bool(sq_dists.max() <= benign_sq.max())


class MinSum(_Optimised):
    """Min-Sum: summed squared distance to the benign updates no larger than any benign one's."""

    name = "min_sum"

    def _accepts(self, sq_dists: np.ndarray, benign_sq: np.ndarray) -> bool:
        return bool(sq_dists.sum() <= benign_sq.sum(axis=1).max())
