"""The measurements that write audit entries and feed Prometheus series.

Registered first, in this order, so a round's audit entries keep their order: the detector's
flags, the reputation ledger, the aggregation (and its secure-aggregation session), the
privacy accounting, a drift rollback, the clients' federated evaluation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from fedfort.measurements.base import (
    OMIT_NONE,
    AuditItem,
    Measurement,
    MetricSpec,
    MetricValue,
    register_measurement,
)

__all__ = [
    "REPUTATION_STATS",
    "AggregateMeasurement",
    "DetectMeasurement",
    "FederatedEvaluationMeasurement",
    "PrivacyMeasurement",
    "ReputationMeasurement",
    "RollbackMeasurement",
]

#: the ``stat`` label values of ``fedfort_reputation`` (fields of the reputation measurement)
REPUTATION_STATS: Final[tuple[str, ...]] = ("min", "p10", "median", "p90", "max", "mean")

#: how a securely aggregated round's rule is stored (``secure_masking``, ``secure_ckks``...)
_SECURE_PREFIX: Final = "secure_"


def _number(value: Any) -> float | None:
    """``value`` as a float, or ``None`` when it is missing or not a number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


@register_measurement
@dataclass(frozen=True)
class DetectMeasurement(Measurement):
    """The anomaly detector's verdict on the round's updates (``DetectAnomalies``)."""

    name = "detect"
    metrics = (
        MetricSpec(
            "fedfort_clients_flagged_total", "Updates flagged by the anomaly detector.", "counter"
        ),
        MetricSpec(
            "fedfort_round_clients_flagged",
            "Updates flagged by the anomaly detector in the last round.",
            "gauge",
            per_round=True,
        ),
    )

    action: str | None = None
    flagged: list[str] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)
    components: dict[str, dict[str, float]] = field(default_factory=dict)

    def audit_entries(self) -> list[AuditItem]:
        return [
            (
                "clients_flagged",
                {"action": self.action, "flagged": self.flagged, "scores": self.scores},
            )
        ]

    def metric_values(self) -> list[MetricValue]:
        count = len(self.flagged or [])
        return [
            MetricValue("fedfort_clients_flagged_total", count),
            MetricValue("fedfort_round_clients_flagged", count),
        ]


@register_measurement
@dataclass(frozen=True)
class ReputationMeasurement(Measurement):
    """The reputation ledger after the round (``UpdateReputation``): who lost reputation,
    who is quarantined, and the distribution of the scores (``None`` without clients)."""

    name = "reputation"
    metrics = (
        MetricSpec(
            "fedfort_reputation",
            "Distribution of the clients' reputation scores after the last round.",
            "gauge",
            labels=("stat",),
        ),
        MetricSpec(
            "fedfort_clients_quarantined",
            "Clients quarantined by the reputation ledger after the last round.",
            "gauge",
        ),
    )

    penalised: list[str] = field(default_factory=list)
    quarantined: list[str] | None = None
    mean: float | None = None
    min: float | None = None
    max: float | None = None
    p10: float | None = field(default=None, metadata=OMIT_NONE)
    median: float | None = field(default=None, metadata=OMIT_NONE)
    p90: float | None = field(default=None, metadata=OMIT_NONE)

    def audit_entries(self) -> list[AuditItem]:
        return [("reputation", self.to_dict())]

    def metric_values(self) -> list[MetricValue]:
        values = []
        for stat in REPUTATION_STATS:
            value = _number(getattr(self, stat))
            if value is not None:
                values.append(MetricValue("fedfort_reputation", value, {"stat": stat}))
        if self.quarantined is not None:
            values.append(MetricValue("fedfort_clients_quarantined", len(self.quarantined)))
        return values


@register_measurement
@dataclass(frozen=True)
class AggregateMeasurement(Measurement):
    """How the round's updates were combined (``Aggregate``, ``PrivateAggregate``,
    ``SecureAggregate``): the rule, its diagnostics in ``extra``, and for a secure-aggregation
    session the clients it included and those that dropped out at which step.

    ``secure`` says whether the aggregate was computed by secure aggregation; ``rule`` is then
    the protocol's mode. The stored form keeps the rule as ``secure_<mode>``. Under
    differential privacy the release publishes its own rule (``dp_fedavg_<placement>``) over
    the session's, so ``secure`` is false there and :attr:`secure_session` tells.
    """

    name = "aggregate"
    metrics = (
        MetricSpec(
            "fedfort_secagg_dropouts_total",
            "Clients that dropped out mid-protocol in committed secure-aggregation sessions.",
            "counter",
        ),
        MetricSpec(
            "fedfort_round_secagg_dropouts",
            "Clients that dropped out of the last round's secure-aggregation session.",
            "gauge",
            per_round=True,
        ),
    )

    rule: str = ""
    secure: bool = False
    included: int | None = field(default=None, metadata=OMIT_NONE)
    protocol_dropped: dict[str, str] | None = field(default=None, metadata=OMIT_NONE)
    protocol_s: float | None = field(default=None, metadata=OMIT_NONE)
    bytes_client_to_server: int | None = field(default=None, metadata=OMIT_NONE)
    bytes_server_to_client: int | None = field(default=None, metadata=OMIT_NONE)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out.pop("secure", None)
        if self.secure and "rule" in out:
            out["rule"] = _SECURE_PREFIX + self.rule
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> AggregateMeasurement:
        stored = dict(values)
        rule = str(stored.get("rule", ""))
        secure = rule.startswith(_SECURE_PREFIX)
        if "rule" in stored:
            stored["rule"] = rule.removeprefix(_SECURE_PREFIX)
        return dataclasses.replace(super().from_dict(stored), secure=secure)

    @property
    def stored_rule(self) -> str:
        """The rule as the round record names it (``secure_<mode>`` for a secure session)."""
        return _SECURE_PREFIX + self.rule if self.secure else self.rule

    @property
    def secure_session(self) -> bool:
        """Whether a secure-aggregation session produced the round's sum: ``secure``, or a
        session whose sum was then released with DP noise (``rule`` is the DP rule then)."""
        return self.secure or self.protocol_dropped is not None

    def audit_entries(self) -> list[AuditItem]:
        entries: list[AuditItem] = [("aggregation", self.to_dict())]
        if self.secure:
            entries.append(
                (
                    "secure_aggregation",
                    {
                        "mode": self.rule,
                        "included": self.included,
                        "protocol_dropped": self.protocol_dropped or {},
                    },
                )
            )
        return entries

    def metric_values(self) -> list[MetricValue]:
        dropouts = len(self.protocol_dropped or {})
        return [
            MetricValue("fedfort_secagg_dropouts_total", dropouts),
            MetricValue("fedfort_round_secagg_dropouts", dropouts),
        ]


@register_measurement
@dataclass(frozen=True)
class PrivacyMeasurement(Measurement):
    """The round's privacy accounting (``AccountPrivacy``): the mode, and with a ledger the
    epsilon spent so far at ``delta``; with DP-SGD the clients' own reported epsilons (their
    maximum, mean, and each committed client's under ``dp_sgd_epsilon``)."""

    name = "privacy"

    mode: str = "none"
    epsilon: float | None = field(default=None, metadata=OMIT_NONE)
    delta: float | None = field(default=None, metadata=OMIT_NONE)
    noise_multiplier: float | None = field(default=None, metadata=OMIT_NONE)
    accountant: str | None = field(default=None, metadata=OMIT_NONE)
    releases: int | None = field(default=None, metadata=OMIT_NONE)
    target_epsilon: float | None = field(default=None, metadata=OMIT_NONE)
    dp_sgd_delta: float | None = field(default=None, metadata=OMIT_NONE)
    dp_sgd_epsilon_max: float | None = field(default=None, metadata=OMIT_NONE)
    dp_sgd_epsilon_mean: float | None = field(default=None, metadata=OMIT_NONE)
    dp_sgd_epsilon: dict[str, float] | None = field(default=None, metadata=OMIT_NONE)

    def audit_entries(self) -> list[AuditItem]:
        return [("privacy", self.to_dict())]


@register_measurement
@dataclass(frozen=True)
class RollbackMeasurement(Measurement):
    """A drift rollback (``DriftRollback``): the candidate refused and the version committed
    instead, and why."""

    name = "rollback"
    metrics = (MetricSpec("fedfort_rollbacks_total", "Rollbacks of the global model.", "counter"),)

    automatic: bool = True
    reason: str = ""
    rejected_sha256: str | None = None
    rejected_accuracy: float | None = None
    rejected_loss: float | None = None
    to_version: int | None = None
    to_sha256: str | None = None
    max_drop: float | None = None

    def audit_entries(self) -> list[AuditItem]:
        return [("rollback", self.to_dict())]

    def metric_values(self) -> list[MetricValue]:
        return [MetricValue("fedfort_rollbacks_total", 1)]


@register_measurement
@dataclass(frozen=True)
class FederatedEvaluationMeasurement(Measurement):
    """The clients' evaluation of the round's model on their own hold-outs
    (``FederatedEvaluate``): the example-weighted ``overall`` values, each answering client's
    example count, the reports the server dropped and why, and the clients that did not
    answer. The per-client values are in the round record's ``evaluation``."""

    name = "federated_evaluation"
    metrics = (
        MetricSpec(
            "fedfort_federated_metric",
            "The clients' example-weighted evaluation of the global model (last evaluated "
            "round), by metric.",
            "gauge",
            labels=("metric",),
        ),
        MetricSpec(
            "fedfort_federated_reports_rejected_total",
            "Client evaluation reports the server dropped (not asked, out of range...).",
            "counter",
        ),
    )

    overall: dict[str, float] = field(default_factory=dict)
    examples: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)

    def audit_entries(self) -> list[AuditItem]:
        return [("federated_evaluation", self.to_dict())]

    def metric_values(self) -> list[MetricValue]:
        values = [
            MetricValue("fedfort_federated_metric", float(v), {"metric": k})
            for k, v in self.overall.items()
        ]
        values.append(MetricValue("fedfort_federated_reports_rejected_total", len(self.rejected)))
        return values
