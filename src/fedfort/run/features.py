"""A run's stage pipeline, assembled from features.

Each capability of a run -- secure aggregation, privacy, SCAFFOLD, client-side data protection,
anomaly detection, drift rollback, reputation, and federated averaging itself -- is one
:class:`Feature` that contributes its stages to named slots of a :class:`Pipeline`.
Assembling a run is a loop over its features (:func:`assemble`); the slots fix the order of the
round (:data:`SLOTS`), so a feature says *where* its stage goes, not *after which other
feature's stage*. A slot such as ``select`` or ``aggregate`` holds one stage: the first feature
that provides it wins (secure aggregation before privacy before the plain rule), and a feature
may attach a per-round directive to the broadcast (privacy, secure aggregation, SCAFFOLD's
control variate).

A user's own feature is a subclass of :class:`Feature` given to the run
(``Simulation(..., features=[MyFeature()])``); its stages join the pipeline the run records in
its identity, so a resume without it is refused.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from fedfort.aggregation.base import Aggregator
from fedfort.config import RunConfig, federated_evaluation
from fedfort.detection.detector import AnomalyDetector
from fedfort.detection.reputation import ReputationLedger
from fedfort.errors import ConfigError
from fedfort.evaluation.config import default_loss
from fedfort.evaluation.metrics import default_metrics
from fedfort.run.privacy import PrivacySetup, local_training
from fedfort.server.data_report import ReportDataProtection
from fedfort.server.defense import DetectAnomalies, UpdateReputation
from fedfort.server.engine import Stage
from fedfort.server.federated_evaluation import FederatedEvaluate
from fedfort.server.optimizers import build_server_optimizer
from fedfort.server.rollback import DriftRollback
from fedfort.server.sample_cap import CapSampleCounts
from fedfort.server.scaffold import ScaffoldControl
from fedfort.server.secure import SecureAggregate
from fedfort.server.selection import SelectClients
from fedfort.server.stages import (
    Aggregate,
    ApplyServerOptimizer,
    Broadcast,
    Collect,
    EnforceQuorum,
    Evaluate,
)
from fedfort.server.verify import VerifyUpdates

__all__ = [
    "SLOTS",
    "Averaging",
    "Detection",
    "DriftRollbackFeature",
    "EdgeReport",
    "Feature",
    "FederatedEvaluation",
    "Pipeline",
    "Privacy",
    "Reputation",
    "RunParts",
    "Scaffold",
    "SecureAggregation",
    "assemble",
    "default_features",
]

#: the slots of a round, in order
SLOTS: tuple[str, ...] = (
    "guard",  # refuse the round before it starts (privacy budget)
    "select",  # one stage: who takes part
    "broadcast",  # send the task (with every feature's directive)
    "collect",  # wait for the updates
    "verify",  # shape, signatures, finite values
    "admit",  # caps on what a client may claim (sample counts)
    "screen",  # reports and per-client screening (data protection, anomaly detection)
    "quorum",  # enough updates left to commit
    "aggregate",  # one stage: the round's aggregate
    "aggregated",  # state that follows the aggregate (SCAFFOLD's control variates)
    "optimize",  # the server optimizer applies the aggregate
    "evaluate",  # the new model's metrics
    "evaluated",  # decisions on the evaluated model (drift rollback)
    "account",  # privacy accounting of the release
    "learn",  # what the server learns about clients (reputation)
)
_SINGLE = frozenset({"select", "aggregate"})


@dataclasses.dataclass
class RunParts:
    """What features read while contributing: the run's config and its shared objects."""

    config: RunConfig
    dim: int
    aggregator: Aggregator
    privacy: PrivacySetup
    reputation: ReputationLedger | None
    declared_sample_counts: Callable[[], dict[str, int]]
    evaluate: Callable[[np.ndarray], dict[str, float]]
    load_version: Callable[[int], tuple[np.ndarray, dict[str, Any]]]
    directory: Callable[[], Any]


class Pipeline:
    """The stages contributed so far, by slot, and the directives for the broadcast."""

    def __init__(self) -> None:
        self._slots: dict[str, list[Stage]] = {slot: [] for slot in SLOTS}
        #: per-round directives attached to every task: ``privacy``, ``secure``, ``control``
        self.directives: dict[str, Callable[..., Any]] = {}

    def add(self, slot: str, *stages: Stage) -> None:
        """Append ``stages`` to ``slot``."""
        self._check(slot)
        if slot in _SINGLE:
            raise ConfigError(f"slot {slot!r} holds one stage: use provide()")
        self._slots[slot].extend(stages)

    def provide(self, slot: str, stage: Stage) -> bool:
        """Fill the one-stage ``slot`` unless an earlier feature did; whether it was taken."""
        self._check(slot)
        if slot not in _SINGLE:
            raise ConfigError(f"slot {slot!r} holds many stages: use add()")
        if self._slots[slot]:
            return False
        self._slots[slot].append(stage)
        return True

    def provided(self, slot: str) -> Stage | None:
        """The stage in a one-stage slot, if a feature provided it."""
        self._check(slot)
        return self._slots[slot][0] if self._slots[slot] else None

    def slot(self, slot: str) -> list[Stage]:
        """The stages contributed to ``slot`` so far (a copy)."""
        self._check(slot)
        return list(self._slots[slot])

    def directive(self, name: str, source: Callable[..., Any]) -> None:
        """Attach a per-round directive to the broadcast (one source per name)."""
        if name in self.directives:
            raise ConfigError(f"two features give the broadcast directive {name!r}")
        self.directives[name] = source

    def stages(self) -> list[Stage]:
        """Every contributed stage in slot order."""
        missing = [slot for slot in _SINGLE if not self._slots[slot]]
        if missing:
            raise ConfigError(f"no feature provided the {missing} stage of the round")
        return [stage for slot in SLOTS for stage in self._slots[slot]]

    @staticmethod
    def _check(slot: str) -> None:
        if slot not in SLOTS:
            raise ConfigError(f"unknown pipeline slot {slot!r}; slots are {SLOTS}")


class Feature(ABC):
    """One capability of a run: contributes its stages to the pipeline's slots."""

    name: str = "feature"

    @abstractmethod
    def contribute(self, parts: RunParts, pipeline: Pipeline) -> None:
        """Add stages (:meth:`Pipeline.add`), fill a one-stage slot (:meth:`Pipeline.provide`)
        or attach a directive to the broadcast (:meth:`Pipeline.directive`)."""


class SecureAggregation(Feature):
    """``[secure_aggregation]``: the server sees only the sum (docs/secure-aggregation.md)."""

    name = "secure_aggregation"

    def contribute(self, parts: RunParts, pipeline: Pipeline) -> None:
        config, privacy = parts.config, parts.privacy
        sa = config.secure_aggregation
        if sa.mode == "none":
            raise ConfigError("the secure aggregation feature needs secure_aggregation.mode")
        stage = SecureAggregate(
            sa.mode,
            parts.dim,
            run_id=config.identity_hash()[:32],
            directory=parts.directory,
            bits=sa.bits,
            value_range=sa.value_range,
            max_weight=min(sa.max_weight, config.server.max_sample_count or sa.max_weight),
            threshold=sa.threshold,
            degree=sa.degree,
            corrupt_fraction=sa.corrupt_fraction,
            dropout_fraction=sa.dropout_fraction,
            ckks_poly_modulus_degree=sa.ckks_poly_modulus_degree,
            step_deadline_s=sa.step_deadline_s,
            privacy=privacy.directive(),
            private=privacy.aggregate,
        )
        pipeline.provide("aggregate", stage)
        pipeline.directive("secure", stage.directive)


class Privacy(Feature):
    """``[privacy]``: budget guard, sampling, the private aggregate and its accounting."""

    name = "privacy"

    def contribute(self, parts: RunParts, pipeline: Pipeline) -> None:
        privacy = parts.privacy
        pipeline.add("guard", *privacy.guard())
        selection = privacy.selection()
        if selection is not None:
            pipeline.provide("select", selection)
        directive = privacy.directive()
        if directive is not None:
            pipeline.directive("privacy", directive)
        if privacy.aggregate is not None:
            pipeline.provide("aggregate", privacy.aggregate)
        pipeline.add("account", *privacy.accounting())


class Scaffold(Feature):
    """SCAFFOLD's server control variates (Karimireddy et al., ICML 2020)."""

    name = "scaffold"

    def contribute(self, parts: RunParts, pipeline: Pipeline) -> None:
        control = ScaffoldControl(parts.dim, parts.config.clients.count)
        pipeline.directive("control", control.current)
        pipeline.add("aggregated", control)


class EdgeReport(Feature):
    """``[edge]``: the clients' data-protection counts in the round record."""

    name = "edge"

    def contribute(self, parts: RunParts, pipeline: Pipeline) -> None:
        pipeline.add("screen", ReportDataProtection())


class Detection(Feature):
    """``[detection]``: per-client anomaly scores and the configured action."""

    name = "detection"

    def contribute(self, parts: RunParts, pipeline: Pipeline) -> None:
        config = parts.config
        det = config.detection
        detector = AnomalyDetector(
            parts.dim,
            components=det.components,
            threshold=det.threshold,
            num_byzantine=config.defense.num_byzantine,
            seed=config.seed,
        )
        pipeline.add("screen", DetectAnomalies(detector, det.action, det.downweight_factor))


class FederatedEvaluation(Feature):
    """``[evaluation] client_holdout``: the clients score each evaluated model on their own
    hold-outs (:mod:`fedfort.server.federated_evaluation`)."""

    name = "federated_evaluation"

    def contribute(self, parts: RunParts, pipeline: Pipeline) -> None:
        config = parts.config
        ev, srv, task = config.evaluation, config.server, config.data.task
        fallback = srv.max_sample_count or ev.max_examples
        declared = parts.declared_sample_counts
        pipeline.add(
            "evaluate",
            FederatedEvaluate(
                ev.metrics or default_metrics(task),
                config.clients.loss or default_loss(task),
                task,
                every=ev.every,
                caps=declared,
                max_examples=fallback,
                deadline_s=ev.deadline_s,
            ),
        )


class DriftRollbackFeature(Feature):
    """``governance.rollback_drop``: roll back a round whose accuracy drops too far."""

    name = "rollback"

    def contribute(self, parts: RunParts, pipeline: Pipeline) -> None:
        drop = parts.config.governance.rollback_drop
        assert drop is not None
        apply = next(s for s in pipeline.slot("optimize") if isinstance(s, ApplyServerOptimizer))
        source = parts.config.governance.rollback_on
        pipeline.add("evaluated", DriftRollback(drop, apply, parts.load_version, source=source))


class Reputation(Feature):
    """``[reputation]``: a ledger of client behaviour that weights selection."""

    name = "reputation"

    def contribute(self, parts: RunParts, pipeline: Pipeline) -> None:
        assert parts.reputation is not None
        pipeline.add("learn", UpdateReputation(parts.reputation))


class Averaging(Feature):
    """Federated averaging itself: select, broadcast, collect, verify, cap the claimed sample
    counts, enforce the quorum, aggregate with the configured rule, apply the server optimizer
    and evaluate. It fills the one-stage slots no earlier feature took."""

    name = "averaging"

    def contribute(self, parts: RunParts, pipeline: Pipeline) -> None:
        config, srv = parts.config, parts.config.server
        pipeline.provide(
            "select", SelectClients(srv.fraction, srv.min_clients, policy=parts.reputation)
        )
        d = pipeline.directives
        pipeline.add(
            "broadcast",
            Broadcast(
                local_training(config),
                config.seed,
                control=d.get("control"),
                privacy=d.get("privacy"),
                secure=d.get("secure"),
            ),
        )
        sealed = "secure" in d
        pipeline.add("collect", Collect(srv.deadline_s))
        pipeline.add(
            "verify", VerifyUpdates(parts.dim, expect_control="control" in d, sealed=sealed)
        )
        if not sealed:  # sealed updates carry no count; the client clamps at max_weight
            pipeline.add(
                "admit",
                CapSampleCounts(
                    parts.declared_sample_counts(),
                    max_count=srv.max_sample_count,
                    ratio=srv.sample_count_ratio,
                ),
            )
        need = parts.aggregator.min_updates(config.defense.num_byzantine)
        pipeline.add("quorum", EnforceQuorum(max(srv.min_participants, need), srv.quorum))
        pipeline.provide("aggregate", Aggregate(parts.aggregator))
        optimizer = build_server_optimizer(srv.model_dump())
        pipeline.add("optimize", ApplyServerOptimizer(optimizer))
        pipeline.add("evaluate", Evaluate(parts.evaluate, srv.eval_every))


def default_features(config: RunConfig, own: Sequence[Feature] = ()) -> list[Feature]:
    """The features a config switches on, and the run's ``own``, in contribution order.

    Features that may fill a one-stage slot or give a directive come first: secure
    aggregation, then privacy, then the run's own features, so that a user's feature can
    provide the round's aggregate (a privacy mechanism of its own, say) wherever fedfort's
    secure aggregation or privacy do not; then SCAFFOLD, edge reports and detection; then
    :class:`Averaging`, which fills what is left; then federated evaluation, rollback and
    reputation.
    """
    features: list[Feature] = []
    if config.secure_aggregation.mode != "none":
        features.append(SecureAggregation())
    features.append(Privacy())
    features.extend(own)
    if config.clients.algorithm == "scaffold":
        features.append(Scaffold())
    if config.edge.enabled:
        features.append(EdgeReport())
    if config.detection.enabled:
        features.append(Detection())
    features.append(Averaging())
    if federated_evaluation(config):
        features.append(FederatedEvaluation())
    if config.governance.rollback_drop is not None:
        features.append(DriftRollbackFeature())
    if config.reputation.enabled:
        features.append(Reputation())
    return features


def assemble(parts: RunParts, features: Sequence[Feature]) -> list[Stage]:
    """The run's stages: every feature contributes, in order, then the slots are read out."""
    pipeline = Pipeline()
    for feature in features:
        feature.contribute(parts, pipeline)
    return pipeline.stages()
