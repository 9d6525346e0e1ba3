"""Differential privacy: noise sources, mechanisms, accounting and DP-FedAvg planning.

- :mod:`fedfort.privacy.noise`: CSPRNG and seeded noise sources, snapping;
- :mod:`fedfort.privacy.mechanisms`: clipping, local Gaussian/Laplace, randomized response;
- :mod:`fedfort.privacy.accounting`: one accountant interface over dp-accounting's RDP and PLD;
- :mod:`fedfort.privacy.dp_fedavg`: user-level DP-FedAvg's round event and adaptive clipping;
- :mod:`fedfort.privacy.planning`: calibrating the noise for a target (epsilon, delta);
- :mod:`fedfort.privacy.dp_sgd`: record-level DP-SGD's step schedule, epsilon and plan.

See ``docs/privacy.md``.
"""

from fedfort.privacy.accounting import (
    Accountant,
    PldAccountant,
    PrivacyEvent,
    RdpAccountant,
    calibrate_noise_multiplier,
    epsilon_curve,
    make_accountant,
)
from fedfort.privacy.dp_fedavg import DpFedAvgPlan
from fedfort.privacy.mechanisms import (
    LocalGaussian,
    LocalLaplace,
    estimate_frequencies,
    randomize_bits,
    randomized_response,
)
from fedfort.privacy.modes import DPSGD, DPFedAvg, LocalDP, PrivacyMode
from fedfort.privacy.noise import NoiseSource, SecureNoise, SeededNoise, make_noise
from fedfort.privacy.planning import NoisePlan, plan_noise

__all__ = [
    "DPSGD",
    "Accountant",
    "DPFedAvg",
    "DpFedAvgPlan",
    "LocalDP",
    "LocalGaussian",
    "LocalLaplace",
    "NoisePlan",
    "NoiseSource",
    "PldAccountant",
    "PrivacyEvent",
    "PrivacyMode",
    "RdpAccountant",
    "SecureNoise",
    "SeededNoise",
    "calibrate_noise_multiplier",
    "epsilon_curve",
    "estimate_frequencies",
    "make_accountant",
    "make_noise",
    "plan_noise",
    "randomize_bits",
    "randomized_response",
]
