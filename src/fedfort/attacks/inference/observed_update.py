"""What an honest-but-curious server holds when it reads one update, as the attacks see it.

The server chose the global model ``w`` and the local training settings (learning rate
``lr``, number of local steps ``K``) and receives the client's update ``delta = w_K - w``.

- **One local SGD step on one image** (``K = 1``, batch 1): ``delta = -lr * grad L(w; x, y)``,
  so ``-delta / lr`` *is* the gradient of the client's image.
- **A few local steps** (``K > 1``): ``delta = -lr * sum_k grad L(w_k; x, y)``. The attacks
  treat ``-delta / (K lr)`` as a *pseudo-gradient* at ``w`` -- the mean of the gradients along
  the local trajectory -- and match a dummy image's gradient at ``w`` to it, as Geiping et al.
  ("Inverting Gradients", NeurIPS 2020, section 6) do when they invert a FedAvg update
  without simulating the local steps. The approximation is good while the weights move
  little during local training; cosine matching ignores its scale.

:func:`target_from_update` turns the flat update vector into per-layer pseudo-gradients
through :class:`fedfort.params.ParamSpec`, the same layout every update uses.
:func:`recover_labels` is the analytic label recovery of iDLG (Zhao, Mopuri and Bilen, 2020).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fedfort.errors import ConfigError, InvalidUpdate
from fedfort.params import ParamSpec

__all__ = ["InversionTarget", "recover_labels", "target_from_update"]


@dataclass(frozen=True)
class InversionTarget:
    """One observed update, ready to invert.

    ``model`` carries the global weights the update was computed from; ``gradients`` holds one
    (pseudo-)gradient tensor per trainable parameter, in ``model.parameters()`` order.
    ``input_shape`` is the shape of one input (``(64,)`` for flattened 8x8 digits),
    ``image_shape`` its 2-D layout for the total-variation prior (``None``: no prior), and
    ``data_range`` the interval the pixels live in.
    """

    model: nn.Module
    gradients: tuple[torch.Tensor, ...]
    input_shape: tuple[int, ...]
    num_classes: int
    image_shape: tuple[int, int] | None = None
    data_range: tuple[float, float] = (0.0, 1.0)

    def parameters(self) -> list[nn.Parameter]:
        """The trainable parameters the gradients belong to."""
        return [p for p in self.model.parameters() if p.requires_grad]


def target_from_update(
    model: nn.Module,
    update: np.ndarray,
    *,
    lr: float,
    local_steps: int = 1,
    input_shape: tuple[int, ...],
    num_classes: int,
    image_shape: tuple[int, int] | None = None,
    data_range: tuple[float, float] = (0.0, 1.0),
) -> InversionTarget:
    """The pseudo-gradient ``-update / (local_steps * lr)`` of ``model``, split per layer.

    ``model`` must hold the global weights the client started from. Raises
    :class:`~fedfort.errors.InvalidUpdate` if ``update`` is not a finite 1-D vector of the
    model's length, and :class:`~fedfort.errors.ConfigError` for impossible settings; nothing
    is changed either way.
    """
    if not (math.isfinite(lr) and lr > 0):
        raise ConfigError(f"the local learning rate must be a finite number > 0, got {lr!r}")
    if isinstance(local_steps, bool) or not isinstance(local_steps, int) or local_steps < 1:
        raise ConfigError(f"local_steps must be an integer >= 1, got {local_steps!r}")
    if num_classes < 2:
        raise ConfigError(f"num_classes must be >= 2, got {num_classes}")
    low, high = data_range
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ConfigError(f"data_range must be a finite interval (low, high), got {data_range}")
    if image_shape is not None and math.prod(image_shape) != math.prod(input_shape):
        raise ConfigError(f"image_shape {image_shape} does not hold an input of {input_shape}")
    spec = ParamSpec.from_module(model)
    vector = np.asarray(update)
    if vector.ndim != 1 or vector.shape[0] != spec.dim:
        raise InvalidUpdate(
            "bad_shape",
            f"the update has shape {vector.shape}, the model's flat vector ({spec.dim},); "
            "invert an update of the same architecture as the model",
        )
    if vector.dtype.kind != "f" or not np.isfinite(vector).all():
        raise InvalidUpdate("non_finite", "the update must be a finite floating-point vector")
    flat = torch.from_numpy(vector.astype(np.float32)) * (-1.0 / (lr * local_steps))
    grads = tuple(g.clone() for g in spec.bind(model).split_params(flat))
    return InversionTarget(
        model=model,
        gradients=grads,
        input_shape=tuple(input_shape),
        num_classes=int(num_classes),
        image_shape=image_shape,
        data_range=(float(low), float(high)),
    )


def recover_labels(target: InversionTarget, count: int = 1) -> torch.Tensor:
    """The labels of the images behind the update, from the last layer's gradient (iDLG).

    With softmax cross-entropy the gradient of the output bias is ``p - onehot(y)``: negative
    only at the true label. Without a bias, the rows of the last weight gradient are
    ``(p - onehot(y)) h^T`` with non-negative ``h`` (after a ReLU, or non-negative pixels), so
    the true label's row sums to a negative number and the others to positive ones. Zhao et
    al. state the rule for one image; for ``count`` images (a summed update) the ``count``
    most negative entries are returned, which is exact when the labels are distinct.
    """
    if count < 1 or count > target.num_classes:
        raise ConfigError(f"count must be in 1..{target.num_classes}, got {count}")
    last = target.gradients[-1]
    if last.shape == (target.num_classes,):
        scores = last
    elif last.ndim == 2 and last.shape[0] == target.num_classes:
        scores = last.sum(dim=1)
    else:
        raise ConfigError(
            f"the model's last parameter has shape {tuple(last.shape)}; label recovery needs a "
            f"final linear layer with {target.num_classes} outputs"
        )
    return torch.argsort(scores)[:count].to(torch.int64)
