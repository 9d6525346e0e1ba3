"""The client's data-protection pipeline: validate -> mask -> de-duplicate -> sanitise.

:func:`protect` is the one entry point both runtimes call (a simulated client in
:class:`~fedfort.simulation.Simulation`, a networked one in ``fedfort client --data``) before
the first round, so the data a client trains on is the same either way. What it returns for
training is the feature matrix and labels of the rows that survived; what it reports is
counts only (``edge_*`` metrics), never a value or a field name.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedfort.edge.config import EdgeConfig
from fedfort.edge.masking import PseudonymKey, apply_masking, masking_counts
from fedfort.edge.sanitise import sanitise
from fedfort.edge.schema import Records, validate

__all__ = ["METRIC_PREFIX", "ProtectedData", "protect"]

METRIC_PREFIX = "edge_"


@dataclass(frozen=True)
class ProtectedData:
    """What survives the pipeline: features and labels for training, masked record columns
    kept on the client, and the per-stage counts."""

    x: np.ndarray
    y: np.ndarray
    records: Records
    counts: dict[str, int]

    def metrics(self) -> dict[str, float]:
        """The counts as update metrics (``edge_rows_in``, ...)."""
        return {METRIC_PREFIX + k: float(v) for k, v in self.counts.items()}


def protect(
    config: EdgeConfig,
    records: Records,
    *,
    num_classes: int,
    key: PseudonymKey | None,
    seed: int = 0,
) -> ProtectedData:
    """Run the declared pipeline over one client's ``records``.

    Raises :class:`~fedfort.errors.InvalidRecord` / :class:`~fedfort.errors.DatasetError`
    when a record breaks a ``reject`` policy; ``records`` is never modified.
    """
    valid, vcounts = validate(config, records, num_classes)
    masked = apply_masking(config, valid, key)
    duplicates = 0
    if config.deduplicate_on is not None:
        _, first = np.unique(masked.columns[config.deduplicate_on], return_index=True)
        unique = np.zeros(len(masked), dtype=bool)
        unique[first] = True
        duplicates = int((~unique).sum())
        masked = masked.take(unique)
    result = sanitise(masked.x, masked.y, config.sanitise, seed)
    kept = masked.take(result.keep)
    counts = {
        "rows_in": vcounts.rows_in,
        "rows_dropped_missing": vcounts.rows_dropped_missing,
        "rows_dropped_invalid": vcounts.rows_dropped_invalid,
        "values_imputed": vcounts.values_imputed,
        **masking_counts(config),
        "duplicates_removed": duplicates,
        "outliers_flagged": result.outliers_flagged,
        "label_issues_flagged": result.label_issues_flagged,
        "label_check_skipped": int(result.label_check_skipped),
        "rows_removed_sanitise": result.rows_removed,
        "rows_out": len(kept),
    }
    x = np.ascontiguousarray(kept.x, dtype=np.float32)
    labels = np.asarray(kept.y)
    y = np.ascontiguousarray(labels, dtype=np.float32 if labels.dtype.kind == "f" else np.int64)
    return ProtectedData(x, y, kept, counts)
