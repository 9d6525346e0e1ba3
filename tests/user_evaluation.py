"""A user's own metric and loss, outside fedfort, for tests/test_evaluation.py.

Named by import path (``"user_evaluation:sensitivity"``); marked with fedfort's decorators as
a user's plugin would be, plus one unmarked function a config must not be able to call.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F  # noqa: N812

import fedfort

#: how often the marked loss ran (the test checks the run really trained with it)
CALLS = {"focal": 0}


@fedfort.metric(low=0.0, high=1.0, task="classification")
def sensitivity(y_true: np.ndarray, output: np.ndarray) -> float:
    """Recall of class 1 (NaN when the data holds no row of class 1)."""
    positive = y_true == 1
    if not positive.any():
        return float("nan")
    return float((output.argmax(axis=1)[positive] == 1).mean())


@fedfort.loss(task="classification")
def focal(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Focal loss with gamma 2 (Lin et al., ICCV 2017), mean over rows."""
    CALLS["focal"] += 1
    logp = F.log_softmax(output, dim=1).gather(1, target[:, None])[:, 0]
    return (-((1 - logp.exp()) ** 2) * logp).mean()


def unmarked(y_true: np.ndarray, output: np.ndarray) -> float:
    """A plain function: fedfort must refuse to call it from a config."""
    return 0.0
