"""Client-side data protection: declared schema, masking and sanitisation before training.

Everything here runs on the data holder, before local training, and nothing it handles
leaves the client: the server sees the model update and ``edge_*`` counts only. See
``docs/edge-data-protection.md``.

- :mod:`fedfort.edge.config`: the ``[edge]`` schema and policy (:class:`EdgeConfig`).
- :mod:`fedfort.edge.schema`: :func:`validate` against the schema.
- :mod:`fedfort.edge.masking`: drop, generalise, pseudonymise (:class:`PseudonymKey`).
- :mod:`fedfort.edge.sanitise`: out-of-distribution and label-noise filters.
- :mod:`fedfort.edge.pipeline`: :func:`protect`, the whole pipeline.
- :mod:`fedfort.edge.records`: record sources and :func:`client_training_data`.
"""

from fedfort.edge.config import EdgeConfig, FeatureSpec, FieldSpec, SanitiseConfig
from fedfort.edge.masking import PseudonymKey, apply_masking, generalise
from fedfort.edge.pipeline import METRIC_PREFIX, ProtectedData, protect
from fedfort.edge.records import (
    SYNTHETIC_COLUMNS,
    client_key,
    client_training_data,
    load_records,
    with_synthetic_identifiers,
)
from fedfort.edge.sanitise import SanitiseResult, sanitise
from fedfort.edge.schema import Records, ValidationCounts, validate

__all__ = [
    "METRIC_PREFIX",
    "SYNTHETIC_COLUMNS",
    "EdgeConfig",
    "FeatureSpec",
    "FieldSpec",
    "ProtectedData",
    "PseudonymKey",
    "Records",
    "SanitiseConfig",
    "SanitiseResult",
    "ValidationCounts",
    "apply_masking",
    "client_key",
    "client_training_data",
    "generalise",
    "load_records",
    "protect",
    "sanitise",
    "validate",
    "with_synthetic_identifiers",
]
