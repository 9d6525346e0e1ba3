"""Strict JSON: every JSON document fedfort writes parses with a strict parser."""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import numpy as np
import pytest

from fedfort import jsonio
from fedfort.config import parse_config
from fedfort.errors import FedfortError, NonFiniteValue
from fedfort.run.result import SimulationResult
from fedfort.simulation.results import write_results

SRC = Path(__file__).resolve().parents[1] / "src" / "fedfort"


def strict_loads(text: str) -> object:
    """json.loads that refuses NaN / Infinity / -Infinity, as browsers and jq do."""

    def refuse(token: str) -> object:
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan, np.float32("nan")])
def test_error_rule_names_where_the_non_finite_value_is(bad: float) -> None:
    body = {"rounds": [{"loss": 0.5}, {"loss": bad}]}
    with pytest.raises(NonFiniteValue, match=r"\$\.rounds\[1\]\.loss is") as info:
        jsonio.dumps(body)
    assert isinstance(info.value, FedfortError) and info.value.path == "$.rounds[1].loss"


def test_null_rule_writes_null_and_numpy_scalars_as_numbers() -> None:
    body = {"a": math.inf, "b": (np.float64(-math.inf), np.float32(1.5)), "c": np.int64(3)}
    text = jsonio.dumps(body, non_finite="null", sort_keys=True)
    assert strict_loads(text) == {"a": None, "b": [None, 1.5], "c": 3}


def test_finite_documents_are_byte_identical_to_json() -> None:
    body = {"z": [1, 2.5, "é", None, True], "a": {"b": -0.0}}
    for kwargs in ({}, {"sort_keys": True, "separators": (",", ":")}, {"indent": 2}):
        assert jsonio.dumps(body, **kwargs) == json.dumps(body, **kwargs)


def test_strict_loads_refuses_the_non_standard_tokens() -> None:
    for text in ('{"x": NaN}', "[Infinity]", "-Infinity"):
        with pytest.raises(ValueError, match="not JSON"):
            jsonio.loads(text)
    assert jsonio.loads('{"x": null}') == {"x": None}


def test_results_json_stays_strict_when_a_measurement_is_not_finite(tmp_path: Path) -> None:
    """A diverged model's test loss is inf: results.json writes null, not Infinity."""
    record = {
        "round": 1,
        "accuracy": 0.1,
        "loss": math.inf,
        "train_loss": math.nan,
        "model_sha256": "00",
        "measurements": {"aggregate": {"distance": -math.inf}},
    }
    result = SimulationResult(parse_config({}), [record], np.zeros(2, np.float32))
    path = write_results(result, tmp_path)
    body = strict_loads(path.read_text(encoding="utf-8"))
    assert isinstance(body, dict)
    assert body["rounds"][0]["loss"] is None and body["rounds"][0]["train_loss"] is None
    assert body["rounds"][0]["measurements"]["aggregate"]["distance"] is None
    assert body["final"]["loss"] is None


def _json_writers(tree: ast.AST) -> list[int]:
    """Lines that call json.dump / json.dumps or import them from json."""
    lines = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr in ("dump", "dumps")
            and isinstance(node.value, ast.Name)
            and node.value.id == "json"
        ):
            lines.append(node.lineno)
        if (
            isinstance(node, ast.ImportFrom)
            and node.module == "json"
            and any(alias.name in ("dump", "dumps", "JSONEncoder") for alias in node.names)
        ):
            lines.append(node.lineno)
    return lines


def test_no_module_writes_json_around_the_strict_helper() -> None:
    """Every writer goes through fedfort.jsonio, so a new one cannot write NaN/Infinity."""
    offenders = {}
    for path in sorted(SRC.rglob("*.py")):
        if path.name == "jsonio.py":
            continue
        lines = _json_writers(ast.parse(path.read_text(encoding="utf-8")))
        if lines:
            offenders[str(path.relative_to(SRC))] = lines
    assert offenders == {}, f"use fedfort.jsonio.dumps instead of json.dump(s): {offenders}"
    # the scan does find a writer when there is one
    assert _json_writers(ast.parse("import json\njson.dumps({})\n")) == [2]
    assert _json_writers(ast.parse("from json import dumps\n")) == [1]
