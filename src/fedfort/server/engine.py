"""The round engine: one federated round as a pipeline of stages, then an atomic commit.

A round attempt runs its stages in order over a shared :class:`RoundContext`::

    select -> broadcast -> collect -> verify -> quorum -> aggregate -> server step -> evaluate

Stages only write to the context and stage *pending* state there. If every stage succeeds the
engine commits: stages apply their pending state, the global model and round counter advance,
the runtime acknowledges the accepted updates to their clients, and commit hooks (the SQLite
checkpoint writer, later the audit log) run. If a stage discards the attempt (e.g. too few valid
updates), nothing is committed, the discard is recorded, and the round is retried with a fresh
selection up to ``max_attempts`` times before :class:`~fedfort.errors.RoundFailed` is raised.

Simulation and deployment use this same engine; they differ only in the
:class:`ClientExecutor` that carries tasks to clients and updates back.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np

from fedfort.aggregation.base import UpdateBatch
from fedfort.errors import ConfigError, RoundFailed
from fedfort.measurements import Measurement, MeasurementSet, PrivacyMeasurement
from fedfort.messages import ClientUpdate, EvaluateTask, EvaluationReport, TrainTask
from fedfort.params import vector_sha256
from fedfort.registry import Component
from fedfort.server.round_audit import round_entries

__all__ = [
    "ClientExecutor",
    "CollectOutcome",
    "CommitHook",
    "EvaluationOutcome",
    "FederatedEvaluator",
    "Rejection",
    "RoundContext",
    "RoundEngine",
    "RoundRecord",
    "SecureChannel",
    "Stage",
    "Stateful",
]

M = TypeVar("M", bound=Measurement)


@dataclass(frozen=True)
class CollectOutcome:
    """What came back from the clients of one attempt.

    ``refused`` names the missing clients that said why they sent nothing, with a reason code
    (``privacy_budget_exhausted``: the client's own privacy budget is spent;
    ``privacy_policy``: the task asked for less than its own policy allows).
    """

    received: list[ClientUpdate]
    missing: list[str]
    refused: dict[str, str] = field(default_factory=dict)


class ClientExecutor(Protocol):
    """Moves tasks to clients and their updates back; holds no learning or security logic."""

    def execute(self, tasks: Sequence[TrainTask], deadline_s: float | None) -> CollectOutcome:
        """Deliver ``tasks`` and return the updates that arrived within the deadline."""

    def acknowledge(self, round_: int, accepted: Sequence[ClientUpdate]) -> None:
        """Tell clients whose updates were committed, so they may advance local state."""

    def close(self) -> None:
        """Release the runtime's resources (worker processes, sockets)."""


@runtime_checkable
class SecureChannel(Protocol):
    """A runtime that can also carry secure-aggregation messages to clients and back.

    ``outbox`` maps client ids to the server machine's messages for one protocol ``step`` of
    the session of (``round_``, ``attempt``); the result holds the replies that arrived in
    time. A client absent from it dropped out at that step.
    """

    def exchange(
        self,
        round_: int,
        attempt: int,
        step: int,
        outbox: Mapping[str, object],
        deadline_s: float | None,
    ) -> dict[str, object]: ...


@dataclass(frozen=True)
class EvaluationOutcome:
    """The clients' evaluation reports that came back, and who did not answer."""

    reports: list[EvaluationReport]
    missing: list[str]


@runtime_checkable
class FederatedEvaluator(Protocol):
    """A runtime that can also ask clients to evaluate a model on their own hold-outs."""

    def evaluate(
        self, tasks: Sequence[EvaluateTask], deadline_s: float | None
    ) -> EvaluationOutcome: ...


class Stateful(Protocol):
    """Anything whose state belongs in a checkpoint."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class Rejection:
    """An update the server refused, with a machine-readable reason code."""

    client_id: str
    reason: str
    detail: str


@dataclass
class RoundContext:
    """Everything one round attempt reads and produces; stages communicate through it."""

    round: int
    attempt: int
    model: np.ndarray
    rng: np.random.Generator
    client_ids: tuple[str, ...]
    executor: ClientExecutor
    final: bool = False
    started: float = field(default_factory=time.perf_counter)
    selected: list[str] = field(default_factory=list)
    tasks: list[TrainTask] = field(default_factory=list)
    received: list[ClientUpdate] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    accepted: list[ClientUpdate] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    batch: UpdateBatch | None = None
    aggregate: np.ndarray | None = None
    new_model: np.ndarray | None = None
    evaluation: dict[str, float] = field(default_factory=dict)
    #: the clients' evaluation of the new model (``FederatedEvaluate``), when it ran
    federated_evaluation: dict[str, Any] | None = None
    measurements: dict[str, dict[str, Any]] = field(default_factory=dict)
    pending_state: dict[str, dict[str, Any]] = field(default_factory=dict)
    weight_factors: dict[str, float] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)
    discarded: str | None = None

    def discard(self, reason: str) -> None:
        """Abandon this attempt; nothing it produced is committed."""
        self.discarded = reason

    def reject(self, client_id: str, reason: str, detail: str) -> None:
        self.rejections.append(Rejection(client_id, reason, detail))

    def measure(self, record: Measurement | str, /, **values: Any) -> None:
        """Publish a typed measurement record (:mod:`fedfort.measurements`) under its name.

        ``ctx.measure("name", key=value, ...)`` records untyped values under ``name``. Either
        way the values land in the round record, merged into what was already published
        under that name (a later value of the same key wins).
        """
        if isinstance(record, Measurement):
            if values:
                raise ConfigError(
                    f"ctx.measure({type(record).__name__}(...)) takes no keyword values: "
                    "put them in the record's fields or its `extra` mapping"
                )
            if not record.name:
                raise ConfigError(
                    f"{type(record).__name__} declares no name: register it with "
                    "fedfort.measurements.register_measurement"
                )
            name, published = record.name, record.to_dict()
        else:
            name, published = record, values
        self.measurements.setdefault(name, {}).update(published)

    def measurement(self, cls: type[M]) -> M | None:
        """The record of type ``cls`` published so far in this attempt, or ``None``."""
        return MeasurementSet(self.measurements).get(cls)


class Stage(Component, ABC):
    """One step of a round. Subclasses implement :meth:`run`.

    A stage with state across rounds (an optimizer's momentum, SCAFFOLD's control variate)
    computes its next state in :meth:`run`, puts it in ``ctx.pending_state[self.name]``, and
    lets the default :meth:`commit` apply it, so a discarded attempt leaves it untouched.
    Like every component, a stage remembers its constructor's arguments
    (``component_args``): a run records those of a user's stages in its pipeline.
    """

    name: str = "stage"

    @abstractmethod
    def run(self, ctx: RoundContext) -> None:
        """Do this stage's work for ``ctx`` (may call ``ctx.discard``)."""

    def commit(self, ctx: RoundContext) -> None:
        pending = ctx.pending_state.get(self.name)
        if pending is not None:
            self.load_state_dict(pending)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None


@dataclass
class RoundRecord:
    """What happened in one committed round (JSON-friendly via :meth:`to_dict`)."""

    round: int
    attempt: int
    accuracy: float | None
    loss: float | None
    participants: int
    selected: list[str]
    dropped: list[str]
    rejected: list[dict[str, str]]
    duration_s: float
    train_loss: float | None
    train_time_s: float
    model_sha256: str
    measurements: dict[str, dict[str, Any]]
    discarded_attempts: list[dict[str, Any]]
    epsilon: float | None = None
    delta: float | None = None
    #: ids of the clients whose updates went into the aggregate
    accepted: list[str] = field(default_factory=list)
    #: the clients' evaluation on their hold-outs, in rounds that had one: ``overall``
    #: (example-weighted), ``clients`` (values and ``examples`` each), ``rejected`` (reasons)
    evaluation: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        body = asdict(self)
        if body["evaluation"] is None:
            del body["evaluation"]  # rounds without federated evaluation keep their record
        return body

    @property
    def published(self) -> MeasurementSet:
        """Typed reads over :attr:`measurements`."""
        return MeasurementSet(self.measurements)

    def measurement(self, cls: type[M]) -> M | None:
        """The round's record of type ``cls``, or ``None`` when no stage published one."""
        return self.published.get(cls)

    def require(self, cls: type[M]) -> M:
        """The round's record of type ``cls``; raises
        :class:`~fedfort.errors.MeasurementMissing` when no stage published one."""
        return self.published.require(cls)

    def audit_entries(self) -> list[tuple[str, int | None, dict[str, Any]]]:
        """The audit entries of this round (:mod:`fedfort.server.round_audit`)."""
        return round_entries(self)


class CommitHook(Protocol):
    """Called after every commit with the engine (new state) and the round record."""

    def on_commit(self, engine: RoundEngine, record: RoundRecord) -> None: ...


class RoundEngine:
    """Runs rounds over a fixed set of clients with a pipeline of stages."""

    def __init__(
        self,
        model: np.ndarray,
        client_ids: Sequence[str],
        stages: Sequence[Stage],
        executor: ClientExecutor,
        *,
        seed: int,
        max_attempts: int = 3,
        hooks: Sequence[CommitHook] = (),
        extra_state: dict[str, Stateful] | None = None,
    ) -> None:
        if model.dtype != np.float32 or model.ndim != 1:
            raise ConfigError("the global model must be a float32 vector")
        if not client_ids:
            raise ConfigError("the federation has no clients")
        if len(set(client_ids)) != len(client_ids):
            raise ConfigError("client ids must be unique")
        if max_attempts < 1:
            raise ConfigError(f"max_attempts must be >= 1, got {max_attempts}")
        names = [s.name for s in stages]
        if len(set(names)) != len(names):
            raise ConfigError(f"stage names must be unique, got {names}")
        self.model = model.copy()
        self.client_ids = tuple(client_ids)
        self.stages = list(stages)
        self.executor = executor
        self.max_attempts = max_attempts
        self.hooks = list(hooks)
        self.extra_state = dict(extra_state or {})
        self.round = 0
        self.rng = np.random.default_rng(seed)

    def stage(self, name: str) -> Stage:
        """The stage called ``name``."""
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(name)

    def run_round(self, *, final: bool = False) -> RoundRecord:
        """Run attempts of the next round until one commits; return its record."""
        discarded: list[dict[str, Any]] = []
        for attempt in range(1, self.max_attempts + 1):
            ctx = RoundContext(
                round=self.round + 1,
                attempt=attempt,
                model=self.model,
                rng=self.rng,
                client_ids=self.client_ids,
                executor=self.executor,
                final=final,
            )
            for stage in self.stages:
                stage.run(ctx)
                if ctx.discarded is not None:
                    break
            if ctx.discarded is None:
                return self._commit(ctx, discarded)
            discarded.append(
                {
                    "attempt": attempt,
                    "reason": ctx.discarded,
                    "selected": list(ctx.selected),
                    "dropped": list(ctx.dropped),
                    "rejected": [asdict(r) for r in ctx.rejections],
                    "duration_s": time.perf_counter() - ctx.started,
                }
            )
        by_reason: dict[str, list[str]] = {}
        for d in discarded:
            by_reason.setdefault(d["reason"], []).append(str(d["attempt"]))
        reasons = "; ".join(f"attempt {', '.join(a)}: {r}" for r, a in by_reason.items())
        raise RoundFailed(
            f"round {self.round + 1} failed after {self.max_attempts} attempts ({reasons})"
            f"{_rejected_summary(discarded)}. Lower the quorum, raise max_attempts or the deadline"
        )

    def _commit(self, ctx: RoundContext, discarded: list[dict[str, Any]]) -> RoundRecord:
        if ctx.new_model is None:
            raise ConfigError("the pipeline produced no new model: add an optimizer stage")
        for stage in self.stages:
            stage.commit(ctx)
        self.model = ctx.new_model
        self.round = ctx.round
        self.executor.acknowledge(ctx.round, ctx.accepted)
        weights = np.array([u.num_samples for u in ctx.accepted], dtype=np.float64)
        losses = [u.metrics.get("train_loss") for u in ctx.accepted]
        known = [float(v) for v in losses if v is not None]
        train_loss = (
            float(np.dot(weights, known) / weights.sum())
            if known and len(known) == len(losses)
            else None
        )
        privacy = ctx.measurement(PrivacyMeasurement)
        record = RoundRecord(
            round=ctx.round,
            attempt=ctx.attempt,
            accuracy=ctx.evaluation.get("accuracy"),
            loss=ctx.evaluation.get("loss"),
            participants=len(ctx.accepted),
            selected=list(ctx.selected),
            dropped=list(ctx.dropped),
            rejected=[asdict(r) for r in ctx.rejections],
            duration_s=time.perf_counter() - ctx.started,
            train_loss=train_loss,
            train_time_s=float(sum(u.metrics.get("train_time_s", 0.0) for u in ctx.accepted)),
            model_sha256=vector_sha256(self.model),
            measurements=ctx.measurements,
            discarded_attempts=discarded,
            # privacy spent so far, when a privacy stage accounted for the round
            epsilon=None if privacy is None else privacy.epsilon,
            delta=None if privacy is None else privacy.delta,
            accepted=[u.client_id for u in ctx.accepted],
            evaluation=ctx.federated_evaluation,
        )
        for hook in self.hooks:
            hook.on_commit(self, record)
        return record

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue identically (the model is stored separately)."""
        return {
            "round": self.round,
            "rng": self.rng.bit_generator.state,
            "stages": {s.name: s.state_dict() for s in self.stages},
            "extra": {k: v.state_dict() for k, v in self.extra_state.items()},
        }

    def load_state_dict(self, model: np.ndarray, state: dict[str, Any]) -> None:
        """Restore a state written by :meth:`state_dict` together with its model."""
        if model.shape != self.model.shape:
            raise ConfigError(
                f"checkpoint model has {model.shape[0]} entries, this run's model has "
                f"{self.model.shape[0]}: resume with the same model and dataset"
            )
        self.model = model.astype(np.float32, copy=True)
        self.round = int(state["round"])
        self.rng.bit_generator.state = state["rng"]
        for s in self.stages:
            s.load_state_dict(state["stages"].get(s.name, {}))
        for k, v in self.extra_state.items():
            v.load_state_dict(state["extra"].get(k, {}))


def _rejected_summary(discarded: list[dict[str, Any]]) -> str:
    """Why the discarded attempts' updates were rejected, counted by reason (``""`` if none
    was): a round that fails because every update was refused names why."""
    counts: dict[str, int] = {}
    for d in discarded:
        for r in d["rejected"]:
            key = f"{r['reason']} ({r['detail']})" if r["detail"] else r["reason"]
            counts[key] = counts.get(key, 0) + 1
    if not counts:
        return ""
    listed = ", ".join(f"{k} x{n}" for k, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    hint = (
        "; non-finite updates mean local training diverged: lower [clients] lr, or scale a "
        "regression label"
        if any(k.startswith("non_finite") for k in counts)
        else ""
    )
    return f"; updates rejected: {listed}{hint}"
