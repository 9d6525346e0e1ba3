"""The server's privacy stages: budget guard, Poisson sampling, DP-FedAvg and the accountant.

With user-level DP the pipeline becomes::

    privacy_budget -> select (Poisson or fixed) -> broadcast (+ privacy directive) -> collect
    -> verify -> quorum -> aggregate (DP-FedAvg) -> server step -> evaluate -> privacy

- :class:`GuardPrivacyBudget` asks the accountant what epsilon one more round would reach and
  raises :class:`~fedfort.errors.PrivacyBudgetExhausted` *before* the round does any work if
  that exceeds the target, so no round ever overshoots and the last checkpoint is clean.
- :class:`PoissonSelection` includes every client independently with probability ``q``, from
  the OS CSPRNG when the noise is secure (amplification by sampling assumes the sample is
  secret from whoever sees the models).
- :class:`PrivateAggregate` is DP-FedAvg (McMahan et al., ICLR 2018) with adaptive clipping
  (Andrew et al., NeurIPS 2021), central or distributed (see :mod:`fedfort.privacy.dp_fedavg`).
- :class:`AccountPrivacy` composes the round's release into the ledger (applied on commit) and
  records epsilon spent so far at the run's delta, plus the clients' own DP-SGD epsilons.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from fedfort.aggregation.base import Aggregator, UpdateBatch
from fedfort.aggregation.norm_bound import clip_rows
from fedfort.errors import ConfigError, PrivacyBudgetExhausted
from fedfort.measurements import AggregateMeasurement, PrivacyMeasurement, SelectionMeasurement
from fedfort.messages import ClientPrivacy
from fedfort.privacy.accounting import Accountant, PrivacyEvent
from fedfort.privacy.dp_fedavg import DpFedAvgPlan, next_clip_norm
from fedfort.privacy.mechanisms import clipped_sum
from fedfort.privacy.noise import NoiseSource, make_noise, snap, snapping_grid
from fedfort.server.engine import RoundContext, Stage

__all__ = [
    "AccountPrivacy",
    "GuardPrivacyBudget",
    "PoissonSelection",
    "PrivacyLedger",
    "PrivateAggregate",
    "default_noise_shares",
]

_SERVER_NOISE = 0x73727672  # separates the server's seeded noise stream from training seeds


def _server_noise(secure: bool, seed: int, round_: int, attempt: int, stream: int) -> NoiseSource:
    if secure:
        return make_noise(True)
    seq = np.random.SeedSequence(seed, spawn_key=(round_, attempt, stream, _SERVER_NOISE))
    return make_noise(False, int(seq.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1)))


def default_noise_shares(plan: DpFedAvgPlan) -> int:
    """Noise shares a distributed round needs by default: every expected participant for a
    fixed sample; for Poisson sampling, two standard deviations below the expected count, so
    that rounds are rarely short of noise (a short round is discarded, never released)."""
    m = plan.expected_participants
    if plan.sampling == "fixed":
        return int(m)
    spread = math.sqrt(m * (1.0 - plan.sampling_rate))
    return max(1, math.floor(m - 2.0 * spread))


@dataclass
class PrivacyLedger:
    """The run's privacy ledger: accountant, per-round event, target and delta.

    ``before_rounds`` are releases made once before round 1 (the federated feature
    statistics, :mod:`fedfort.server.statistics`); they are recorded with the run (its signed
    checkpoint), not in the accountant's per-round state, and count in every epsilon here.
    """

    accountant: Accountant
    event: PrivacyEvent
    delta: float
    target_epsilon: float | None = None
    before_rounds: list[tuple[PrivacyEvent, int]] = field(default_factory=list)

    def spent(self) -> float:
        """Epsilon of the releases before round 1 and the committed rounds, at the run's delta."""
        return self.accountant.epsilon(self.delta, self.before_rounds)

    def after_next(self) -> float:
        """Epsilon after one more round (the accountant memoises, so asking twice is free)."""
        return self.accountant.epsilon(self.delta, [*self.before_rounds, (self.event, 1)])


class GuardPrivacyBudget(Stage):
    """Stop the run before a round whose release would exceed the target epsilon."""

    name = "privacy_budget"

    def __init__(self, ledger: PrivacyLedger) -> None:
        self.ledger = ledger

    def run(self, ctx: RoundContext) -> None:
        target = self.ledger.target_epsilon
        if target is None:
            return
        spent, upcoming = self.ledger.spent(), self.ledger.after_next()
        if upcoming > target:
            raise PrivacyBudgetExhausted(
                f"privacy budget exhausted after round {ctx.round - 1}: epsilon spent "
                f"{spent:.4f}, one more round would reach {upcoming:.4f} > target {target:g} "
                f"at delta {self.ledger.delta:g}. The last committed round is final",
                spent=spent,
                next_epsilon=upcoming,
                target=target,
            )


class PoissonSelection(Stage):
    """Each client takes part independently with probability ``rate`` (Poisson sampling)."""

    name = "select"

    def __init__(self, rate: float, *, secure: bool, seed: int) -> None:
        if not 0.0 < rate < 1.0:
            raise ConfigError(f"Poisson sampling needs a rate in (0, 1), got {rate}")
        self.rate = rate
        self.secure = secure
        self.seed = seed

    def run(self, ctx: RoundContext) -> None:
        noise = _server_noise(self.secure, self.seed, ctx.round, ctx.attempt, 1)
        chosen = noise.bernoulli(self.rate, len(ctx.client_ids))
        ctx.selected = [cid for cid, keep in zip(ctx.client_ids, chosen, strict=True) if keep]
        ctx.measure(SelectionMeasurement(selected=len(ctx.selected), eligible=len(ctx.client_ids)))
        if not ctx.selected:
            ctx.discard("the Poisson sample is empty")


class PrivateAggregate(Stage):
    """DP-FedAvg over the accepted updates: clipped sum + Gaussian noise over ``E[m]``.

    ``central``: the server clips every update to ``C``, adds ``N(0, (z_delta C)^2)`` to the
    sum and, with adaptive clipping, noises the clipped count itself. ``distributed``: the
    clients already clipped and noised (see :func:`fedfort.client.privacy.privatize`), so the
    server only sums; a round with fewer than ``noise_shares`` updates would carry too little
    noise and is discarded before anything is released. Sums and noise are float64; the noisy
    sum is snapped to a power-of-two grid below the noise scale (:mod:`fedfort.privacy.noise`).
    """

    name = "aggregate"

    def __init__(
        self,
        plan: DpFedAvgPlan,
        clip_norm: float,
        *,
        secure: bool,
        seed: int,
        target_quantile: float = 0.5,
        clip_learning_rate: float = 0.2,
        noise_shares: int | None = None,
        sealed: bool = False,
        rule: Aggregator | None = None,
    ) -> None:
        if not clip_norm > 0:
            raise ConfigError(f"clip norm must be > 0, got {clip_norm}")
        self.plan = plan
        self.clip_norm = float(clip_norm)
        self.secure = secure
        self.seed = seed
        self.target_quantile = target_quantile
        self.clip_learning_rate = clip_learning_rate
        self.noise_shares = noise_shares or default_noise_shares(plan)
        self.sealed = sealed
        if rule is not None and (plan.placement != "central" or sealed):
            raise ConfigError("DP around a robust rule needs central DP without secure aggregation")
        #: central DP around a robust rule: see :meth:`_release_rule`
        self.rule = rule

    def directive(self) -> ClientPrivacy:
        """What every selected client must do to its update this round.

        Under secure aggregation (``sealed``) the server never sees an update, so even central
        DP has the clients clip (and send their clip bit, noiseless, into the secure sum); the
        server adds the noise to the sum it is given.
        """
        plan = self.plan
        if plan.placement == "central" and self.sealed:
            return ClientPrivacy(
                clip_norm=self.clip_norm, report_clipped=plan.adaptive, secure_noise=self.secure
            )
        if plan.placement == "central":
            return ClientPrivacy(secure_noise=self.secure)
        share = math.sqrt(self.noise_shares)
        return ClientPrivacy(
            clip_norm=self.clip_norm,
            noise_std=plan.update_noise_multiplier * self.clip_norm / share,
            report_clipped=plan.adaptive,
            indicator_noise_std=plan.count_stddev / share if plan.adaptive else 0.0,
            secure_noise=self.secure,
        )

    def run(self, ctx: RoundContext) -> None:
        plan, clip = self.plan, self.clip_norm
        updates = list(ctx.accepted)
        if plan.placement == "distributed" and plan.adaptive:
            keep = []
            for u in updates:
                if u.clip_indicator is None or not math.isfinite(u.clip_indicator):
                    ctx.reject(u.client_id, "missing_clip_indicator", "adaptive clipping report")
                else:
                    keep.append(u)
            updates = keep
        if not updates:
            ctx.discard("no valid update to aggregate")
            return
        if plan.placement == "distributed" and len(updates) < self.noise_shares:
            ctx.discard(
                f"only {len(updates)} distributed noise shares arrived, {self.noise_shares} are "
                "needed for the round's noise; nothing was released"
            )
            return
        matrix = np.stack([u.delta for u in updates])
        if self.rule is not None:
            self._release_rule(ctx, updates, matrix)
            ctx.accepted = updates
            return
        if plan.placement == "central":
            total, norms = clipped_sum(matrix, clip)
            count = float(np.where(norms <= clip, 0.5, -0.5).sum())
        else:
            total = matrix.sum(axis=0, dtype=np.float64)
            count = float(sum(u.clip_indicator or 0.0 for u in updates))
        self._release(ctx, total, count)
        ctx.accepted = updates

    def release_sum(self, ctx: RoundContext, total: np.ndarray, count: float, n: int) -> bool:
        """Release a sum of ``n`` client-clipped updates from secure aggregation.

        ``count`` is the sum of the clip bits (0 without adaptive clipping). Returns whether
        the round may go on (a distributed round short of noise shares is discarded).
        """
        if self.plan.placement == "distributed" and n < self.noise_shares:
            ctx.discard(
                f"only {n} distributed noise shares were aggregated, {self.noise_shares} are "
                "needed for the round's noise; nothing was released"
            )
            return False
        self._release(ctx, total, count)
        return True

    def _release(self, ctx: RoundContext, total: np.ndarray, count: float) -> None:
        plan, clip = self.plan, self.clip_norm
        std = plan.update_noise_multiplier * clip
        if plan.placement == "central":
            noise = _server_noise(self.secure, self.seed, ctx.round, ctx.attempt, 2)
            total = snap(total + noise.gaussian(total.shape[0], std), snapping_grid(std))
            if plan.adaptive:
                count += float(noise.gaussian(1, plan.count_stddev)[0])
        m = plan.expected_participants
        ctx.aggregate = (total / m).astype(np.float32)
        measured: dict[str, Any] = {
            "clip_norm": clip,
            "noise_std": std,
            "expected_participants": m,
        }
        if plan.adaptive:
            ctx.pending_state[self.name] = {"clip_norm": self._adapt_clip(count, measured)}
        # the exact clipped fraction of a central round is not recorded: it is not private
        ctx.measure(AggregateMeasurement(rule=f"dp_fedavg_{plan.placement}", extra=measured))

    def _adapt_clip(self, noisy_count: float, measured: dict[str, Any]) -> float:
        """The next clip norm from the round's noisy clipped count (Andrew et al. 2021); the
        released fraction and the new norm are added to ``measured``."""
        fraction = noisy_count / self.plan.expected_participants + 0.5
        new_clip = next_clip_norm(
            self.clip_norm, fraction, self.target_quantile, self.clip_learning_rate
        )
        measured["noisy_unclipped_fraction"] = fraction
        measured["next_clip_norm"] = new_clip
        return new_clip

    def _release_rule(self, ctx: RoundContext, updates: list[Any], matrix: np.ndarray) -> None:
        """Central DP around a robust rule.

        Every update is clipped to ``C``, the rule combines the clipped updates, and its output
        is projected onto the ball of radius ``C``. Whatever the rule, two outputs then differ
        by at most ``2C`` (the ball's diameter), so ``N(0, (2 C z)^2)`` noise makes the release
        a Gaussian mechanism with multiplier ``z`` under both adding and replacing a client:
        the round's accounting event is the mean's (whose fixed-sample event, with multiplier
        ``z / 2``, is the more pessimistic), and the epsilon reported is an upper bound. The
        price is the noise: ``2 C z`` on the aggregate instead of ``C z / m`` for the mean, so
        DP around a robust rule needs many more rounds' worth of signal (docs/privacy.md).
        """
        plan, clip = self.plan, self.clip_norm
        clipped, over = clip_rows(matrix, clip)
        assert self.rule is not None
        batch = UpdateBatch(
            clipped.astype(np.float32),
            np.asarray([u.num_samples for u in updates], dtype=np.float64),
            tuple(u.client_id for u in updates),
            model=ctx.model,
            round=ctx.round,
        )
        result = self.rule.aggregate(batch)
        output = np.asarray(result.update, dtype=np.float64)
        if output.shape != (matrix.shape[1],) or not np.isfinite(output).all():
            # the zero vector (in the ball, whatever the updates) stands in for an output that
            # cannot be projected: a rule must not escape the bound, nor crash the round (and
            # so reveal something of the updates) by returning NaN, infinity or a wrong shape
            output = np.zeros(matrix.shape[1])
        out, _ = clip_rows(output[None, :], clip)
        if not np.isfinite(out).all():  # a norm overflowing float64: project by hand
            out = np.zeros_like(out)
        std = 2.0 * plan.update_noise_multiplier * clip
        noise = _server_noise(self.secure, self.seed, ctx.round, ctx.attempt, 2)
        released = snap(out[0] + noise.gaussian(out.shape[1], std), snapping_grid(std))
        ctx.aggregate = released.astype(np.float32)
        measured: dict[str, Any] = {
            "clip_norm": clip,
            "noise_std": std,
            "expected_participants": plan.expected_participants,
        }
        state: dict[str, Any] = {}
        if plan.adaptive:
            count = float(np.where(over, -0.5, 0.5).sum())
            count += float(noise.gaussian(1, plan.count_stddev)[0])
            state["clip_norm"] = self._adapt_clip(count, measured)
        if result.state is not None:
            state["rule"] = result.state
        if state:
            ctx.pending_state[self.name] = state
        ctx.measure(AggregateMeasurement(rule=f"dp_central({self.rule.name})", extra=measured))

    def state_dict(self) -> dict[str, Any]:
        if self.rule is None:
            return {"clip_norm": self.clip_norm}
        return {"clip_norm": self.clip_norm, "rule": self.rule.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "clip_norm" in state:
            self.clip_norm = float(state["clip_norm"])
        if self.rule is not None and "rule" in state:
            self.rule.load_state_dict(state["rule"])


PrivacyMode = Literal["central", "distributed", "local", "none"]


class AccountPrivacy(Stage):
    """Compose the round's release (on commit) and record epsilon spent so far."""

    name = "privacy"

    def __init__(
        self, ledger: PrivacyLedger | None, mode: PrivacyMode, dp_sgd_delta: float | None = None
    ) -> None:
        self.ledger = ledger
        self.mode = mode
        self.dp_sgd_delta = dp_sgd_delta

    def run(self, ctx: RoundContext) -> None:
        values: dict[str, Any] = {"mode": self.mode}
        if self.ledger is not None:
            values.update(
                epsilon=self.ledger.after_next(),
                delta=self.ledger.delta,
                noise_multiplier=self.ledger.event.noise_multiplier,
                accountant=self.ledger.accountant.name,
                releases=self.ledger.accountant.count + 1,
            )
            if self.ledger.target_epsilon is not None:
                values["target_epsilon"] = self.ledger.target_epsilon
            ctx.pending_state[self.name] = {"compose": True}
        if self.dp_sgd_delta is not None:
            by_client = {
                u.client_id: float(u.metrics["dp_sgd_epsilon"])
                for u in ctx.accepted
                if "dp_sgd_epsilon" in u.metrics
            }
            eps = list(by_client.values())
            if eps:
                values.update(
                    dp_sgd_delta=self.dp_sgd_delta,
                    dp_sgd_epsilon_max=float(max(eps)),
                    dp_sgd_epsilon_mean=float(np.mean(eps)),
                    dp_sgd_epsilon=dict(sorted(by_client.items())),
                )
        ctx.measure(PrivacyMeasurement(**values))

    def commit(self, ctx: RoundContext) -> None:
        if self.ledger is not None and ctx.pending_state.get(self.name):
            self.ledger.accountant.compose(self.ledger.event)

    def state_dict(self) -> dict[str, Any]:
        return {} if self.ledger is None else self.ledger.accountant.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.ledger is not None:
            self.ledger.accountant.load_state_dict(state)
