"""Objects first, config second: a run's components given as objects become its config.

``fedfort.Simulation(model=MyNet(), aggregator=NormBounding(Krum(num_byzantine=2), 5.0),
privacy=DPFedAvg(target_epsilon=3.0), rounds=30)`` names every component in the run's
:class:`~fedfort.config.RunConfig`: an aggregator or an attack by its registered name or
import path with the options it was built with (:meth:`fedfort.registry.Registry.spec_of`), a
privacy mode by the ``[privacy]`` keys it sets, a model by its import path. The run then builds
its components from that config, exactly as from a TOML file, so the objects and the file
build the same run, the run's stored identity names every component, and a resume rebuilds
them (or refuses with the reason).
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from fedfort.aggregation.base import AGGREGATOR_REGISTRY, Aggregator
from fedfort.attacks.base import ATTACK_REGISTRY, Attack
from fedfort.attacks.config import attack_spec
from fedfort.config import RunConfig, parse_config
from fedfort.errors import ConfigError
from fedfort.models import MODEL_REGISTRY, ModelFactory
from fedfort.privacy.modes import PrivacyMode
from fedfort.registry import import_path
from fedfort.server.optimizers import SERVER_OPTIMIZER_REGISTRY, ServerOptimizer

__all__ = ["ModuleCopies", "compose", "factory_path", "name_model_factory"]


class ModuleCopies:
    """A model factory that returns copies of one ``nn.Module`` (its weights are the run's
    initial model); picklable when the module's class is importable.

    The run names the model by its class, so the copy must have the architecture the class
    builds from ``(in_features, num_classes, **options)``: a resume rebuilds it that way.
    """

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __call__(self, in_features: int, num_classes: int, **options: Any) -> nn.Module:
        cls = type(self.module)
        try:
            rebuilt = cls(in_features, num_classes, **options)
        except Exception as exc:
            raise ConfigError(
                f"model {cls.__name__}: the run names it by its class, but "
                f"{cls.__name__}({in_features}, {num_classes}, **{options}) fails ({exc}); "
                "give a factory, or name the class and its options in [model]"
            ) from exc
        if _shapes(rebuilt) != _shapes(self.module):
            raise ConfigError(
                f"model {cls.__name__}: the object given is not the architecture "
                f"{cls.__name__}({in_features}, {num_classes}, **{options}) builds, which is "
                "what the run records and a resume rebuilds; name the class and its options in "
                "[model] (name = 'module:Class', options = {...}) instead of giving an object"
            )
        return copy.deepcopy(self.module)


def _shapes(module: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(k, tuple(v.shape)) for k, v in module.state_dict().items()]


def compose(
    config: RunConfig | Mapping[str, Any] | None = None,
    *,
    model: nn.Module | ModelFactory | str | None = None,
    aggregator: Aggregator | str | None = None,
    attack: Attack | str | None = None,
    malicious_fraction: float | None = None,
    privacy: PrivacyMode | None = None,
    server_optimizer: ServerOptimizer | str | None = None,
    rounds: int | None = None,
    seed: int | None = None,
    clients: int | None = None,
) -> tuple[RunConfig, ModelFactory | None]:
    """``config`` (default: every default) with the given components; and the model factory
    to use when ``model`` is an object (``None`` when the config's model is built by name)."""
    if isinstance(config, RunConfig):
        body = config.to_dict()
    else:
        body = parse_config(dict(config or {})).to_dict()
    if rounds is not None:
        body["rounds"] = rounds
    if seed is not None:
        body["seed"] = seed
    if clients is not None:
        body["clients"]["count"] = clients
    if aggregator is not None:
        _set_aggregator(body["defense"], aggregator)
    if attack is not None:
        _set_attack(body, attack)
    if malicious_fraction is not None:
        if body["attack"]["name"] == "none":
            raise ConfigError("malicious_fraction needs an attack")
        body["attack"]["fraction"] = malicious_fraction
    if privacy is not None:
        if not isinstance(privacy, PrivacyMode):
            raise ConfigError(
                f"privacy must be a fedfort.privacy mode (DPFedAvg, LocalDP, DPSGD), got "
                f"{type(privacy).__name__}"
            )
        _merge(body["privacy"], privacy.table())
    if server_optimizer is not None:
        _set_optimizer(body["server"], server_optimizer)
    factory = _set_model(body["model"], model)
    return parse_config(body), factory


def _set_aggregator(defense: dict[str, Any], aggregator: Aggregator | str) -> None:
    if isinstance(aggregator, str):
        AGGREGATOR_REGISTRY.resolve(aggregator)
        defense.update(aggregator=aggregator, options={})
        return
    if not isinstance(aggregator, Aggregator):
        raise ConfigError(
            f"aggregator must be a fedfort.aggregation.Aggregator, got {type(aggregator).__name__}"
        )
    wrappers = {k: defense.get(k) for k in ("norm_bound", "robust_lr_threshold")}
    configured = {k: v for k, v in wrappers.items() if v is not None}
    if configured:
        # the object replaces the config's rule, wrappers and all: never drop them silently
        keys = ", ".join(f"defense.{k} = {v}" for k, v in configured.items())
        raise ConfigError(
            f"the config wraps its rule ({keys}) and an aggregator object replaces it: wrap "
            "the object instead (NormBounding(rule, max_norm), RobustLearningRate(rule, "
            "threshold)) and unset those keys"
        )
    spec = AGGREGATOR_REGISTRY.spec_of(aggregator)
    # the object carries its own wrappers and options
    defense.update(
        aggregator=spec.ref, options=spec.options, norm_bound=None, robust_lr_threshold=None
    )


def _set_optimizer(server: dict[str, Any], optimizer: ServerOptimizer | str) -> None:
    if isinstance(optimizer, str):
        SERVER_OPTIMIZER_REGISTRY.resolve(optimizer)
        server.update(optimizer=optimizer, optimizer_options={})
        return
    if not isinstance(optimizer, ServerOptimizer):
        raise ConfigError(
            f"server_optimizer must be a fedfort.server.ServerOptimizer, got "
            f"{type(optimizer).__name__}"
        )
    spec = SERVER_OPTIMIZER_REGISTRY.spec_of(optimizer)
    server.update(optimizer=spec.ref, optimizer_options=spec.options)


def _set_attack(body: dict[str, Any], attack: Attack | str) -> None:
    common = {
        k: v
        for k, v in body["attack"].items()
        if k in ("fraction", "colluding", "omniscient", "start_round", "end_round")
    }
    if body["attack"]["name"] == "none":
        common.pop("fraction", None)  # the attack's default share of malicious clients
    if isinstance(attack, str):
        ATTACK_REGISTRY.resolve(attack)
        body["attack"] = {**common, "name": attack}
        return
    if not isinstance(attack, Attack):
        raise ConfigError(f"attack must be a fedfort.attacks.Attack, got {type(attack).__name__}")
    ref, options = attack_spec(attack)
    body["attack"] = {**common, **options, "name": ref}


def _set_model(
    section: dict[str, Any], model: nn.Module | ModelFactory | str | None
) -> ModelFactory | None:
    if model is None:
        return None
    if isinstance(model, str):
        section.update(name=model, options={})
        return None
    if isinstance(model, nn.Module):
        section.update(name=import_path(type(model)), options={})
        return ModuleCopies(model)
    if callable(model):
        target: Callable[..., Any] = model
        section.update(name=import_path(target), options={})
        if inspect.isclass(target) and not issubclass(target, nn.Module):
            raise ConfigError(f"model class {target.__name__} is not a torch.nn.Module")
        return target
    raise ConfigError(f"model must be an nn.Module, a factory or a name, got {model!r}")


def factory_path(factory: ModelFactory) -> str:
    """``"module:QualName"`` of a model factory given to a run (of the module's class for a
    :class:`ModuleCopies`); a class or function defined in ``__main__`` or inside a function
    is named too, since the process that started the run can give it again on resume."""
    target: Any = type(factory.module) if isinstance(factory, ModuleCopies) else factory
    module = getattr(target, "__module__", None)
    qualname = getattr(target, "__qualname__", None)
    if not module or not qualname or not (inspect.isclass(target) or inspect.isfunction(target)):
        raise ConfigError(
            f"model_factory {factory!r} is neither a class nor a function, so the run cannot "
            "name it: give an nn.Module class (its options in [model] options) or a function"
        )
    return f"{module}:{qualname}"


def name_model_factory(config: RunConfig, factory: ModelFactory, *, resuming: bool) -> RunConfig:
    """``config`` naming ``factory`` as its model, so the stored run says what was trained.

    The config keeps its ``[model] name`` when the registry already gives that name to
    ``factory``; otherwise the name becomes the factory's import path (``[model] options``
    stay). A resume keeps the stored name if it is not an import path (a run stored before
    its factory was named), and refuses a factory other than the one the run names.
    """
    path = factory_path(factory)
    name = config.model.name
    if name == path:
        return config
    if name in MODEL_REGISTRY.names() and MODEL_REGISTRY.resolve(name).factory is factory:
        return config
    if resuming:
        if ":" not in name:
            return config
        raise ConfigError(
            f"the run was trained with model {name!r}, but model_factory is {path!r}: give the "
            "same class again (or none, when it can be imported)"
        )
    return config.with_overrides({"model.name": path})


def _merge(into: dict[str, Any], table: Mapping[str, Any]) -> None:
    for key, value in table.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value
