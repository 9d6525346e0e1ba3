"""Record-level DP-SGD: a client's step schedule, its epsilon, and the noise for a target.

DP-SGD (Abadi et al., "Deep Learning with Differential Privacy", CCS 2016) composes, at each
client, one sampled Gaussian mechanism per local step: a Poisson sample of the client's records
at rate ``q``, per-record gradients clipped to ``C`` and Gaussian noise of std ``z * C``. This
module is the arithmetic both sides share:

- :func:`dp_sgd_schedule`: the rate ``q`` and the steps per round a client with ``n`` records
  takes (the trainer in :mod:`fedfort.client.dp_sgd` runs exactly this schedule);
- :func:`dp_sgd_epsilon`: epsilon of ``steps`` such steps, by Opacus' RDP accountant
  (Mironov 2017; Mironov, Talwar and Zhang 2019), the accountant every client's own ledger
  uses, so the plan and the clients' budgets agree to the last digit;
- :func:`plan_dp_sgd`: the noise multiplier that keeps *every* client of the federation within
  a target epsilon after the planned rounds. It is calibrated for the client that needs the
  most noise (the smallest one: fewer records means a larger ``q``, so less amplification by
  sampling), by Opacus' ``get_noise_multiplier``, and checked with dp-accounting's RDP
  accountant too (:mod:`fedfort.privacy.accounting`): the returned multiplier meets the target
  under both.

The epsilon covers one record of one client: it bounds what the models that client released
reveal about any single one of its records. Rounds count as if the client trained in each of
them (amplification by the server's client sampling is not claimed).
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

from fedfort.errors import ConfigError
from fedfort.privacy.accounting import PrivacyEvent, make_accountant

__all__ = [
    "DpSgdClientPlan",
    "DpSgdPlan",
    "dp_sgd_epsilon",
    "dp_sgd_schedule",
    "plan_dp_sgd",
]

#: relative step by which a calibrated multiplier is raised until both accountants agree
_NUDGE = 1e-4


def dp_sgd_schedule(num_samples: int, batch_size: int, epochs: int) -> tuple[float, int]:
    """``(q, steps per round)`` of a client with ``num_samples`` records.

    ``q = batch_size / n`` (``batch_size <= 0`` or ``>= n``: ``q = 1``) and each of the
    ``epochs`` local epochs takes ``max(1, round(1 / q))`` Poisson-sampled steps.
    """
    if num_samples < 1:
        raise ConfigError(f"DP-SGD needs at least one training sample, got {num_samples}")
    if epochs < 1:
        raise ConfigError(f"local epochs must be >= 1, got {epochs}")
    batch = num_samples if batch_size <= 0 else min(batch_size, num_samples)
    sample_rate = batch / num_samples
    return sample_rate, epochs * max(1, round(1 / sample_rate))


def dp_sgd_epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    """Epsilon at ``delta`` of ``steps`` DP-SGD steps (Opacus' RDP accountant); ``inf`` for
    ``noise_multiplier == 0``, 0 for no steps."""
    if not 0 < delta < 1:
        raise ConfigError(f"delta must be in (0, 1), got {delta}")
    if steps <= 0:
        return 0.0
    if noise_multiplier == 0:
        return math.inf
    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    accountant.history = [(float(noise_multiplier), float(sample_rate), int(steps))]
    return float(accountant.get_epsilon(delta=delta))


@dataclass(frozen=True)
class DpSgdClientPlan:
    """One client's planned DP-SGD: its records, rate, steps over the run and epsilon."""

    client_id: str
    num_samples: int
    sample_rate: float
    steps: int
    epsilon: float


@dataclass(frozen=True)
class DpSgdPlan:
    """The noise multiplier of a run's DP-SGD and each client's epsilon after ``rounds``."""

    noise_multiplier: float
    delta: float
    rounds: int
    target_epsilon: float | None
    clients: tuple[DpSgdClientPlan, ...]

    @property
    def worst(self) -> DpSgdClientPlan:
        """The client whose epsilon is largest (the one the noise was calibrated for)."""
        return max(self.clients, key=lambda c: (c.epsilon, -c.num_samples))


def plan_dp_sgd(
    sizes: Mapping[str, int],
    *,
    batch_size: int,
    epochs: int,
    rounds: int,
    delta: float,
    target_epsilon: float | None = None,
    noise_multiplier: float | None = None,
) -> DpSgdPlan:
    """Each client's epsilon after ``rounds`` rounds, with ``noise_multiplier`` or, when that is
    ``None``, with the smallest multiplier that keeps every client within ``target_epsilon``.

    ``sizes`` maps client ids to their number of training records.
    """
    if not sizes:
        raise ConfigError("a DP-SGD plan needs the training-set size of at least one client")
    if rounds < 1:
        raise ConfigError(f"rounds must be >= 1, got {rounds}")
    schedules = {
        cid: dp_sgd_schedule(int(n), batch_size, epochs) for cid, n in sorted(sizes.items())
    }
    if noise_multiplier is None:
        if target_epsilon is None:
            raise ConfigError("a DP-SGD plan needs a noise multiplier or a target epsilon")
        noise_multiplier = _calibrate_all(
            target_epsilon, delta, rounds, sorted(set(schedules.values()))
        )
    z = float(noise_multiplier)
    clients = tuple(
        DpSgdClientPlan(
            cid,
            int(sizes[cid]),
            q,
            rounds * steps,
            dp_sgd_epsilon(z, q, rounds * steps, delta),
        )
        for cid, (q, steps) in schedules.items()
    )
    return DpSgdPlan(z, delta, rounds, target_epsilon, clients)


def _calibrate_all(
    target: float, delta: float, rounds: int, schedules: list[tuple[float, int]]
) -> float:
    """The largest multiplier any schedule needs: calibrated for the largest rate first (the
    smallest client), then for any schedule that multiplier still leaves above the target."""
    z = 0.0
    pending = sorted(schedules, reverse=True)
    while pending:
        q, steps = pending[0]
        z = max(z, _calibrate(target, delta, q, rounds * steps))
        pending = [
            (q2, s2) for q2, s2 in pending if dp_sgd_epsilon(z, q2, rounds * s2, delta) > target
        ]
    return z


@functools.lru_cache(maxsize=128)
def _calibrate(target: float, delta: float, sample_rate: float, steps: int) -> float:
    """The multiplier whose ``steps`` steps at ``sample_rate`` stay within ``target`` by Opacus'
    accountant (``get_noise_multiplier``, to within 0.01 of the target) and by dp-accounting's."""
    if not (math.isfinite(target) and target > 0):
        raise ConfigError(f"privacy.dp_sgd.target_epsilon must be > 0, got {target}")
    from opacus.accountants.utils import get_noise_multiplier

    try:
        with warnings.catch_warnings():
            # the search's first, far too large multipliers peak at the largest RDP order;
            # their bounds stay valid and only the final multiplier is used
            warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
            z = float(
                get_noise_multiplier(
                    target_epsilon=target,
                    target_delta=delta,
                    sample_rate=sample_rate,
                    steps=steps,
                    accountant="rdp",
                    epsilon_tolerance=0.01,
                )
            )
    except ValueError:
        raise ConfigError(
            f"no noise multiplier reaches epsilon {target} at delta {delta} over {steps} DP-SGD "
            "steps; raise privacy.dp_sgd.target_epsilon or lower the rounds, epochs or rate"
        ) from None
    reference = make_accountant("rdp")
    while True:
        event = PrivacyEvent("gaussian", z, sampling_rate=sample_rate)
        if (
            reference.epsilon(delta, [(event, steps)]) <= target
            and dp_sgd_epsilon(z, sample_rate, steps, delta) <= target
        ):
            return z
        z *= 1.0 + _NUDGE
