"""A user's own metric or loss, named in a config by import path.

A config may name ``"mypkg.metrics:sensitivity"`` in ``[evaluation] metrics`` or
``"mypkg.losses:focal"`` in ``[clients] loss``. fedfort imports the module and calls the
function only if it is *marked* as a metric or a loss by these decorators: a config (or a
server, which sends the loss's name with every task) can therefore never make fedfort call an
arbitrary callable such as ``os:system``.

.. code-block:: python

    import numpy as np
    import fedfort

    @fedfort.metric(low=0.0, high=1.0)
    def sensitivity(y_true: np.ndarray, output: np.ndarray) -> float:
        positive = y_true == 1
        return float((output.argmax(axis=1)[positive] == 1).mean())

A metric takes the true targets and the model's output: class probabilities ``(n, classes)``
for classification, predictions ``(n,)`` for regression. It returns one float in
``[low, high]`` (the server refuses a client's report outside that range), or NaN when it is
undefined on the data (the client then leaves it out of its report). A loss takes the model's
raw output and the targets as tensors and returns their mean loss (a scalar tensor).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from fedfort.errors import ConfigError
from fedfort.registry import import_object

__all__ = ["LossSpec", "UserMetric", "loss", "metric", "resolve_loss", "resolve_metric"]

F = TypeVar("F", bound=Callable[..., Any])

_METRIC_MARK = "__fedfort_metric__"
_LOSS_MARK = "__fedfort_loss__"


@dataclass(frozen=True)
class UserMetric:
    """The mark :func:`metric` puts on a function: its range and the task it scores."""

    low: float
    high: float
    task: Literal["classification", "regression"] | None


@dataclass(frozen=True)
class LossSpec:
    """The mark :func:`loss` puts on a function: the task it trains."""

    task: Literal["classification", "regression"] | None


def metric(
    *,
    low: float = float("-inf"),
    high: float = float("inf"),
    task: Literal["classification", "regression"] | None = None,
) -> Callable[[F], F]:
    """Mark ``fn(y_true, output) -> float`` as a metric a config may name by import path.

    ``low`` and ``high`` bound a valid value (a client's report outside them is dropped);
    ``task`` restricts it to classification or regression runs (``None``: either).
    """
    if not low <= high:
        raise ConfigError(f"a metric's range needs low <= high, got [{low}, {high}]")

    def mark(fn: F) -> F:
        setattr(fn, _METRIC_MARK, UserMetric(float(low), float(high), task))
        return fn

    return mark


def loss(*, task: Literal["classification", "regression"] | None = None) -> Callable[[F], F]:
    """Mark ``fn(output, target) -> scalar tensor`` as a loss ``[clients] loss`` may name."""

    def mark(fn: F) -> F:
        setattr(fn, _LOSS_MARK, LossSpec(task))
        return fn

    return mark


def resolve_metric(path: str) -> tuple[Callable[..., float], UserMetric]:
    """The function at ``path`` and its mark; an unmarked object is refused."""
    fn = import_object(path, "metric")
    mark = getattr(fn, _METRIC_MARK, None)
    if not callable(fn) or not isinstance(mark, UserMetric):
        raise ConfigError(
            f"metric {path!r} is not marked as a metric: decorate it with "
            "@fedfort.metric(low=..., high=...) so a config may name it"
        )
    return fn, mark


def resolve_loss(path: str) -> tuple[Callable[..., Any], LossSpec]:
    """The function at ``path`` and its mark; an unmarked object is refused."""
    fn = import_object(path, "loss")
    mark = getattr(fn, _LOSS_MARK, None)
    if not callable(fn) or not isinstance(mark, LossSpec):
        raise ConfigError(
            f"loss {path!r} is not marked as a loss: decorate it with @fedfort.loss() so a "
            "config may name it"
        )
    return fn, mark
