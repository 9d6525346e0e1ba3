"""Gradient inversion: an honest-but-curious server rebuilds a client's data from its update.

Three optimisation attacks, each matching the gradient of a dummy input (at the global model
the server sent) to the observed (pseudo-)gradient of an :class:`InversionTarget` (see
:mod:`fedfort.attacks.inference.observed_update` for how an update becomes one):

- :class:`DLG` -- Zhu, Liu and Han, "Deep Leakage from Gradients", NeurIPS 2019: dummy input
  *and* dummy soft label, squared L2 gradient distance, L-BFGS.
- :class:`IDLG` -- Zhao, Mopuri and Bilen, "iDLG: Improved Deep Leakage from Gradients", 2020:
  the label is read off the last layer's gradient first (:func:`recover_labels`), then only
  the input is optimised with DLG's objective.
- :class:`InvertingGradients` -- Geiping, Bauermeister, Dröge and Moeller, "Inverting
  Gradients -- How easy is it to break privacy in federated learning?", NeurIPS 2020: cosine
  gradient distance plus a total-variation prior, Adam on the *signed* gradient of the input,
  a box constraint to the data range after every step, step decay at 3/8, 5/8 and 7/8 of the
  iterations, and several restarts of which the lowest matching loss wins.

Every attack is seeded with a ``torch.Generator`` and runs on the CPU. Each returns an
:class:`InversionResult` holding the reconstruction, the recovered labels, the iterations
spent, the final matching loss and the attack's starting point (its "noise" baseline).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch.nn import functional as F  # noqa: N812

from fedfort.attacks.inference.observed_update import InversionTarget, recover_labels
from fedfort.errors import ConfigError

__all__ = [
    "DLG",
    "IDLG",
    "GradientInversion",
    "InversionResult",
    "InvertingGradients",
    "total_variation",
]


@dataclass(frozen=True)
class InversionResult:
    """What a gradient-inversion attack recovered from one update.

    - ``images``: the reconstruction, float32 ``(batch, *input_shape)``, clipped to the data
      range;
    - ``labels``: recovered labels, int64 ``(batch,)``;
    - ``initial``: the attack's starting point, clipped the same way (scoring it gives the
      "no better than noise" baseline);
    - ``iterations``: optimiser iterations over all restarts;
    - ``loss``: the final gradient-matching loss of the returned reconstruction (the
      attack's own objective, so only comparable within one attack).
    """

    attack: str
    images: np.ndarray
    labels: np.ndarray
    initial: np.ndarray
    iterations: int
    loss: float


class GradientInversion(Protocol):
    """A gradient-inversion attack: ``invert(target, batch_size)`` -> :class:`InversionResult`."""

    name: str

    def invert(self, target: InversionTarget, batch_size: int = 1) -> InversionResult: ...


def _check_positive_int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def _check_positive(name: str, value: float) -> float:
    v = float(value)
    if not (np.isfinite(v) and v > 0):
        raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")
    return v


def _dummy_gradients(
    target: InversionTarget, x: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """Gradients of the mean cross-entropy at the global weights, differentiable in ``x``."""
    loss = F.cross_entropy(target.model(x), labels)
    return torch.autograd.grad(loss, target.parameters(), create_graph=True)


def _l2_distance(
    dummy: tuple[torch.Tensor, ...], observed: tuple[torch.Tensor, ...]
) -> torch.Tensor:
    return torch.stack([((d - o) ** 2).sum() for d, o in zip(dummy, observed, strict=True)]).sum()


def _cosine_distance(
    dummy: tuple[torch.Tensor, ...], observed: tuple[torch.Tensor, ...]
) -> torch.Tensor:
    dot = torch.stack([(d * o).sum() for d, o in zip(dummy, observed, strict=True)]).sum()
    dn = torch.stack([(d * d).sum() for d in dummy]).sum().sqrt()
    on = torch.stack([(o * o).sum() for o in observed]).sum().sqrt()
    return 1.0 - dot / (dn * on + 1e-12)


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation: mean absolute difference of neighbouring pixels of a
    ``(batch, H, W)`` tensor (the image prior of Geiping et al., after Rudin, Osher and
    Fatemi 1992)."""
    dx = (images[:, :, 1:] - images[:, :, :-1]).abs().mean()
    dy = (images[:, 1:, :] - images[:, :-1, :]).abs().mean()
    return dx + dy


def _clipped(target: InversionTarget, x: torch.Tensor) -> np.ndarray:
    low, high = target.data_range
    out: np.ndarray = x.detach().clamp(low, high).numpy().astype(np.float32)
    return out


def _lbfgs(params: list[torch.Tensor], iterations: int) -> torch.optim.LBFGS:
    """L-BFGS with a strong-Wolfe line search, run for ``iterations`` in one ``step``."""
    return torch.optim.LBFGS(
        params,
        lr=1.0,
        max_iter=iterations,
        max_eval=iterations * 5 // 4,
        tolerance_grad=1e-12,
        tolerance_change=1e-15,
        history_size=100,
        line_search_fn="strong_wolfe",
    )


def _lbfgs_iterations(optimizer: torch.optim.LBFGS) -> int:
    state = optimizer.state[optimizer.param_groups[0]["params"][0]]
    return int(state.get("n_iter", 0))


class DLG:
    """Deep Leakage from Gradients (Zhu, Liu and Han, NeurIPS 2019).

    Optimises a dummy input ``x'`` (standard normal start) and dummy label logits (the soft
    label is their softmax) with L-BFGS to minimise ``sum_l ||grad_l(x', y') - g_l||^2`` over
    the layers ``l``. Defends against nothing; it is the attack a defence must stop.
    """

    name = "dlg"

    def __init__(self, iterations: int = 200, seed: int = 0) -> None:
        self.iterations = _check_positive_int("iterations", iterations)
        self.seed = int(seed)

    def invert(self, target: InversionTarget, batch_size: int = 1) -> InversionResult:
        _check_positive_int("batch_size", batch_size)
        gen = torch.Generator().manual_seed(self.seed)
        x = torch.randn((batch_size, *target.input_shape), generator=gen)
        logits = torch.randn((batch_size, target.num_classes), generator=gen)
        initial = _clipped(target, x)
        x.requires_grad_(True)
        logits.requires_grad_(True)
        observed = target.gradients
        optimizer = _lbfgs([x, logits], self.iterations)

        def objective() -> torch.Tensor:
            optimizer.zero_grad()
            soft = F.softmax(logits, dim=-1)
            loss = _l2_distance(_dummy_gradients(target, x, soft), observed)
            torch.autograd.backward(loss)
            return loss

        optimizer.step(objective)  # type: ignore[no-untyped-call]
        steps = _lbfgs_iterations(optimizer)
        with torch.no_grad():
            soft = F.softmax(logits, dim=-1)
        final = float(_l2_distance(_dummy_gradients(target, x, soft), observed).detach())
        return InversionResult(
            attack=self.name,
            images=_clipped(target, x),
            labels=soft.argmax(dim=-1).numpy().astype(np.int64),
            initial=initial,
            iterations=steps,
            loss=final,
        )


class IDLG:
    """Improved DLG (Zhao, Mopuri and Bilen, 2020): analytic label, then DLG on the input only.

    The label comes from the sign of the last layer's gradient (:func:`recover_labels`); the
    dummy input (standard normal start) is then fitted with L-BFGS to the squared L2 gradient
    distance under that hard label.
    """

    name = "idlg"

    def __init__(self, iterations: int = 200, seed: int = 0) -> None:
        self.iterations = _check_positive_int("iterations", iterations)
        self.seed = int(seed)

    def invert(self, target: InversionTarget, batch_size: int = 1) -> InversionResult:
        _check_positive_int("batch_size", batch_size)
        labels = recover_labels(target, batch_size)
        gen = torch.Generator().manual_seed(self.seed)
        x = torch.randn((batch_size, *target.input_shape), generator=gen)
        initial = _clipped(target, x)
        x.requires_grad_(True)
        observed = target.gradients
        optimizer = _lbfgs([x], self.iterations)

        def objective() -> torch.Tensor:
            optimizer.zero_grad()
            loss = _l2_distance(_dummy_gradients(target, x, labels), observed)
            torch.autograd.backward(loss)
            return loss

        optimizer.step(objective)  # type: ignore[no-untyped-call]
        steps = _lbfgs_iterations(optimizer)
        final = float(_l2_distance(_dummy_gradients(target, x, labels), observed).detach())
        return InversionResult(
            attack=self.name,
            images=_clipped(target, x),
            labels=labels.numpy(),
            initial=initial,
            iterations=steps,
            loss=final,
        )


class InvertingGradients:
    """Inverting Gradients (Geiping, Bauermeister, Dröge and Moeller, NeurIPS 2020).

    Minimises ``1 - cos(grad(x'), g) + tv_weight * TV(x')`` over the dummy input, with the
    label recovered analytically (:func:`recover_labels`). Each of ``restarts`` runs starts
    from uniform noise on the data range and takes ``iterations`` Adam steps on the *sign* of
    the input gradient, projecting onto the data range after every step; the learning rate
    drops tenfold at 3/8, 5/8 and 7/8 of the run. The restart with the lowest final loss is
    returned. Cosine matching ignores the update's scale, so clipping the update (which only
    rescales it) does not slow this attack down.
    """

    name = "inverting_gradients"

    def __init__(
        self,
        iterations: int = 400,
        lr: float = 0.1,
        tv_weight: float = 1e-2,
        restarts: int = 2,
        seed: int = 0,
    ) -> None:
        self.iterations = _check_positive_int("iterations", iterations)
        self.lr = _check_positive("lr", lr)
        self.tv_weight = float(tv_weight)
        if not (np.isfinite(self.tv_weight) and self.tv_weight >= 0):
            raise ConfigError(f"tv_weight must be a finite number >= 0, got {tv_weight!r}")
        self.restarts = _check_positive_int("restarts", restarts)
        self.seed = int(seed)

    def _loss(self, target: InversionTarget, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        loss = _cosine_distance(_dummy_gradients(target, x, labels), target.gradients)
        if self.tv_weight > 0 and target.image_shape is not None:
            loss = loss + self.tv_weight * total_variation(x.reshape(-1, *target.image_shape))
        return loss

    def invert(self, target: InversionTarget, batch_size: int = 1) -> InversionResult:
        _check_positive_int("batch_size", batch_size)
        labels = recover_labels(target, batch_size)
        low, high = target.data_range
        gen = torch.Generator().manual_seed(self.seed)
        milestones = [self.iterations * k // 8 for k in (3, 5, 7)]
        best: tuple[float, torch.Tensor, np.ndarray] | None = None
        for _ in range(self.restarts):
            x = low + (high - low) * torch.rand((batch_size, *target.input_shape), generator=gen)
            initial = _clipped(target, x)
            x.requires_grad_(True)
            optimizer = torch.optim.Adam([x], lr=self.lr)
            schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=0.1)
            for _ in range(self.iterations):
                optimizer.zero_grad()
                (grad,) = torch.autograd.grad(self._loss(target, x, labels), [x])
                x.grad = grad.sign()
                optimizer.step()
                schedule.step()
                with torch.no_grad():
                    x.clamp_(low, high)
            final = float(self._loss(target, x, labels).detach())
            if best is None or final < best[0]:
                best = (final, x.detach().clone(), initial)
        assert best is not None
        return InversionResult(
            attack=self.name,
            images=_clipped(target, best[1]),
            labels=labels.numpy(),
            initial=best[2],
            iterations=self.iterations * self.restarts,
            loss=best[0],
        )
