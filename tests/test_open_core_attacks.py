"""The open core under attack: components that try to slip past what a run records, configs
that name components wrongly, and rules that try to escape central DP's bound.

The user components live outside fedfort, in ``tests/user_components.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import fedfort
import user_components as uc
from conftest import tiny_config
from fedfort.aggregation import AGGREGATOR_REGISTRY, CoordinateMedian, NormBounding, TrimmedMean
from fedfort.attacks import (
    ALIE,
    IPM,
    Attack,
    Backdoor,
    FreeRider,
    GaussianNoise,
    LabelFlip,
    MinMax,
    MinSum,
    SignFlip,
    StaleReplay,
    Trigger,
)
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


def test_an_import_path_names_a_class_of_its_kind_never_an_arbitrary_callable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    called: list[Any] = []
    monkeypatch.setattr("os.system", lambda *a, **k: called.append(a))
    for ref in ("numpy:ones", "os:system"):
        defense = {"aggregator": ref, "options": {"shape": 3}}
        with pytest.raises(ConfigError, match=rf"'{ref}' is not a Aggregator class"):
            parse_config({"defense": defense})
        with pytest.raises(ConfigError, match=rf"'{ref}' is not a Attack class"):
            parse_config({"attack": {"name": ref}})
        with pytest.raises(ConfigError, match=rf"'{ref}' is not a Module class"):
            fedfort.Simulation({"model": {"name": ref}, "rounds": 1})
    assert not called  # the config never called what it named


def _central(rule: Any, **privacy: Any) -> fedfort.RunResult:
    settings = {
        "mode": "central",
        "noise_multiplier": 0.5,
        "clip_norm": 1.0,
        "secure_noise": False,
        **privacy,
    }
    with fedfort.Simulation(tiny_config(privacy=settings), aggregator=rule) as sim:
        return sim.run(1)


@pytest.mark.parametrize("kind", ["nan", "inf", "short"])
def test_a_rule_output_that_cannot_be_projected_releases_only_noise(kind: str) -> None:
    # the zero vector stands in for it: the release is the noise a zero output gets, so the
    # rule neither escapes the clip ball nor crashes the round depending on the updates
    released = _central(uc.FixedOutput(kind=kind))
    assert np.isfinite(released.model).all()
    assert np.array_equal(released.model, _central(uc.FixedOutput(kind="zero")).model)


def test_adaptive_clipping_around_a_rule_counts_the_clipped_updates() -> None:
    # every update is far above the clip norm 1.0 (lr 5): the unclipped fraction is ~0
    privacy = {"adaptive_clipping": True, "noise_multiplier": 0.1, "clip_count_stddev": 0.1}
    for rule in (TrimmedMean(trim_ratio=0.2), "fedavg"):
        settings = {
            "mode": "central",
            "clip_norm": 1.0,
            "secure_noise": False,
            **privacy,
        }
        config = tiny_config(privacy=settings, clients={"lr": 5.0})
        with fedfort.Simulation(config, aggregator=rule) as sim:
            record = sim.run(1).records[-1]
        fraction = record["measurements"]["aggregate"]["noisy_unclipped_fraction"]
        assert fraction < 0.2, (rule, fraction)


def test_a_model_object_its_class_cannot_rebuild_is_refused() -> None:
    # the run names the model by its class; WideNet(width=16) is not what the class builds
    # with no options, so a resume could not rebuild it
    with pytest.raises(ConfigError, match=r"WideNet.*not the architecture"):
        fedfort.Simulation(tiny_config(), model=uc.WideNet(64, 10, width=16))
    with fedfort.Simulation(tiny_config(), model=uc.WideNet(64, 10)) as sim:
        assert sim.config.model.name == "user_components:WideNet"


def test_an_attack_option_named_like_a_common_attack_key_is_refused() -> None:
    # [attack] fraction is the share of malicious clients: the attack's own 'fraction' would
    # silently keep its default
    table = {"name": "user_components:FractionShift", "fraction": 0.3, "shift": 2.0}
    with pytest.raises(ConfigError, match=r"has the option 'fraction'.*rename"):
        parse_config({"attack": table})
    with pytest.raises(ConfigError, match=r"has the option 'fraction'.*rename"):
        fedfort.Simulation(tiny_config(), attack=uc.FractionShift(fraction=0.1, shift=2.0))


def test_a_users_stage_built_with_other_arguments_is_refused_on_resume(tmp_path: Path) -> None:
    config = tiny_config(rounds=3)
    with fedfort.Simulation(config, tmp_path / "run", features=[uc.Scaling(0.5)]) as sim:
        sim.run(1)
    with (
        fedfort.Simulation.resume(tmp_path / "run", features=[uc.Scaling(0.1)]) as sim,
        pytest.raises(
            ConfigError, match=r'scale_updates \(user_components:ScaleUpdates \{"factor": ?0\.5\}'
        ),
    ):
        sim.run()
    # the same arguments resume (the stage's changing state is not part of the identity)
    with fedfort.Simulation.resume(tmp_path / "run", rounds=2, features=[uc.Scaling(0.5)]) as sim:
        assert sim.run().records[-1]["round"] == 2
    with fedfort.Simulation.resume(tmp_path / "run", rounds=3, features=[uc.Scaling(0.5)]) as sim:
        assert sim.run().records[-1]["round"] == 3


def test_an_option_table_with_keys_json_cannot_keep_is_refused() -> None:
    # recorded as {"1": 2.0}, a resume would rebuild the rule with a string key
    with pytest.raises(ConfigError, match=r"option 'scales' has the key 1, a int"):
        AGGREGATOR_REGISTRY.spec_of(uc.PerClientScale(scales={1: 2.0}))  # type: ignore[dict-item]
    spec = AGGREGATOR_REGISTRY.spec_of(uc.PerClientScale(scales={"client-1": 2.0}))
    assert spec.options == {"scales": {"client-1": 2.0}}


def test_an_aggregator_object_does_not_silently_drop_the_configs_wrappers() -> None:
    config = tiny_config(defense={"norm_bound": 2.0})
    with pytest.raises(ConfigError, match=r"defense.norm_bound = 2.0.*wrap the object"):
        fedfort.Simulation(config, aggregator=TrimmedMean(trim_ratio=0.2))
    wrapped = NormBounding(TrimmedMean(trim_ratio=0.2), max_norm=2.0)
    with fedfort.Simulation(tiny_config(), aggregator=wrapped) as sim:
        assert sim.config.defense.options["max_norm"] == 2.0


def _state(attack: Attack) -> dict[str, Any]:
    state = {k: v for k, v in vars(attack).items() if k != "component_args"}
    trigger = state.pop("trigger", None)
    if trigger is not None:  # the run gives the trigger the dataset's image shape
        state["trigger"] = (trigger.size, trigger.value, trigger.corner, trigger.margin)
    return state


@pytest.mark.parametrize(
    "attack",
    [
        Backdoor(Trigger(size=2, value=0.5, corner="bottom_right"), 3, boost=4.0),
        LabelFlip(mode="reverse"),
        ALIE(z=1.5),
        IPM(epsilon=0.2),
        GaussianNoise(sigma=0.3),
        MinMax(perturbation="std"),
        MinSum(gamma_init=5.0),
        SignFlip(scale=3.0),
        FreeRider(mode="noise"),
        StaleReplay(),
    ],
    ids=lambda a: type(a).__name__,
)
def test_each_of_fedforts_attacks_as_an_object_is_the_attack_that_runs(attack: Attack) -> None:
    with fedfort.Simulation(tiny_config(), attack=attack) as sim:
        assert type(sim.attack) is type(attack)
        assert _state(sim.attack) == _state(attack)


def test_an_attack_argument_no_config_can_hold_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"option 'tol' = 0.001 cannot be set.*default 1e-05"):
        fedfort.Simulation(tiny_config(), attack=MinMax(tol=1e-3))
    with pytest.raises(ConfigError, match=r"leave Trigger's image_shape unset"):
        fedfort.Simulation(tiny_config(), attack=Backdoor(Trigger(image_shape=(8, 8)), 0))


def test_a_model_factory_that_returns_something_else_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fedfort import models

    # by import path a model is a Module class; a factory function is registered in code
    config = tiny_config(model={"name": "user_components:not_a_model"})
    with pytest.raises(ConfigError, match=r"is not a Module class"):
        fedfort.Simulation(config)
    monkeypatch.setattr(models.MODEL_REGISTRY, "_entries", dict(models.MODEL_REGISTRY._entries))
    models.register_model("not_a_model", uc.not_a_model)
    with pytest.raises(ConfigError, match=r"built a list, not a torch.nn.Module"):
        fedfort.Simulation(tiny_config(model={"name": "not_a_model"}))


def test_extra_positional_arguments_are_refused_rather_than_dropped() -> None:
    with pytest.raises(ConfigError, match=r"extra positional arguments \(\*weights\)"):
        AGGREGATOR_REGISTRY.spec_of(uc.PositionalWeights(0.2, 0.8))
    spec = AGGREGATOR_REGISTRY.spec_of(uc.PositionalWeights(scale=2.0))
    assert spec.options == {"scale": 2.0}
