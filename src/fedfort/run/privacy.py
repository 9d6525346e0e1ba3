"""From a run's ``[privacy]`` config to the stages and client settings that implement it.

:func:`calibrated` fixes the noise multiplier for a target epsilon (once, stored in the run's
config), :func:`calibrated_dp_sgd` that of record-level DP-SGD for the clients' data sizes;
:class:`PrivacySetup` builds the ledger, the budget guard, the selection, the
broadcast directive, the DP-FedAvg aggregation and the accounting stage that
:class:`~fedfort.run.federation.Federation` puts into the round engine's pipeline (run assembly:
it reads the config and builds server stages, so it sits above both).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping, Sequence

from fedfort.aggregation.base import Aggregator
from fedfort.config import RunConfig
from fedfort.errors import ConfigError
from fedfort.messages import ClientPrivacy, DpSgdSettings, LocalTrainingConfig
from fedfort.privacy.accounting import (
    AccountantName,
    PrivacyEvent,
    calibrate_noise_multiplier,
    make_accountant,
)
from fedfort.privacy.dp_fedavg import DpFedAvgPlan
from fedfort.privacy.dp_sgd import DpSgdPlan, plan_dp_sgd
from fedfort.privacy.mechanisms import LocalGaussian
from fedfort.server.engine import Stage
from fedfort.server.privacy import (
    AccountPrivacy,
    GuardPrivacyBudget,
    PoissonSelection,
    PrivacyLedger,
    PrivateAggregate,
)

__all__ = [
    "PrivacySetup",
    "calibrated",
    "calibrated_dp_sgd",
    "dp_plan",
    "dp_sgd_plan",
    "dp_sgd_sizes",
    "local_training",
    "statistics_event",
]


def sample_size(config: RunConfig) -> int:
    """Clients selected per round by fixed-size sampling."""
    n, srv = config.clients.count, config.server
    return min(n, max(srv.min_clients, math.ceil(srv.fraction * n)))


def dp_plan(
    config: RunConfig, noise_multiplier: float, *, adaptive: bool | None = None
) -> DpFedAvgPlan:
    """The DP-FedAvg plan of ``config`` with ``noise_multiplier`` (``adaptive`` overrides the
    config's adaptive clipping: the round event does not depend on it)."""
    priv, n = config.privacy, config.clients.count
    poisson = priv.sampling == "poisson"
    expected = config.server.fraction * n if poisson else float(sample_size(config))
    return DpFedAvgPlan(
        "central" if priv.mode == "central" else "distributed",
        noise_multiplier,
        n,
        priv.sampling,
        sample_size=sample_size(config),
        sampling_rate=config.server.fraction if poisson else 1.0,
        adaptive=priv.adaptive_clipping if adaptive is None else adaptive,
        count_stddev=priv.clip_count_stddev or expected / 20.0,
    )


def calibrated(config: RunConfig) -> RunConfig:
    """``config`` with the noise multiplier that meets ``privacy.target_epsilon`` over
    ``rounds`` rounds, when the noise is not set explicitly. The calibrated value is stored in
    the config (and so in the checkpoint), so a resumed run keeps it whatever its rounds."""
    priv = config.privacy
    if not priv.user_level or priv.noise_multiplier is not None:
        return config
    if priv.target_epsilon is None:
        raise ConfigError("user-level privacy needs a noise multiplier or a target epsilon")
    # the plan (a frozen dataclass) is the memo key; its z is replaced during the search
    template = dp_plan(config, 1.0, adaptive=False)
    statistics = config.data.standardize or config.data.impute != "none"
    z = _calibrate(
        priv.target_epsilon, priv.delta, config.rounds, priv.accountant, template, statistics
    )
    return config.with_overrides({"privacy.noise_multiplier": z})


def statistics_event(noise_multiplier: float) -> PrivacyEvent:
    """The release of the federated feature statistics (``[data] standardize`` / ``impute``):
    every client is asked once, so a Gaussian with the run's multiplier and no sampling."""
    return PrivacyEvent("gaussian", noise_multiplier)


@functools.lru_cache(maxsize=64)
def _calibrate(
    target: float,
    delta: float,
    rounds: int,
    accountant: AccountantName,
    template: DpFedAvgPlan,
    statistics: bool = False,
) -> float:
    """Calibration of the plan's round event, after the statistics release when the run has
    one (memoised: presets are run many times)."""

    def event(z: float) -> PrivacyEvent:
        return dataclasses.replace(template, noise_multiplier=z).round_event()

    once = statistics_event if statistics else None
    return calibrate_noise_multiplier(target, delta, rounds, event, accountant, once)


def dp_sgd_sizes(
    config: RunConfig, declared: Mapping[str, int], client_ids: Sequence[str]
) -> dict[str, int]:
    """The training-set sizes a DP-SGD plan is made for: each client's ``declared`` count (the
    partition sizes in a simulation, ``server.declared_sample_counts`` over the network),
    and ``privacy.dp_sgd.min_samples`` for every client without one (and as a floor for all).

    Raises :class:`ConfigError` when some client's size is unknown and no floor is set.
    """
    floor = config.privacy.dp_sgd.min_samples
    sizes: dict[str, int] = {}
    unknown: list[str] = []
    for cid in client_ids:
        n = declared.get(cid)
        if n is None and floor is None:
            unknown.append(cid)
            continue
        sizes[cid] = min(v for v in (n, floor) if v is not None)
    if unknown:
        raise ConfigError(
            f"privacy.dp_sgd.target_epsilon plans the noise for the smallest client, but the "
            f"training-set size of {unknown[0]} is unknown: set privacy.dp_sgd.min_samples (the "
            "fewest records any client trains on) or server.declared_sample_counts"
        )
    return sizes


def dp_sgd_plan(config: RunConfig, sizes: Mapping[str, int]) -> DpSgdPlan:
    """Each client's DP-SGD epsilon after ``config.rounds`` rounds: with the configured noise
    multiplier, or calibrated for ``privacy.dp_sgd.target_epsilon`` when that is unset."""
    sgd, local = config.privacy.dp_sgd, config.clients
    return plan_dp_sgd(
        sizes,
        batch_size=local.batch_size,
        epochs=local.epochs,
        rounds=config.rounds,
        delta=sgd.delta,
        target_epsilon=sgd.target_epsilon,
        noise_multiplier=sgd.noise_multiplier,
    )


def calibrated_dp_sgd(config: RunConfig, sizes: Mapping[str, int]) -> RunConfig:
    """``config`` with the DP-SGD noise multiplier that keeps every client of ``sizes`` within
    ``privacy.dp_sgd.target_epsilon`` over ``rounds`` rounds, when it is not set. The value is
    stored in the config (and so in the checkpoint): a resumed run keeps it whatever its
    rounds, and the clients' budgets stop it when it would pass the target."""
    sgd = config.privacy.dp_sgd
    if not sgd.enabled or sgd.noise_multiplier is not None:
        return config
    z = dp_sgd_plan(config, sizes).noise_multiplier
    return config.with_overrides({"privacy.dp_sgd.noise_multiplier": z})


def local_training(config: RunConfig) -> LocalTrainingConfig:
    """The clients' training settings, with DP-SGD when ``[privacy.dp_sgd]`` enables it."""
    local = config.clients.local_training(config.data.task)
    sgd = config.privacy.dp_sgd
    if not sgd.enabled:
        return local
    if sgd.noise_multiplier is None:
        raise ConfigError("calibrate the DP-SGD noise multiplier first (see calibrated_dp_sgd())")
    return dataclasses.replace(
        local, dp_sgd=DpSgdSettings(sgd.noise_multiplier, sgd.max_grad_norm, sgd.delta)
    )


class PrivacySetup:
    """The privacy parts of one run's pipeline (all ``None`` for a non-private run)."""

    def __init__(self, config: RunConfig, rule: Aggregator | None = None) -> None:
        priv = config.privacy
        self.config = config
        self.aggregate: PrivateAggregate | None = None
        self._directive: ClientPrivacy | None = None
        event: PrivacyEvent | None = None
        if priv.user_level:
            if priv.noise_multiplier is None:
                raise ConfigError("calibrate the noise multiplier first (see calibrated())")
            plan = dp_plan(config, priv.noise_multiplier)
            self.aggregate = PrivateAggregate(
                plan,
                priv.clip_norm,
                secure=priv.secure_noise,
                seed=config.seed,
                target_quantile=priv.target_quantile,
                clip_learning_rate=priv.clip_learning_rate,
                noise_shares=priv.noise_shares,
                sealed=config.secure_aggregation.enabled,
                rule=None if rule is None or rule.sum_compatible else rule,
            )
            event = plan.round_event()
        elif priv.mode == "local":
            eps = priv.local_epsilon or 0.0
            self._directive = ClientPrivacy(
                clip_norm=priv.clip_norm,
                local=priv.local_mechanism,
                local_epsilon=eps,
                local_delta=priv.local_delta,
                secure_noise=priv.secure_noise,
            )
            if priv.local_mechanism == "gaussian":
                z = LocalGaussian(eps, priv.local_delta, priv.clip_norm).noise_multiplier
                event = PrivacyEvent("gaussian", z)
            else:
                event = PrivacyEvent("laplace", 1.0 / eps)
        self.ledger: PrivacyLedger | None = None
        if event is not None:
            self.ledger = PrivacyLedger(
                make_accountant(priv.accountant), event, priv.delta, priv.target_epsilon
            )

    def guard(self) -> list[Stage]:
        """The budget guard, first in the pipeline, when the run has a target."""
        if self.ledger is None or self.ledger.target_epsilon is None:
            return []
        return [GuardPrivacyBudget(self.ledger)]

    def selection(self) -> Stage | None:
        """Poisson selection when the accounting assumes it (else the caller's selection)."""
        priv, srv = self.config.privacy, self.config.server
        if priv.user_level and priv.sampling == "poisson":
            return PoissonSelection(srv.fraction, secure=priv.secure_noise, seed=self.config.seed)
        return None

    def directive(self) -> Callable[[], ClientPrivacy] | None:
        """What the broadcast attaches to every task."""
        if self.aggregate is not None:
            return self.aggregate.directive
        fixed = self._directive
        return None if fixed is None else lambda: fixed

    def accounting(self) -> list[Stage]:
        """The accounting stage, after evaluation."""
        priv = self.config.privacy
        if self.ledger is None and not priv.dp_sgd.enabled:
            return []
        sgd_delta = priv.dp_sgd.delta if priv.dp_sgd.enabled else None
        return [AccountPrivacy(self.ledger, priv.mode, sgd_delta)]
