"""Declared schema of a client's records: validation errors, policies, config loading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedfort.config import load_config, parse_config
from fedfort.edge import EdgeConfig, FeatureSpec, FieldSpec, Records, validate
from fedfort.errors import ConfigError, DatasetError, InvalidRecord

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "edge" / "breast-cancer.toml"


def _records(**columns: np.ndarray) -> Records:
    n = len(next(iter(columns.values()))) if columns else 3
    x = np.arange(n * 2, dtype=np.float32).reshape(n, 2) / 10
    return Records(x, np.arange(n, dtype=np.int64) % 2, columns)


def _schema(**fields: FieldSpec) -> EdgeConfig:
    return EdgeConfig(enabled=True, fields=fields)


def test_valid_records_pass_and_are_typed() -> None:
    schema = _schema(
        age=FieldSpec(type="int", min=0, max=120),
        weight=FieldSpec(type="float", min=0),
        site=FieldSpec(type="category", categories=("a", "b")),
    )
    rec = _records(
        age=np.array(["34", "56", "78"]),
        weight=np.array([70.5, 80.0, 65.2]),
        site=np.array(["a", "b", "a"]),
    )
    out, counts = validate(schema, rec, num_classes=2)
    assert out.columns["age"].tolist() == [34.0, 56.0, 78.0]
    assert counts.rows_in == 3 and counts.rows_dropped_missing == 0 and counts.values_imputed == 0


@pytest.mark.parametrize(
    ("spec", "column", "field", "row", "problem"),
    [
        (FieldSpec(type="int"), np.array(["3", "x7", "4"]), "f", 1, "is not a number"),
        (FieldSpec(type="int"), np.array([3.0, 4.5, 1.0]), "f", 1, "is not an integer"),
        (FieldSpec(type="float", max=10), np.array([3.0, 4.0, 11.0]), "f", 2, "above the maximum"),
        (FieldSpec(type="int", min=0), np.array([-1, 4, 1]), "f", 0, "below the minimum"),
        (
            FieldSpec(type="category", categories=("a", "b")),
            np.array(["a", "c", "b"]),
            "f",
            1,
            "is not one of",
        ),
        (FieldSpec(type="float"), np.array([1.0, np.nan, 2.0]), "f", 1, "missing"),
        (FieldSpec(type="identifier", mask="drop"), np.array(["a", "b", ""]), "f", 2, "missing"),
    ],
)
def test_invalid_values_name_field_row_and_problem(
    spec: FieldSpec, column: np.ndarray, field: str, row: int, problem: str
) -> None:
    rec = _records(f=column)
    before = column.copy()
    with pytest.raises(InvalidRecord) as info:
        validate(_schema(f=spec), rec, num_classes=2)
    err = info.value
    assert isinstance(err, DatasetError)
    assert (err.field, err.row) == (field, row)
    assert problem in err.problem and f"row {row}" in str(err)
    # nothing changed on failure
    assert np.array_equal(rec.columns["f"], before, equal_nan=column.dtype.kind == "f")


def test_sensitive_values_are_not_echoed_in_errors() -> None:
    rec = _records(ssn=np.array([123456789, -5, 3]))
    spec = FieldSpec(type="int", min=0, mask="pseudonymise")
    with pytest.raises(InvalidRecord, match="redacted") as info:
        validate(_schema(ssn=spec), rec, num_classes=2)
    assert "-5" not in str(info.value)


def test_feature_matrix_range_missing_and_labels() -> None:
    rec = _records()
    x = rec.x.copy()
    x[1, 1] = 99.0
    cfg = EdgeConfig(enabled=True, features=FeatureSpec(min=-5, max=5))
    with pytest.raises(InvalidRecord, match=r"x\[:, 1\].*row 1.*above the maximum"):
        validate(cfg, Records(x, rec.y), num_classes=2)
    with pytest.raises(InvalidRecord, match="label 2 is not a class"):
        validate(cfg, Records(rec.x, np.array([0, 2, 1])), num_classes=2)
    x[1, 1] = np.nan
    with pytest.raises(InvalidRecord, match="missing"):
        validate(cfg, Records(x, rec.y), num_classes=2)
    dropping = EdgeConfig(features=FeatureSpec(max=5, invalid="drop_row"))
    x_inf = rec.x.copy()
    x_inf[0, 0] = np.inf
    x_inf[2, 1] = 99.0
    out, counts = validate(dropping, Records(x_inf, rec.y), num_classes=2)
    assert len(out) == 1 and counts.rows_dropped_invalid == 2
    imputing = EdgeConfig(features=FeatureSpec(missing="impute", fill=0.5))
    out, counts = validate(imputing, Records(x, rec.y), num_classes=2)
    assert out.x[1, 1] == 0.5 and counts.values_imputed == 1
    assert np.isnan(x[1, 1])  # the caller's array is untouched


def test_missing_and_invalid_policies_drop_or_impute() -> None:
    schema = _schema(
        age=FieldSpec(type="int", max=120, missing="drop_row", invalid="drop_row"),
        site=FieldSpec(type="category", categories=("a", "b"), missing="impute", fill="a"),
    )
    rec = _records(
        age=np.array([30.0, np.nan, 200.0, 40.0]),
        site=np.array(["b", "a", "", ""]),
    )
    out, counts = validate(schema, rec, num_classes=2)
    assert len(out) == 2
    assert out.columns["age"].tolist() == [30.0, 40.0]
    assert out.columns["site"].tolist() == ["b", "a"]
    assert (counts.rows_dropped_missing, counts.rows_dropped_invalid) == (1, 1)
    assert counts.values_imputed == 2


def test_columns_must_match_the_declaration() -> None:
    rec = _records(secret=np.array(["a", "b"]))
    with pytest.raises(DatasetError, match="not declared"):
        validate(EdgeConfig(enabled=True), rec, num_classes=2)
    with pytest.raises(DatasetError, match="absent"):
        validate(_schema(age=FieldSpec(type="int")), _records(), num_classes=2)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": {"type": "string"}}, "only be dropped or pseudonymised"),
        ({"age": {"type": "int", "missing": "impute"}}, "needs a declared fill"),
        ({"age": {"type": "int", "mask": "generalise", "bins": [0, 50], "max": 90}}, "cover"),
        ({"age": {"type": "int", "mask": "generalise", "bins": [0, 50, 40]}}, "increasing"),
        (
            {
                "z": {
                    "type": "category",
                    "categories": ["a", "b"],
                    "mask": "generalise",
                    "groups": {"g": ["a"]},
                }
            },
            "every declared category",
        ),
        ({"site": {"type": "category"}}, "needs its allowed categories"),
        ({"w": {"type": "float", "mask": "pseudonymise"}}, "not floats"),
        ({"w": {"type": "float", "colour": 1}}, "unknown key"),
    ],
)
def test_bad_schema_is_a_config_error(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config({"edge": {"enabled": True, "fields": fields}})


def test_example_config_loads_and_keeps_identity_of_plain_runs() -> None:
    cfg = load_config(EXAMPLE)
    assert cfg.edge.enabled and cfg.edge.fields["patient_id"].mask == "pseudonymise"
    assert cfg.edge.fields["zip"].groups is not None
    plain = parse_config({})
    assert "edge" not in plain.identity_hash() and plain.identity_hash() != cfg.identity_hash()
    with pytest.raises(ConfigError, match="deduplicate_on"):
        parse_config({"edge": {"deduplicate_on": "nope"}})


def test_text_fields_read_numbers_and_bytes_as_text() -> None:
    spec = FieldSpec(type="identifier", mask="pseudonymise", missing="drop_row")
    out, counts = validate(
        _schema(mrn=spec), _records(mrn=np.array([12345.0, np.nan, 7.0])), num_classes=2
    )
    assert out.columns["mrn"].tolist() == ["12345", "7"] and counts.rows_dropped_missing == 1
    out, _ = validate(_schema(mrn=spec), _records(mrn=np.array([b"A1", b"", b"B2"])), num_classes=2)
    assert out.columns["mrn"].tolist() == ["A1", "B2"]


def test_edge_settings_without_enabled_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"edge\.enabled = false"):
        parse_config({"edge": {"fields": {"notes": {"type": "string", "mask": "drop"}}}})
    with pytest.raises(ConfigError, match=r"edge\.enabled = false"):
        parse_config({"edge": {"sanitise": {"outliers": "robust_z"}}})
    assert not parse_config({"edge": {"enabled": False}}).edge.enabled
