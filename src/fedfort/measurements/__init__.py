"""Typed measurements: what each stage of a round publishes, under a name declared once.

- :mod:`~fedfort.measurements.base`: :class:`Measurement`, the registry
  (:func:`register_measurement`), :class:`MeasurementSet` (typed reads over a round record)
  and the declarations of audit entries and Prometheus series a type supplies;
- :mod:`~fedfort.measurements.audited`: the types that write audit entries and feed series
  (detect, reputation, aggregate, privacy, rollback), registered first;
- :mod:`~fedfort.measurements.pipeline`: the other built-in stages' types.

A stage publishes with ``ctx.measure(SelectionMeasurement(selected=3, eligible=10))``;
a reader asks ``record.measurement(AggregateMeasurement)`` (a live
:class:`~fedfort.server.RoundRecord`) or ``MeasurementSet.of_record(stored).get(...)`` (a
record read from ``results.json`` or a checkpoint). See docs/architecture.md, "Measurements".
"""

from fedfort.measurements.audited import (
    REPUTATION_STATS,
    AggregateMeasurement,
    DetectMeasurement,
    FederatedEvaluationMeasurement,
    PrivacyMeasurement,
    ReputationMeasurement,
    RollbackMeasurement,
)
from fedfort.measurements.base import (
    OMIT_NONE,
    AuditItem,
    Measurement,
    MeasurementSet,
    MetricSpec,
    MetricValue,
    UntypedMeasurement,
    measurement_type,
    measurement_types,
    register_measurement,
)
from fedfort.measurements.pipeline import (
    CollectMeasurement,
    DataProtectionMeasurement,
    EvaluationMeasurement,
    QuorumMeasurement,
    SampleCapMeasurement,
    ScaffoldMeasurement,
    SelectionMeasurement,
    ServerOptimizerMeasurement,
    VerifyMeasurement,
)

__all__ = [
    "OMIT_NONE",
    "REPUTATION_STATS",
    "AggregateMeasurement",
    "AuditItem",
    "CollectMeasurement",
    "DataProtectionMeasurement",
    "DetectMeasurement",
    "EvaluationMeasurement",
    "FederatedEvaluationMeasurement",
    "Measurement",
    "MeasurementSet",
    "MetricSpec",
    "MetricValue",
    "PrivacyMeasurement",
    "QuorumMeasurement",
    "ReputationMeasurement",
    "RollbackMeasurement",
    "SampleCapMeasurement",
    "ScaffoldMeasurement",
    "SelectionMeasurement",
    "ServerOptimizerMeasurement",
    "UntypedMeasurement",
    "VerifyMeasurement",
    "measurement_type",
    "measurement_types",
    "register_measurement",
]
