"""The open core under attack: components that try to slip past what a run records, configs
that name components wrongly, and rules that try to escape central DP's bound.

The user components live outside fedfort, in ``tests/user_components.py``.
"""

from __future__ import annotations

from typing import Any

import pytest

import fedfort
import user_components as uc
from conftest import tiny_config
from fedfort.aggregation import AGGREGATOR_REGISTRY, CoordinateMedian, NormBounding
from fedfort.config import parse_config
from fedfort.errors import ConfigError


def test_a_constructor_that_mutates_its_arguments_is_recorded_as_called() -> None:
    rule = uc.AppendingRule(weights=[0.5], k=3)
    assert rule.weights == [0.5, 1.0] and rule.twice_k == 6
    spec = AGGREGATOR_REGISTRY.spec_of(rule)
    assert spec.ref == "user_components:AppendingRule"
    assert spec.options == {"weights": [0.5], "k": 3}
    rebuilt = AGGREGATOR_REGISTRY.build(spec.ref, spec.options)
    assert isinstance(rebuilt, uc.AppendingRule)
    assert rebuilt.weights == rule.weights and rebuilt.twice_k == rule.twice_k


def test_a_user_rule_inside_a_wrapper_is_named_by_its_import_path() -> None:
    wrapped = NormBounding(uc.NestedOnlyRule(scale=0.5), max_norm=5.0)
    with fedfort.Simulation(tiny_config(), aggregator=wrapped) as sim:
        assert sim.config.defense.aggregator == "norm_bound"
        assert sim.config.defense.options["inner"] == {
            "ref": "user_components:NestedOnlyRule",
            "options": {"scale": 0.5},
        }
        rule = sim.engine.stage("aggregate").aggregator
        assert isinstance(rule, NormBounding) and isinstance(rule.inner, uc.NestedOnlyRule)
        assert rule.inner.scale == 0.5


def test_a_rule_without_a_constructor_of_its_own_is_named() -> None:
    with fedfort.Simulation(tiny_config(), aggregator=CoordinateMedian()) as sim:
        assert (sim.config.defense.aggregator, sim.config.defense.options) == ("median", {})
        assert isinstance(sim.engine.stage("aggregate").aggregator, CoordinateMedian)


@pytest.mark.parametrize(
    ("inner", "message"),
    [
        ({"options": {}}, r"option 'inner' is a nested aggregator: write it as \{ref"),
        ("krum", r"option 'inner' is a nested aggregator: write it as \{ref"),
        ({"ref": "krum", "options": 3}, r"'options' of a nested component is a table"),
        ({"ref": "krum", "opts": {}}, r"a nested component takes only 'ref' and 'options'"),
    ],
)
def test_a_malformed_nested_component_is_refused_with_the_reason(inner: Any, message: str) -> None:
    defense = {"aggregator": "norm_bound", "options": {"inner": inner, "max_norm": 1.0}}
    with pytest.raises(ConfigError, match=message):
        parse_config({"defense": defense})


def test_an_import_path_to_a_factory_of_something_else_is_refused() -> None:
    defense = {"aggregator": "numpy:ones", "options": {"shape": 3}}
    with pytest.raises(ConfigError, match=r"'numpy:ones' built a ndarray, not a Aggregator"):
        parse_config({"defense": defense})
