"""The ``[evaluation]`` table: which metrics, federated evaluation and the server's own set.

.. code-block:: toml

    [evaluation]
    metrics = ["accuracy", "loss", "auc", "mypkg.metrics:sensitivity"]
    every = 1            # clients evaluate every k rounds (and after the final round)
    client_holdout = 0.2 # each client keeps 20% of its rows to evaluate on (0 = off)
    server = true        # false: the server has no validation set

At its defaults the table changes nothing a run computes (its identity hash is unchanged).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fedfort.errors import ConfigError
from fedfort.evaluation.user import resolve_loss

__all__ = ["EvaluationConfig", "Task", "check_loss", "default_loss"]

Task = Literal["classification", "regression"]


class EvaluationConfig(BaseModel):
    """How the global model is scored (see docs/evaluation.md).

    ``metrics`` unset means the task's defaults (:func:`fedfort.evaluation.default_metrics`).
    ``client_holdout`` is the share of each client's rows it keeps as its own hold-out
    (seeded, stratified by class when every class allows it); with it the clients evaluate
    the global model every ``every`` rounds and after the final round, reporting only metric
    values and their example count. ``max_examples`` caps the example count a client may claim
    when neither ``server.declared_sample_counts`` nor ``server.max_sample_count`` does.
    ``server = false`` drops the server's validation set: rounds then carry no server accuracy.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    metrics: list[str] | None = Field(
        None, description="metric names or 'pkg.mod:function' (unset: the task's defaults)"
    )
    every: int = Field(1, ge=1, description="federated evaluation every k rounds")
    client_holdout: float = Field(
        0.0, ge=0, lt=1, description="share of each client's rows kept to evaluate on (0 = off)"
    )
    server: bool = Field(True, description="the server evaluates on its own validation set")
    max_examples: int = Field(
        1_000_000, ge=1, description="largest example count a client's report may claim"
    )
    deadline_s: float | None = Field(
        None, gt=0, description="how long the server waits for the clients' reports"
    )

    @field_validator("metrics")
    @classmethod
    def _unique(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            if not value:
                raise ValueError("evaluation.metrics is empty: name at least one metric")
            if len(set(value)) != len(value):
                raise ValueError(f"evaluation.metrics names a metric twice: {value}")
        return value


def default_loss(task: Task) -> str:
    """The loss a task trains with unless ``[clients] loss`` names another."""
    return "cross_entropy" if task == "classification" else "mse"


def check_loss(name: str, task: Task) -> None:
    """Refuse a loss that is unknown, unmarked or made for the other task."""
    if name in ("cross_entropy", "mse"):
        if name != default_loss(task):
            raise ConfigError(
                f"loss {name!r} does not train {task}: use {default_loss(task)!r} or a loss of "
                "your own"
            )
        return
    if ":" not in name:
        raise ConfigError(
            f"unknown loss {name!r}: choose 'cross_entropy', 'mse' or name a function marked "
            "with @fedfort.loss by its import path 'package.module:function'"
        )
    _, mark = resolve_loss(name)
    if mark.task is not None and mark.task != task:
        raise ConfigError(f"loss {name!r} trains {mark.task}, but this run's task is {task}")
