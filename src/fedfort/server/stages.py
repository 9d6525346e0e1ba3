"""The standard stages of a round (selection lives in :mod:`fedfort.server.selection`,
verification in :mod:`fedfort.server.verify`, SCAFFOLD's server side in
:mod:`fedfort.server.scaffold`)."""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np

from fedfort.aggregation.base import Aggregator, UpdateBatch
from fedfort.errors import AggregationError, ConfigError, PrivacyBudgetExhausted
from fedfort.measurements import (
    AggregateMeasurement,
    CollectMeasurement,
    EvaluationMeasurement,
    QuorumMeasurement,
    ServerOptimizerMeasurement,
)
from fedfort.messages import (
    ClientPrivacy,
    FeatureTransform,
    LocalTrainingConfig,
    SecureAggregation,
    TrainTask,
)
from fedfort.server.engine import RoundContext, Stage
from fedfort.server.optimizers import ServerOptimizer

__all__ = [
    "Aggregate",
    "ApplyServerOptimizer",
    "Broadcast",
    "Collect",
    "EnforceQuorum",
    "Evaluate",
    "task_seed",
]


def task_seed(run_seed: int, round_: int, attempt: int, client_id: str) -> int:
    """A training seed unique to (run, round, attempt, client), independent of worker order."""
    seq = np.random.SeedSequence(
        entropy=run_seed, spawn_key=(round_, attempt, zlib.crc32(client_id.encode()))
    )
    return int(seq.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


class Broadcast(Stage):
    """Create one :class:`TrainTask` per selected client carrying the global model.

    ``control`` supplies SCAFFOLD's server control variate and ``privacy`` the round's privacy
    directive (clip norm, noise share) when the run is differentially private; ``secure`` the
    attempt's secure aggregation session (see :class:`fedfort.server.secure.SecureAggregate`).
    """

    name = "broadcast"
    #: the federation's feature transform, sent with every task once it is fitted
    transform: FeatureTransform | None = None

    def __init__(
        self,
        local: LocalTrainingConfig,
        run_seed: int,
        control: Callable[[], np.ndarray] | None = None,
        privacy: Callable[[], ClientPrivacy] | None = None,
        secure: Callable[[RoundContext], SecureAggregation] | None = None,
    ) -> None:
        self.local = local
        self.run_seed = run_seed
        self.control = control
        self.privacy = privacy
        self.secure = secure

    def run(self, ctx: RoundContext) -> None:
        server_control = None if self.control is None else self.control()
        directive = None if self.privacy is None else self.privacy()
        secure = None if self.secure is None else self.secure(ctx)
        ctx.tasks = [
            TrainTask(
                round=ctx.round,
                attempt=ctx.attempt,
                client_id=cid,
                weights=ctx.model,
                config=self.local,
                seed=task_seed(self.run_seed, ctx.round, ctx.attempt, cid),
                server_control=server_control,
                privacy=directive,
                secure=secure,
                transform=self.transform,
            )
            for cid in ctx.selected
        ]


class Collect(Stage):
    """Hand the tasks to the runtime and gather what arrives before the deadline."""

    name = "collect"

    def __init__(self, deadline_s: float | None = None) -> None:
        if deadline_s is not None and not deadline_s > 0:
            raise ConfigError(f"deadline_s must be > 0 or unset, got {deadline_s}")
        self.deadline_s = deadline_s

    def run(self, ctx: RoundContext) -> None:
        outcome = ctx.executor.execute(ctx.tasks, self.deadline_s)
        ctx.received = list(outcome.received)
        ctx.dropped = list(outcome.missing)
        refused = dict(sorted(outcome.refused.items())) or None
        ctx.measure(
            CollectMeasurement(
                received=len(ctx.received), dropped=len(ctx.dropped), refused=refused
            )
        )
        exhausted = [c for c, why in outcome.refused.items() if why == "privacy_budget_exhausted"]
        if ctx.tasks and not ctx.received and len(exhausted) == len(ctx.tasks):
            raise PrivacyBudgetExhausted(
                f"round {ctx.round}: every selected client ({_names(exhausted)}) refused to "
                "train because its own privacy budget is spent; the run stops at its last "
                "committed round",
                spent=math.nan,
                next_epsilon=math.nan,
                target=math.nan,
            )


def _names(ids: list[str], shown: int = 5) -> str:
    ordered = sorted(ids)
    more = f" and {len(ordered) - shown} more" if len(ordered) > shown else ""
    return ", ".join(ordered[:shown]) + more


class EnforceQuorum(Stage):
    """Discard the attempt unless enough selected clients sent valid updates.

    The quorum is ``max(min_participants, ceil(fraction * selected))``.
    """

    name = "quorum"

    def __init__(self, min_participants: int = 1, fraction: float = 0.0) -> None:
        if min_participants < 1 or not 0.0 <= fraction <= 1.0:
            raise ConfigError(
                f"quorum needs min_participants >= 1 and fraction in [0, 1], got "
                f"{min_participants}, {fraction}"
            )
        self.min_participants = min_participants
        self.fraction = fraction

    def required(self, selected: int) -> int:
        return max(self.min_participants, math.ceil(self.fraction * selected))

    def run(self, ctx: RoundContext) -> None:
        need = self.required(len(ctx.selected))
        ctx.measure(QuorumMeasurement(required=need, valid=len(ctx.accepted)))
        if len(ctx.accepted) < need:
            ctx.discard(
                f"only {len(ctx.accepted)} of {len(ctx.selected)} selected clients sent valid "
                f"updates; the quorum is {need}"
            )


class Aggregate(Stage):
    """Stack the accepted updates into an ``(n, d)`` matrix and apply the aggregator."""

    name = "aggregate"

    def __init__(self, aggregator: Aggregator) -> None:
        self.aggregator = aggregator

    def run(self, ctx: RoundContext) -> None:
        if not ctx.accepted:
            ctx.discard("no valid update to aggregate")
            return
        ctx.batch = UpdateBatch(
            updates=np.stack([u.delta for u in ctx.accepted]),
            weights=np.array(
                [u.num_samples * ctx.weight_factors.get(u.client_id, 1.0) for u in ctx.accepted],
                dtype=np.float64,
            ),
            client_ids=tuple(u.client_id for u in ctx.accepted),
            model=ctx.model,
            round=ctx.round,
        )
        try:
            result = self.aggregator.aggregate(ctx.batch)
        except AggregationError as exc:
            ctx.discard(f"aggregator {self.aggregator.name}: {exc}")
            return
        if result.update.shape != (ctx.batch.dim,) or not np.isfinite(result.update).all():
            ctx.discard(f"aggregator {self.aggregator.name} produced an invalid update")
            return
        ctx.aggregate = result.update.astype(np.float32, copy=False)
        if result.state is not None:
            ctx.pending_state[self.name] = result.state
        ctx.measure(AggregateMeasurement(rule=self.aggregator.name, extra=result.diagnostics))

    def state_dict(self) -> dict[str, Any]:
        return self.aggregator.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.aggregator.load_state_dict(state)


class ApplyServerOptimizer(Stage):
    """Move the global model by the aggregate with a server optimizer (FedAvg, FedAvgM, ...)."""

    name = "server_optimizer"

    def __init__(self, optimizer: ServerOptimizer) -> None:
        self.optimizer = optimizer
        self.state: dict[str, Any] = {}

    def run(self, ctx: RoundContext) -> None:
        if ctx.aggregate is None:
            raise ConfigError("the server optimizer stage needs an aggregate stage before it")
        new_model, new_state = self.optimizer.step(ctx.model, ctx.aggregate, self.state)
        ctx.new_model = new_model
        ctx.pending_state[self.name] = new_state
        ctx.measure(
            ServerOptimizerMeasurement(
                rule=self.optimizer.name,
                update_norm=float(np.linalg.norm(new_model - ctx.model)),
            )
        )

    def state_dict(self) -> dict[str, Any]:
        return dict(self.state)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.state = dict(state)


class Evaluate(Stage):
    """Evaluate the candidate model on the server's held-out data every ``every`` rounds.

    The final round is always evaluated.
    """

    name = "evaluate"

    def __init__(self, evaluator: Callable[[np.ndarray], dict[str, float]], every: int = 1) -> None:
        if every < 1:
            raise ConfigError(f"eval_every must be >= 1, got {every}")
        self.evaluator = evaluator
        self.every = every

    def run(self, ctx: RoundContext) -> None:
        if ctx.new_model is None:
            raise ConfigError("the evaluate stage needs a new model: put it after the optimizer")
        if ctx.final or ctx.round % self.every == 0:
            ctx.evaluation = self.evaluator(ctx.new_model)
            # accuracy and loss are top-level in the round record; extras (backdoor_asr) go here
            extra = {k: v for k, v in ctx.evaluation.items() if k not in ("accuracy", "loss")}
            if extra:
                ctx.measure(EvaluationMeasurement(extra=extra))
