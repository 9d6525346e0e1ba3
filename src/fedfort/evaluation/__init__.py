"""How a model is scored: metrics, losses and the user's own, and the ``[evaluation]`` table.

- :mod:`fedfort.evaluation.metrics`: accuracy, loss, ROC AUC, macro F1 and balanced accuracy
  for classification; MSE, MAE and R2 for regression (computed with ``sklearn.metrics``), each
  with the range a reported value must lie in.
- :mod:`fedfort.evaluation.user`: the :func:`metric` and :func:`loss` decorators that mark a
  user's function so a config may name it by import path (``"mypkg.metrics:sensitivity"``).
- :mod:`fedfort.evaluation.losses`: the training loss a task names (loads torch).
- :mod:`fedfort.evaluation.config`: the ``[evaluation]`` table.

Only the light modules load here; ``metrics`` (scikit-learn) and ``losses`` (torch) load when
imported.
"""

from __future__ import annotations

from fedfort.evaluation.config import EvaluationConfig, Task, check_loss, default_loss
from fedfort.evaluation.user import loss, metric

__all__ = ["EvaluationConfig", "Task", "check_loss", "default_loss", "loss", "metric"]
