"""The measurements of the round pipeline's other stages (no audit entry, no series of their
own: the round record's top-level fields carry what the audit log and the metrics need)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fedfort.measurements.base import OMIT_NONE, Measurement, register_measurement

__all__ = [
    "CollectMeasurement",
    "DataProtectionMeasurement",
    "EvaluationMeasurement",
    "QuorumMeasurement",
    "SampleCapMeasurement",
    "ScaffoldMeasurement",
    "SelectionMeasurement",
    "ServerOptimizerMeasurement",
    "VerifyMeasurement",
]


@register_measurement
@dataclass(frozen=True)
class SelectionMeasurement(Measurement):
    """How many clients were selected out of how many eligible (``SelectClients``,
    ``PoissonSelection``)."""

    name = "select"

    selected: int = 0
    eligible: int = 0


@register_measurement
@dataclass(frozen=True)
class CollectMeasurement(Measurement):
    """Updates received before the deadline and selected clients that dropped (``Collect``);
    ``refused`` names the dropped clients that refused the task, with their reason code."""

    name = "collect"

    received: int = 0
    dropped: int = 0
    refused: dict[str, str] | None = field(default=None, metadata=OMIT_NONE)


@register_measurement
@dataclass(frozen=True)
class VerifyMeasurement(Measurement):
    """Updates that passed verification, and the refused ones by reason code (``VerifyUpdates``)."""

    name = "verify"

    accepted: int = 0
    rejected: dict[str, int] = field(default_factory=dict)


@register_measurement
@dataclass(frozen=True)
class SampleCapMeasurement(Measurement):
    """Sample counts capped this round: what each capped client claimed and was given
    (``CapSampleCounts``)."""

    name = "sample_cap"

    capped: int = 0
    claimed: dict[str, int] = field(default_factory=dict)
    given: dict[str, int] = field(default_factory=dict)


@register_measurement
@dataclass(frozen=True)
class QuorumMeasurement(Measurement):
    """The quorum the attempt needed and the valid updates it had (``EnforceQuorum``)."""

    name = "quorum"

    required: int = 0
    valid: int = 0


@register_measurement
@dataclass(frozen=True)
class ServerOptimizerMeasurement(Measurement):
    """The server optimizer's rule and the norm of the step it took (``ApplyServerOptimizer``)."""

    name = "server_optimizer"

    rule: str = ""
    update_norm: float = 0.0


@register_measurement
@dataclass(frozen=True)
class ScaffoldMeasurement(Measurement):
    """The norm of SCAFFOLD's next server control variate (``ScaffoldControl``)."""

    name = "scaffold_control"

    control_norm: float = 0.0


@register_measurement
@dataclass(frozen=True)
class EvaluationMeasurement(Measurement):
    """Evaluation results beyond accuracy and loss (those are top-level in the round record),
    all in ``extra``: e.g. ``backdoor_asr`` under a backdoor attack (``Evaluate``)."""

    name = "evaluate"

    @property
    def backdoor_asr(self) -> float | None:
        """The backdoor's attack success rate, when the evaluation measured one."""
        value: Any = self.extra.get("backdoor_asr")
        return value if isinstance(value, int | float) else None


@register_measurement
@dataclass(frozen=True)
class DataProtectionMeasurement(Measurement):
    """The accepted clients' data-protection counts, per client and in total
    (``ReportDataProtection``)."""

    name = "edge"

    clients: dict[str, dict[str, int]] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=dict)
