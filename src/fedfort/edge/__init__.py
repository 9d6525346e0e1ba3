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

from typing import TYPE_CHECKING

from fedfort._lazy import lazy_exports

# ``sanitise`` names a submodule and its function: binding the function now, before anything
# imports the submodule by itself, keeps ``fedfort.edge.sanitise`` the function (scikit-learn
# still loads only when a filter runs)
from fedfort.edge.sanitise import SanitiseResult, sanitise

if TYPE_CHECKING:
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

if not TYPE_CHECKING:  # type checkers see the imports above; typos stay errors
    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "EdgeConfig": "fedfort.edge.config",
            "FeatureSpec": "fedfort.edge.config",
            "FieldSpec": "fedfort.edge.config",
            "SanitiseConfig": "fedfort.edge.config",
            "PseudonymKey": "fedfort.edge.masking",
            "apply_masking": "fedfort.edge.masking",
            "generalise": "fedfort.edge.masking",
            "METRIC_PREFIX": "fedfort.edge.pipeline",
            "ProtectedData": "fedfort.edge.pipeline",
            "protect": "fedfort.edge.pipeline",
            "SYNTHETIC_COLUMNS": "fedfort.edge.records",
            "client_key": "fedfort.edge.records",
            "client_training_data": "fedfort.edge.records",
            "load_records": "fedfort.edge.records",
            "with_synthetic_identifiers": "fedfort.edge.records",
            "Records": "fedfort.edge.schema",
            "ValidationCounts": "fedfort.edge.schema",
            "validate": "fedfort.edge.schema",
        },
        globals(),
    )
