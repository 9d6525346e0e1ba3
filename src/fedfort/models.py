"""Built-in models for the embedded datasets; any ``torch.nn.Module`` works as well.

Models are built from a :class:`ModelSpec` (a name and keyword arguments) rather than passed as
live objects, so worker processes and resumed runs construct exactly the same architecture.
A user model is registered with :func:`register_model` under a name of its choice.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from fedfort.errors import ConfigError
from fedfort.registry import Registry

__all__ = [
    "MLP",
    "LogisticRegression",
    "ModelFactory",
    "ModelSpec",
    "SmallCNN",
    "available_models",
    "build_model",
    "register_model",
    "resolve_model",
]

ModelFactory = Callable[..., nn.Module]


class LogisticRegression(nn.Module):
    """Multinomial logistic regression: one linear layer on the flattened input."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.linear(x.flatten(1))
        return out


class MLP(nn.Module):
    """A multi-layer perceptron with ReLU activations on the flattened input."""

    def __init__(
        self, in_features: int, num_classes: int, hidden: tuple[int, ...] | list[int] = (64,)
    ) -> None:
        super().__init__()
        widths = [in_features, *hidden]
        layers: list[nn.Module] = []
        for a, b in itertools.pairwise(widths):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(widths[-1], num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x.flatten(1))
        return out


class SmallCNN(nn.Module):
    """A small convolutional network for square single-channel images (digits, MNIST).

    Two 3x3 convolutions with BatchNorm (whose running statistics are averaged with the
    parameters), each followed by ReLU, then a linear classifier. ``pools`` 2x2 max-pools
    shrink the feature map: with the default ``pools=1`` one pool follows the second
    convolution (the 8x8 digits model); ``pools=2`` adds one after the first convolution as
    well, so on 28x28 MNIST the second convolution runs at 14x14 and the classifier reads a
    7x7 map (about a quarter of the compute and of the parameters of ``pools=1``).
    """

    def __init__(
        self, in_features: int, num_classes: int, channels: int = 16, pools: int = 1
    ) -> None:
        super().__init__()
        side = round(in_features**0.5)
        if side * side != in_features:
            raise ConfigError(
                f"SmallCNN needs square single-channel images, got {in_features} features; "
                "use model 'mlp' or 'logreg' for tabular data"
            )
        if pools not in (1, 2):
            raise ConfigError(f"SmallCNN pools must be 1 or 2, got {pools!r}")
        if side >> pools < 1:
            raise ConfigError(
                f"SmallCNN with pools={pools} needs images of at least {1 << pools}x"
                f"{1 << pools} pixels, got {side}x{side}: use pools=1"
            )
        self.side = side
        first: list[nn.Module] = [
            nn.Conv2d(1, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
        ]
        if pools == 2:
            first.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(
            *first,
            nn.Conv2d(channels, 2 * channels, 3, padding=1),
            nn.BatchNorm2d(2 * channels),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Linear(2 * channels * (side >> pools) ** 2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], 1, self.side, self.side)
        out: torch.Tensor = self.head(self.features(x).flatten(1))
        return out


class _AnyOptions(BaseModel):
    """A model's options go to its factory as keyword arguments; the factory checks them."""

    model_config = ConfigDict(extra="allow")


#: every model factory, fedfort's own and the user's, by name; a config may also name a
#: factory by import path (``"mypkg.nets:TabularNet"``)
MODEL_REGISTRY: Registry[nn.Module] = Registry("model", nn.Module)
for _name, _factory in (("logreg", LogisticRegression), ("mlp", MLP), ("cnn", SmallCNN)):
    MODEL_REGISTRY.register(_name, config=_AnyOptions)(_factory)


def register_model(name: str, factory: ModelFactory) -> None:
    """Register a model factory ``factory(in_features, num_classes, **kwargs)`` under ``name``
    (replacing an earlier one of that name).

    The factory must be importable by name (a module-level class or function) when the
    simulation uses worker processes.
    """
    if not name or not name.replace("_", "").replace("-", "").isalnum():
        raise ConfigError(f"model name {name!r} must be alphanumeric (with - or _)")
    MODEL_REGISTRY.unregister(name)
    MODEL_REGISTRY.register(name, config=_AnyOptions)(factory)


def available_models() -> list[str]:
    """Names accepted by :func:`build_model`."""
    return sorted(MODEL_REGISTRY.names())


@dataclass(frozen=True)
class ModelSpec:
    """A picklable recipe for a model: registry name, input size, classes and options."""

    name: str
    in_features: int
    num_classes: int
    options: dict[str, Any] = field(default_factory=dict)

    def build(self, seed: int | None = None) -> nn.Module:
        """Instantiate the model; with ``seed`` the initial weights are reproducible."""
        return build_model(self, seed=seed)


def build_model(
    spec: ModelSpec, seed: int | None = None, *, factory: ModelFactory | None = None
) -> nn.Module:
    """Instantiate ``spec`` (with ``factory`` instead of the registry's entry for its name, when
    given); raise a one-line :class:`ConfigError` naming the model when it cannot be built."""
    if factory is None:
        factory = resolve_model(spec.name)
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        try:
            model = factory(spec.in_features, spec.num_classes, **spec.options)
        except ConfigError:
            raise
        except TypeError as exc:
            raise ConfigError(
                f"bad options {spec.options} for model {spec.name!r}: {_one_line(exc)}"
            ) from exc
        except Exception as exc:
            raise ConfigError(
                f"model {spec.name!r} failed to build as ({spec.in_features} features, "
                f"{spec.num_classes} classes, options {spec.options}): "
                f"{type(exc).__name__}: {_one_line(exc)}"
            ) from exc
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"model {spec.name!r} built a {type(model).__name__}, not a torch.nn.Module: name "
            "an nn.Module class or a factory that returns one"
        )
    return model


def resolve_model(name: str) -> ModelFactory:
    """The factory of a registered name or an import path (``"mypkg.nets:TabularNet"``)."""
    if ":" not in name and name not in MODEL_REGISTRY.names():
        raise ConfigError(
            f"unknown model {name!r}; choose one of {available_models()}, register yours "
            "with fedfort.register_model, or give an import path 'package.module:NetClass'"
        )
    module, _, qualname = name.partition(":")
    try:
        return MODEL_REGISTRY.resolve(name).factory
    except ConfigError as exc:
        # a class only the process that started the run could import: say how to go on
        if "<" in qualname:  # <locals>, <lambda>
            raise ConfigError(
                f"model {name!r} was defined inside a function (or is a lambda), so this "
                "process cannot import it: pass it again (model_factory=) or define a class at "
                "module level in an importable module"
            ) from exc
        if module == "__main__":
            raise ConfigError(
                f"model {name!r} was defined in the script that started the run, which this "
                "process is not: use the run from that script, or move the class into an "
                "importable module and name it in [model] factory"
            ) from exc
        raise
    except Exception as exc:  # the user's module fails while it is imported
        raise ConfigError(
            f"model {name!r}: importing it failed: {type(exc).__name__}: {_one_line(exc)}"
        ) from exc


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
