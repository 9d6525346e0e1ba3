"""Planning a private run: the noise multiplier that meets a target and its epsilon curve.

``fedfort privacy plan`` and ``fedfort simulate --target-epsilon`` both calibrate through
:func:`plan_noise`, which asks the accountant (never a closed-form approximation) for the
smallest noise multiplier whose rounds stay within the target.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fedfort.privacy.accounting import (
    AccountantName,
    PrivacyEvent,
    calibrate_noise_multiplier,
    epsilon_curve,
    make_accountant,
)

__all__ = ["NoisePlan", "plan_noise"]


@dataclass(frozen=True)
class NoisePlan:
    """A calibrated noise multiplier, the epsilon it reaches and the curve on the way."""

    noise_multiplier: float
    epsilon: float
    delta: float
    rounds: int
    curve: list[tuple[int, float]]
    #: epsilon of the release made once before round 1 on its own (0 without one)
    before_rounds: float = 0.0


def plan_noise(
    target_epsilon: float,
    delta: float,
    rounds: int,
    event: Callable[[float], PrivacyEvent],
    accountant: AccountantName = "rdp",
    points: int = 10,
    once: Callable[[float], PrivacyEvent] | None = None,
) -> NoisePlan:
    """Calibrate ``z`` for ``rounds`` releases of ``event(z)`` (after one release of
    ``once(z)``, when given) and trace epsilon per round."""
    z = calibrate_noise_multiplier(target_epsilon, delta, rounds, event, accountant, once)
    before = [] if once is None else [(once(z), 1)]
    acc = make_accountant(accountant)
    spent = acc.epsilon(delta, [*before, (event(z), rounds)])
    curve = epsilon_curve(event(z), delta, rounds, accountant, points=points, before=before)
    first = acc.epsilon(delta, before) if before else 0.0
    return NoisePlan(z, spent, delta, rounds, curve, first)
