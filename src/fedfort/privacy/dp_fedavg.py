"""User-level DP-FedAvg: the round's mechanism, its accounting event and adaptive clipping.

DP-FedAvg (McMahan, Ramage, Talwar and Zhang, ICLR 2018): every participant's model delta is
clipped to L2 norm ``C``; the clipped deltas are summed, Gaussian noise with std ``z * C`` is
added to the sum, and the sum is divided by the *expected* number of participants (a fixed
denominator, so one user changes the released mean by at most ``C / m``).

Sampling and its accounting always match (:meth:`DpFedAvgPlan.round_event`):

- ``poisson``: each client joins independently with probability ``q``; the denominator is
  ``q * N`` and each round is a Poisson-subsampled Gaussian (amplification by sampling).
- ``fixed``: exactly ``m`` clients per round. With ``m = N`` (everyone, every round) a round is
  a plain Gaussian with sensitivity ``C``. With ``m < N`` no amplification is claimed, and a
  user added to the population can displace another from the sample, so the sum's sensitivity
  is ``2C`` and the round is accounted as a Gaussian with multiplier ``z / 2``.

Adaptive clipping (Andrew, Thakkar, McMahan and Ramaswamy, NeurIPS 2021): every participant
also reports ``b_i = 1[||delta_i|| <= C] - 1/2``; the server releases
``b = (sum b_i + N(0, s_b^2)) / m + 1/2`` and moves ``C <- C * exp(-eta * (b - gamma))`` towards
the ``gamma`` quantile of the update norms. The two Gaussian queries together are one Gaussian
with multiplier ``z`` when the delta's noise uses ``z_delta = (z^-2 - (2 s_b)^-2)^-1/2``
(Andrew et al., Theorem 1), so the configured ``z`` -- and the accountant -- already include
the count's cost. The run's epsilon is the same with or without adaptive clipping; the deltas
get slightly more noise instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from fedfort.errors import ConfigError
from fedfort.privacy.accounting import PrivacyEvent

__all__ = ["DpFedAvgPlan", "Placement", "Sampling", "next_clip_norm", "split_noise_multiplier"]

Placement = Literal["central", "distributed"]
Sampling = Literal["poisson", "fixed"]


def split_noise_multiplier(total: float, count_stddev: float) -> float:
    """The delta's noise multiplier when the clipped count (std ``count_stddev``, sensitivity
    1/2) shares the Gaussian budget ``total`` (Andrew et al. 2021, Theorem 1)."""
    count_multiplier = 2.0 * count_stddev
    if not count_multiplier > total:
        raise ConfigError(
            f"adaptive clipping needs 2 * clip_count_stddev ({count_multiplier:g}) > the noise "
            f"multiplier ({total:g}): raise privacy.clip_count_stddev"
        )
    return float((total**-2 - count_multiplier**-2) ** -0.5)


def next_clip_norm(
    clip_norm: float, noisy_fraction: float, target_quantile: float, learning_rate: float
) -> float:
    """Geometric update of the clip norm towards the target quantile (Andrew et al. 2021)."""
    return float(clip_norm * math.exp(-learning_rate * (noisy_fraction - target_quantile)))


@dataclass(frozen=True)
class DpFedAvgPlan:
    """The fixed parameters of a DP-FedAvg run (the clip norm itself may adapt)."""

    placement: Placement
    noise_multiplier: float
    num_clients: int
    sampling: Sampling
    sample_size: int = 0
    sampling_rate: float = 1.0
    adaptive: bool = False
    count_stddev: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.noise_multiplier) and self.noise_multiplier > 0):
            raise ConfigError(f"noise multiplier must be > 0, got {self.noise_multiplier}")
        if self.num_clients < 1:
            raise ConfigError("the federation has no clients")
        if self.sampling == "poisson" and not 0.0 < self.sampling_rate < 1.0:
            raise ConfigError(f"Poisson sampling needs a rate in (0, 1), got {self.sampling_rate}")
        if self.sampling == "fixed" and not 1 <= self.sample_size <= self.num_clients:
            raise ConfigError(f"fixed sampling needs 1..N clients, got {self.sample_size}")
        if self.adaptive:
            split_noise_multiplier(self.noise_multiplier, self.count_stddev)

    @property
    def expected_participants(self) -> float:
        """The fixed denominator: ``q * N`` (Poisson) or ``m`` (fixed)."""
        if self.sampling == "poisson":
            return self.sampling_rate * self.num_clients
        return float(self.sample_size)

    @property
    def update_noise_multiplier(self) -> float:
        """Multiplier of the noise on the summed deltas (smaller than ``z`` if adaptive)."""
        if not self.adaptive:
            return self.noise_multiplier
        return split_noise_multiplier(self.noise_multiplier, self.count_stddev)

    @property
    def sensitivity_factor(self) -> float:
        """Sensitivity of the round's sum in units of ``C`` (2 for a fixed sample of m < N)."""
        if self.sampling == "fixed" and self.sample_size < self.num_clients:
            return 2.0
        return 1.0

    def round_event(self) -> PrivacyEvent:
        """What one round releases, as the accountant sees it."""
        z = self.noise_multiplier / self.sensitivity_factor
        if self.sampling == "poisson":
            return PrivacyEvent("gaussian", z, sampling_rate=self.sampling_rate)
        return PrivacyEvent("gaussian", z)
