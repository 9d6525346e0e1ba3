"""Validation of a client's records against the declared schema.

:func:`validate` checks every column of a :class:`Records` table against its
:class:`~fedfort.edge.config.FieldSpec` (the feature matrix against the
:class:`~fedfort.edge.config.FeatureSpec`) and applies the declared missing-value and
invalid-value policies. It fails closed: a column the schema does not declare, a declared
column that is absent, a value of the wrong type, out of range or outside the allowed
categories raises :class:`~fedfort.errors.InvalidRecord` naming the field, the row and the
problem. Nothing is modified in place: the input table is left as it was, whether validation
succeeds or fails.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fedfort.edge.config import EdgeConfig, FeatureSpec, FieldSpec
from fedfort.errors import DatasetError, InvalidRecord

__all__ = ["Records", "ValidationCounts", "validate"]


@dataclass(frozen=True)
class Records:
    """One client's raw table: features ``x`` (n, d), labels ``y`` (n,) and record columns.

    Missing numbers are NaN; a missing text value is ``""`` or ``None``.
    """

    x: np.ndarray
    y: np.ndarray
    columns: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)
    #: the feature columns' names, in order: errors name ``'mean_perimeter'``, not ``x[:, 2]``
    feature_names: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def take(self, keep: np.ndarray) -> Records:
        """The rows where boolean ``keep`` is true (copies)."""
        return Records(
            self.x[keep],
            self.y[keep],
            {k: v[keep] for k, v in self.columns.items()},
            self.feature_names,
        )

    def feature_name(self, j: int) -> str:
        """Feature ``j``'s name (``x[:, j]`` when the features are unnamed)."""
        if self.feature_names is not None and 0 <= j < len(self.feature_names):
            return self.feature_names[j]
        return f"x[:, {j}]"


@dataclass(frozen=True)
class ValidationCounts:
    """How many rows validation removed and how many values it imputed."""

    rows_in: int
    rows_dropped_missing: int
    rows_dropped_invalid: int
    values_imputed: int


def _is_missing_text(values: np.ndarray) -> np.ndarray:
    out = np.zeros(values.shape[0], dtype=bool)
    for i, v in enumerate(values.tolist()):
        out[i] = v is None or v in ("", b"") or (isinstance(v, float) and v != v)
    return out


def _as_numbers(
    name: str, column: np.ndarray, reveal: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """The column as float64 and its missing mask; a non-number raises InvalidRecord."""
    if column.dtype.kind in "fiub":
        values = column.astype(np.float64)
        return values, np.isnan(values)
    missing = _is_missing_text(column)
    values = np.full(column.shape[0], np.nan)
    for i in np.flatnonzero(~missing):
        raw = column[i]
        shown = repr(raw) if reveal else "<redacted>"
        try:
            values[i] = float(raw)
        except (TypeError, ValueError):
            raise InvalidRecord(name, int(i), f"{shown} is not a number") from None
        if not np.isfinite(values[i]):
            raise InvalidRecord(name, int(i), f"{shown} is not a finite number")
    return values, missing


def _as_text(column: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The column as text (``object`` array) and its missing mask."""
    if column.dtype.kind in "iub":
        return column.astype(str).astype(object), np.zeros(column.shape[0], dtype=bool)
    if column.dtype.kind == "f":
        missing = np.isnan(column)
        # whole numbers read as ids: 12345.0 -> "12345"
        text = [
            "" if m else (str(int(v)) if float(v).is_integer() else repr(float(v)))
            for v, m in zip(column.tolist(), missing.tolist(), strict=True)
        ]
        return np.array(text, dtype=object), missing
    missing = _is_missing_text(column)
    strings = [v.decode() if isinstance(v, bytes) else str(v) for v in column.tolist()]
    out = np.array(
        ["" if m else v for v, m in zip(strings, missing.tolist(), strict=True)], dtype=object
    )
    return out, missing


def _first(
    name: str, bad: np.ndarray, problem: str, shown: np.ndarray, reveal: bool = True
) -> InvalidRecord:
    row = int(np.flatnonzero(bad)[0])
    # the value of a field declared sensitive (dropped or pseudonymised) is never echoed
    return InvalidRecord(name, row, problem.format(value=shown[row] if reveal else "<redacted>"))


def _check_numeric(
    name: str,
    values: np.ndarray,
    valid: np.ndarray,
    spec: FieldSpec | FeatureSpec,
    is_int: bool,
    reveal: bool = True,
) -> tuple[np.ndarray, InvalidRecord | None]:
    """Rows (among ``valid``) that break type or range, and the error for the first."""
    bad = np.zeros(values.shape[0], dtype=bool)
    error: InvalidRecord | None = None
    checks: list[tuple[np.ndarray, str]] = [
        (valid & ~np.isfinite(values), "{value} is not a finite number")
    ]
    if is_int:
        with np.errstate(invalid="ignore"):
            checks.append((valid & (values != np.round(values)), "{value} is not an integer"))
    if spec.min is not None:
        checks.append((valid & (values < spec.min), f"{{value}} is below the minimum {spec.min}"))
    if spec.max is not None:
        checks.append((valid & (values > spec.max), f"{{value}} is above the maximum {spec.max}"))
    for rows, problem in checks:
        if rows.any() and error is None:
            error = _first(name, rows, problem, values, reveal)
        bad |= rows
    return bad, error


def _column_specs(
    spec: FeatureSpec, by_feature: Mapping[str, FeatureSpec], records: Records, d: int
) -> list[FeatureSpec]:
    """Each feature column's checks: its own ``[edge.by_feature]`` entry, else ``spec``."""
    if not by_feature:
        return [spec] * d
    names = records.feature_names
    unknown = sorted(set(by_feature) - set(names or ()))
    if unknown:
        shown = ", ".join(repr(n) for n in (names or ())[:12])
        raise DatasetError(
            f"[edge.by_feature] names {unknown}, which are not features of the data "
            f"(features: {shown or 'unnamed'})"
        )
    assert names is not None
    return [by_feature.get(name, spec) for name in names]


def _validate_features(
    x: np.ndarray, spec: FeatureSpec, records: Records, by_feature: Mapping[str, FeatureSpec]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Features as float32 with imputation, and rows to drop for missing / invalid values.

    Every column has its checks (``[edge.features]``, or its own ``[edge.by_feature.<name>]``);
    the checks are vectorised over the whole matrix with per-column bounds and policies."""
    if x.ndim != 2 or x.dtype.kind not in "fiub":
        raise DatasetError(f"features x must be a numeric (n, d) matrix, got {x.dtype} {x.shape}")
    specs = _column_specs(spec, by_feature, records, x.shape[1])
    low = np.array([-np.inf if s.min is None else s.min for s in specs])
    high = np.array([np.inf if s.max is None else s.max for s in specs])
    reject_invalid = np.array([s.invalid == "reject" for s in specs])
    values = x.astype(np.float64)
    missing = np.isnan(values)
    valid = ~missing
    with np.errstate(invalid="ignore"):
        checks: list[tuple[np.ndarray, str]] = [
            (valid & ~np.isfinite(values), "{value} is not a finite number"),
            (valid & (values < low), "{value} is below the minimum {low}"),
            (valid & (values > high), "{value} is above the maximum {high}"),
        ]
    bad = np.zeros(values.shape, dtype=bool)
    for cells, problem in checks:
        rejected = cells & reject_invalid
        if rejected.any():
            row, col = (int(v) for v in np.argwhere(rejected)[0])
            text = problem.format(value=values[row, col], low=low[col], high=high[col])
            raise InvalidRecord(records.feature_name(col), row, text)
        bad |= cells
    policy = np.array([s.missing for s in specs])
    reject_missing = missing & (policy == "reject")
    if reject_missing.any():
        row, col = (int(v) for v in np.argwhere(reject_missing)[0])
        raise InvalidRecord(records.feature_name(col), row, "value is missing (missing = 'reject')")
    impute = missing & (policy == "impute")
    fill = np.array([np.nan if s.fill is None else s.fill for s in specs])
    values = np.where(impute, fill[None, :], values)
    drop_missing = np.asarray((missing & (policy == "drop_row")).any(axis=1))
    return values.astype(np.float32), drop_missing, np.asarray(bad.any(axis=1)), int(impute.sum())


def _validate_field(
    name: str, column: np.ndarray, spec: FieldSpec
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """The typed column with imputation, rows dropped for missing / invalid, values imputed."""
    reveal = spec.mask in ("keep", "generalise")
    if spec.numeric:
        values, missing = _as_numbers(name, column, reveal)
        bad, error = _check_numeric(name, values, ~missing, spec, spec.type == "int", reveal)
        typed: np.ndarray = values
    else:
        typed, missing = _as_text(column)
        bad = np.zeros(typed.shape[0], dtype=bool)
        error = None
        if spec.categories is not None:
            allowed = np.isin(typed, np.array(spec.categories, dtype=object))
            bad = ~missing & ~allowed
            if bad.any():
                error = _first(
                    name, bad, f"{{value!r}} is not one of {list(spec.categories)}", typed, reveal
                )
    if error is not None and spec.invalid == "reject":
        raise error
    drop_missing = np.zeros(typed.shape[0], dtype=bool)
    imputed = 0
    if missing.any():
        if spec.missing == "reject":
            row = int(np.flatnonzero(missing)[0])
            raise InvalidRecord(name, row, "value is missing (missing = 'reject')")
        if spec.missing == "impute":
            typed = typed.copy()
            typed[missing] = spec.fill
            imputed = int(missing.sum())
        else:
            drop_missing = missing
    return typed, drop_missing, bad, imputed


def validate(
    config: EdgeConfig, records: Records, num_classes: int
) -> tuple[Records, ValidationCounts]:
    """Check ``records`` against the schema; the validated copy and what was removed.

    Raises :class:`~fedfort.errors.InvalidRecord` (a :class:`~fedfort.errors.DatasetError`)
    for the first problem a ``reject`` policy covers, and :class:`DatasetError` for a table
    that does not match the schema's columns.
    """
    n = len(records)
    y = np.asarray(records.y)
    if y.ndim != 1 or records.x.shape[0] != n:
        raise DatasetError(f"x has {records.x.shape[0]} rows, y {y.shape}: need (n, d) and (n,)")
    undeclared = sorted(set(records.columns) - set(config.fields))
    if undeclared:
        raise DatasetError(
            f"columns {undeclared} are not declared in [edge.fields]: declare each column "
            "with its type and mask (e.g. mask = 'drop'); undeclared data is never used"
        )
    absent = sorted(set(config.fields) - set(records.columns))
    if absent:
        raise DatasetError(f"declared fields {absent} are absent from the records")
    for name, column in records.columns.items():
        if np.asarray(column).shape != (n,):
            raise DatasetError(f"column {name!r} has shape {np.shape(column)}, expected ({n},)")
    regression = num_classes == 1 and y.dtype.kind == "f"
    if regression:
        if not np.all(np.isfinite(y)):
            row = int(np.flatnonzero(~np.isfinite(y))[0])
            raise InvalidRecord("y", row, f"target {y[row]} is not a finite number")
    else:
        if y.dtype.kind not in "iu":
            raise DatasetError(f"labels y must be integers, got {y.dtype}")
        off = (y < 0) | (y >= num_classes)
        if off.any():
            row = int(np.flatnonzero(off)[0])
            raise InvalidRecord("y", row, f"label {y[row]} is not a class of 0..{num_classes - 1}")
    x, drop_missing, drop_invalid, imputed = _validate_features(
        np.asarray(records.x), config.features, records, config.by_feature
    )
    columns: dict[str, np.ndarray] = {}
    for name, spec in config.fields.items():
        typed, miss, bad, count = _validate_field(name, np.asarray(records.columns[name]), spec)
        columns[name] = typed
        drop_missing |= miss
        drop_invalid |= bad
        imputed += count
    drop_missing &= ~drop_invalid
    keep = ~(drop_missing | drop_invalid)
    if not keep.any():
        raise DatasetError("validation dropped every row: check the missing/invalid policies")
    labels = y.astype(np.float32) if regression else y.astype(np.int64)
    out = Records(x, labels, columns, records.feature_names).take(keep)
    counts = ValidationCounts(n, int(drop_missing.sum()), int(drop_invalid.sum()), imputed)
    return out, counts
