"""The training loss a task names: ``cross_entropy``, ``mse`` or a marked user loss.

The name travels in every :class:`~fedfort.messages.TrainTask` as a plain string; a client
resolves it here, so a server can name only fedfort's losses or a function the client itself
has installed and marked with :func:`fedfort.loss` (see :mod:`fedfort.evaluation.user`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch.nn import functional as F  # noqa: N812

from fedfort.errors import ConfigError
from fedfort.evaluation.user import resolve_loss

__all__ = ["BUILTIN_LOSSES", "LossFn", "loss_function"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if out.ndim == 2 and out.shape[1] == 1 and y.ndim == 1:
        out = out[:, 0]  # one regression output per row
    return F.mse_loss(out, y)


BUILTIN_LOSSES: dict[str, LossFn] = {"cross_entropy": F.cross_entropy, "mse": _mse}


@functools.lru_cache(maxsize=32)
def loss_function(name: str) -> LossFn:
    """The loss called ``name``: built in, or a function marked with ``@fedfort.loss``."""
    builtin = BUILTIN_LOSSES.get(name)
    if builtin is not None:
        return builtin
    if ":" not in name:
        raise ConfigError(
            f"unknown loss {name!r}: choose from {sorted(BUILTIN_LOSSES)} or name a function "
            "marked with @fedfort.loss by its import path 'package.module:function'"
        )
    fn, _ = resolve_loss(name)
    return fn
