"""The metrics a model is scored with, on the server's validation set or a client's hold-out.

Classification (the output is one logit per class):

- ``accuracy``: share of rows whose arg-max class is the label.
- ``loss``: the run's training loss (mean over rows); for regression too.
- ``auc``: ROC AUC (Hanley and McNeil, Radiology 1982). Binary: the AUC of the positive
  class's probability. Multiclass: the macro average of one-vs-rest AUCs (Provost and
  Domingos, 2000), taken over the classes *present* in the labels; a class absent from the
  data has no AUC and is left out of the average. With fewer than two classes present the AUC
  is undefined: NaN, which a client leaves out of its report.
- ``f1``: macro F1 over the classes in the labels or predictions (0 for a class never
  predicted correctly).
- ``balanced_accuracy``: mean recall per class present in the labels (Brodersen et al.,
  ICPR 2010).

Regression (the model has one output): ``mse``, ``mae`` and ``r2`` (coefficient of
determination; NaN on fewer than two rows).

Every metric has a range (:class:`MetricSpec`): a client's reported value outside it is
refused by the server. All are computed over whole arrays: with ``sklearn.metrics``, and the
AUC of every class at once in its rank form (equal to ``sklearn.metrics.roc_auc_score``;
``tests/test_evaluation.py`` compares them).
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.stats import rankdata
from sklearn import metrics as skm

from fedfort.errors import ConfigError
from fedfort.evaluation.user import resolve_metric

__all__ = [
    "CLASSIFICATION_METRICS",
    "REGRESSION_METRICS",
    "MetricSpec",
    "compute_metrics",
    "default_metrics",
    "metric_spec",
    "softmax",
]

TaskName = Literal["classification", "regression"]

#: a metric's function: (true targets, probabilities (n, C) or predictions (n,)) -> value
MetricFn = Callable[[np.ndarray, np.ndarray], float]


@dataclass(frozen=True)
class MetricSpec:
    """A metric's name, the range a valid value lies in and the task it scores (``None``:
    either). ``fn`` computes it (``None`` for ``loss``, which the loss function computes)."""

    name: str
    low: float
    high: float
    task: TaskName | None
    fn: MetricFn | None = None

    def admits(self, value: float) -> bool:
        """Whether ``value`` is finite and within the metric's range."""
        return math.isfinite(value) and self.low <= value <= self.high


def _accuracy(y: np.ndarray, prob: np.ndarray) -> float:
    return float(np.mean(prob.argmax(axis=1) == y))


def _auc(y: np.ndarray, prob: np.ndarray) -> float:
    """ROC AUC in its rank form (Mann-Whitney U with mid-ranks for ties, which equals the
    trapezoidal ROC area of ``sklearn.metrics.roc_auc_score``), for all classes at once."""
    n, classes = prob.shape
    columns = [1] if classes == 2 else list(range(classes))
    ranks = rankdata(prob[:, columns], axis=0)
    positive = y[:, None] == np.asarray(columns)[None, :]
    pos = positive.sum(axis=0).astype(np.float64)
    neg = n - pos
    present = (pos > 0) & (neg > 0)
    if not present.any():
        return float("nan")
    u = np.where(positive, ranks, 0.0).sum(axis=0) - pos * (pos + 1) / 2
    return float(np.mean(u[present] / (pos[present] * neg[present])))


def _f1(y: np.ndarray, prob: np.ndarray) -> float:
    return float(skm.f1_score(y, prob.argmax(axis=1), average="macro", zero_division=0))


def _balanced_accuracy(y: np.ndarray, prob: np.ndarray) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # predicted classes absent from y are not an error
        return float(skm.balanced_accuracy_score(y, prob.argmax(axis=1)))


def _r2(y: np.ndarray, pred: np.ndarray) -> float:
    if y.shape[0] < 2:
        return float("nan")
    return float(skm.r2_score(y, pred))


_INF = float("inf")
_BUILTIN: dict[str, MetricSpec] = {
    spec.name: spec
    for spec in (
        MetricSpec("loss", 0.0, _INF, None),
        MetricSpec("accuracy", 0.0, 1.0, "classification", _accuracy),
        MetricSpec("auc", 0.0, 1.0, "classification", _auc),
        MetricSpec("f1", 0.0, 1.0, "classification", _f1),
        MetricSpec("balanced_accuracy", 0.0, 1.0, "classification", _balanced_accuracy),
        MetricSpec(
            "mse", 0.0, _INF, "regression", lambda y, p: float(skm.mean_squared_error(y, p))
        ),
        MetricSpec(
            "mae", 0.0, _INF, "regression", lambda y, p: float(skm.mean_absolute_error(y, p))
        ),
        MetricSpec("r2", -_INF, 1.0, "regression", _r2),
    )
}

#: the metrics a classification run reports unless ``[evaluation] metrics`` says otherwise
CLASSIFICATION_METRICS: tuple[str, ...] = ("accuracy", "loss", "auc", "f1", "balanced_accuracy")
#: the metrics a regression run reports unless ``[evaluation] metrics`` says otherwise
REGRESSION_METRICS: tuple[str, ...] = ("loss", "mse", "mae", "r2")


def default_metrics(task: TaskName) -> tuple[str, ...]:
    """The metrics a run of ``task`` reports by default."""
    return CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS


@functools.lru_cache(maxsize=64)
def _user_spec(path: str) -> MetricSpec:
    fn, mark = resolve_metric(path)
    return MetricSpec(path, mark.low, mark.high, mark.task, fn)


def metric_spec(name: str, task: TaskName | None = None) -> MetricSpec:
    """The metric called ``name`` (built in, or a marked function's import path); refused when
    unknown or when it does not score ``task``."""
    spec = _BUILTIN.get(name)
    if spec is None:
        if ":" not in name:
            raise ConfigError(
                f"unknown metric {name!r}: choose from {sorted(_BUILTIN)} or name a function "
                "marked with @fedfort.metric by its import path 'package.module:function'"
            )
        spec = _user_spec(name)
    if task is not None and spec.task is not None and spec.task != task:
        raise ConfigError(
            f"metric {name!r} scores {spec.task}, but this run's task is {task}: choose "
            f"from {list(default_metrics(task))}"
        )
    return spec


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64."""
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return out


def compute_metrics(
    names: Sequence[str],
    y_true: np.ndarray,
    output: np.ndarray,
    task: TaskName,
    loss: float | None = None,
) -> dict[str, float]:
    """The metrics ``names`` of a model's raw ``output`` (logits ``(n, C)``; ``(n, 1)`` or
    ``(n,)`` for regression) against ``y_true``; ``loss`` is the loss value the caller
    computed. An undefined value is NaN."""
    scores: np.ndarray
    y: np.ndarray
    if task == "classification":
        scores = softmax(output)
        y = y_true.astype(np.int64, copy=False)
    else:
        scores = output.reshape(-1).astype(np.float64)
        y = y_true.astype(np.float64, copy=False).reshape(-1)
    out: dict[str, float] = {}
    for name in names:
        spec = metric_spec(name, task)
        if spec.fn is None:
            out[name] = float("nan") if loss is None else float(loss)
        else:
            out[name] = float(spec.fn(y, scores))
    return out
