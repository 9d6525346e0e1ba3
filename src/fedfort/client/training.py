"""Local training for FedAvg, FedProx and SCAFFOLD on one client's data.

- FedAvg (McMahan et al., AISTATS 2017): ``epochs`` of minibatch SGD (optional momentum and
  weight decay) from the global model; the client returns ``w_local - w_global``.
- FedProx (Li et al., MLSys 2020): the local objective gains ``mu/2 * ||w - w_global||^2``;
  its gradient ``mu * (w - w_global)`` is added to every step's gradient.
- SCAFFOLD (Karimireddy et al., ICML 2020, Algorithm 1 with option II): every local step uses
  the corrected gradient ``g - c_i + c``; after ``K`` steps the client sets
  ``c_i+ = c_i - c + (x - y_i) / (K * lr)`` and returns ``delta_c = c_i+ - c_i``.

Gradient corrections are applied with one fused ``_foreach`` call per step over all
parameter tensors, and the model is moved in and out as one flat vector.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from fedfort.errors import ConfigError
from fedfort.evaluation.config import Task
from fedfort.evaluation.losses import loss_function
from fedfort.evaluation.metrics import compute_metrics
from fedfort.messages import ClientUpdate, LocalTrainingConfig, LossName, TrainTask
from fedfort.models import ModelSpec
from fedfort.params import BoundParams, ParamSpec

__all__ = ["ClientData", "LocalTrainer", "evaluate_vector"]


@dataclass(frozen=True)
class ClientData:
    """One client's local samples as tensors (features float32, labels int64 or float32)."""

    x: torch.Tensor
    y: torch.Tensor

    @classmethod
    def from_numpy(cls, x: np.ndarray, y: np.ndarray) -> ClientData:
        return cls(
            torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(y))
        )

    def __len__(self) -> int:
        return int(self.y.shape[0])


def _loss(name: LossName, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The task's loss ``name`` (built in or a marked user loss) of ``out`` against ``y``."""
    if name == "cross_entropy":
        return F.cross_entropy(out, y)
    return loss_function(name)(out, y)


class LocalTrainer:
    """Runs local training for tasks on one reusable model instance.

    One trainer per process is enough: each task loads the global vector into the cached
    model, so no model is rebuilt per client.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.spec = ParamSpec.from_module(model)
        self.bound: BoundParams = self.spec.bind(model)

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> LocalTrainer:
        return cls(spec.build(seed=0))

    def fit(
        self, task: TrainTask, data: ClientData, control: np.ndarray | None = None
    ) -> ClientUpdate:
        """Train on ``data`` from ``task.weights`` and return the update.

        ``control`` is this client's SCAFFOLD control variate ``c_i`` (zeros if ``None``).
        All training randomness follows ``task.seed``: the shuffling, DP-SGD's sampling and
        noise, and layers that draw from torch's global generator (dropout), which is seeded
        from it for the duration of the call and then restored. A client that asks for
        privacy against the server puts its own OS-drawn seed there
        (:meth:`fedfort.client.FederatedClient.training_task`).
        """
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(task.seed)  # the CPU generator only
            return self._fit(task, data, control)

    def _fit(self, task: TrainTask, data: ClientData, control: np.ndarray | None) -> ClientUpdate:
        start = time.perf_counter()
        cfg = task.config
        _check_config(cfg)
        n = len(data)
        if n == 0:
            raise ConfigError(f"client {task.client_id} has no training samples")
        global_vec = torch.from_numpy(np.ascontiguousarray(task.weights, dtype=np.float32))
        self.bound.load(global_vec)
        if cfg.dp_sgd is not None:
            return self._fit_dp_sgd(task, data, global_vec, start)
        params = self.bound.params
        global_params = self.bound.split_params(global_vec)

        correction: list[torch.Tensor] | None = None
        if cfg.algorithm == "scaffold":
            if task.server_control is None:
                raise ConfigError("SCAFFOLD task arrived without the server control variate")
            c = torch.from_numpy(task.server_control)
            c_i = torch.zeros_like(c) if control is None else torch.from_numpy(control)
            correction = self.bound.split_params(c - c_i)

        gen = torch.Generator().manual_seed(task.seed)
        optimizer = torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
        batch = n if cfg.batch_size <= 0 else min(cfg.batch_size, n)
        self.model.train()
        steps = 0
        loss_sum = torch.zeros((), dtype=torch.float64)
        for _ in range(cfg.epochs):
            perm = torch.randperm(n, generator=gen)
            for begin in range(0, n, batch):
                idx = perm[begin : begin + batch]
                if idx.numel() < 2 <= n:
                    continue  # a 1-sample tail batch breaks BatchNorm and adds only noise
                optimizer.zero_grad(set_to_none=False)
                loss = _loss(cfg.loss, self.model(data.x[idx]), data.y[idx])
                torch.autograd.backward(loss)
                grads = [p.grad for p in params if p.grad is not None]
                if len(grads) != len(params):
                    raise ConfigError("every trainable parameter must take part in the loss")
                if cfg.algorithm == "fedprox" and cfg.mu > 0:
                    with torch.no_grad():
                        gap = torch._foreach_sub(params, global_params)
                        torch._foreach_add_(grads, gap, alpha=cfg.mu)
                if correction is not None:
                    torch._foreach_add_(grads, correction)
                optimizer.step()
                loss_sum += loss.detach()
                steps += 1

        local_vec = self.bound.flatten_torch()
        delta = (local_vec - global_vec).numpy()
        control_delta: np.ndarray | None = None
        if correction is not None and task.server_control is not None:
            # option II: c_i+ - c_i = -c + (x - y_i) / (K * lr), on trainable entries only
            control_delta = np.zeros_like(task.server_control)
            p = self.spec.num_params
            control_delta[:p] = -task.server_control[:p] - delta[:p] / (max(steps, 1) * cfg.lr)
        metrics = {
            "train_loss": float(loss_sum) / max(steps, 1),
            "local_steps": float(steps),
            "train_time_s": time.perf_counter() - start,
        }
        return ClientUpdate(
            round=task.round,
            client_id=task.client_id,
            delta=delta.astype(np.float32, copy=False),
            num_samples=n,
            metrics=metrics,
            control_delta=control_delta,
        )

    def _fit_dp_sgd(
        self, task: TrainTask, data: ClientData, global_vec: torch.Tensor, start: float
    ) -> ClientUpdate:
        """Sample-level DP-SGD through Opacus (see :mod:`fedfort.client.dp_sgd`)."""
        from fedfort.client.dp_sgd import train_dp_sgd  # Opacus loads only when asked for

        stats = train_dp_sgd(self.model, data, task.config, task.seed)
        delta = (self.bound.flatten_torch() - global_vec).numpy()
        return ClientUpdate(
            round=task.round,
            client_id=task.client_id,
            delta=delta.astype(np.float32, copy=False),
            num_samples=len(data),
            metrics={
                "train_loss": stats.train_loss,
                "local_steps": float(stats.steps),
                "train_time_s": time.perf_counter() - start,
                "dp_sgd_steps": float(stats.steps),
                "dp_sgd_sample_rate": stats.sample_rate,
                "dp_sgd_noise_multiplier": stats.noise_multiplier,
            },
        )


def _check_config(cfg: LocalTrainingConfig) -> None:
    if cfg.epochs < 1:
        raise ConfigError(f"local epochs must be >= 1, got {cfg.epochs}")
    if not cfg.lr > 0:
        raise ConfigError(f"local lr must be > 0, got {cfg.lr}")
    if cfg.algorithm not in ("fedavg", "fedprox", "scaffold"):
        raise ConfigError(f"unknown local algorithm {cfg.algorithm!r}")


def evaluate_vector(
    trainer: LocalTrainer,
    vector: np.ndarray,
    x: torch.Tensor,
    y: torch.Tensor,
    loss: LossName = "cross_entropy",
    chunk: int = 8192,
    *,
    metrics: Sequence[str] | None = None,
    task: Task = "classification",
) -> dict[str, float]:
    """The model with weights ``vector`` scored on ``(x, y)``.

    Without ``metrics``: the mean ``loss`` and, for cross-entropy, the ``accuracy``. With
    ``metrics`` (names of :mod:`fedfort.evaluation.metrics`): those values, NaN where a
    metric is undefined on the data (an AUC with one class present).
    """
    trainer.bound.load(vector)
    model = trainer.model
    model.eval()
    total_loss = 0.0
    correct = 0
    n = int(y.shape[0])
    outputs: list[torch.Tensor] = []
    with torch.no_grad():
        for begin in range(0, n, chunk):
            out = model(x[begin : begin + chunk])
            target = y[begin : begin + chunk]
            total_loss += float(_loss(loss, out, target)) * int(target.shape[0])
            if metrics is not None:
                outputs.append(out)
            elif loss == "cross_entropy":
                correct += int((out.argmax(dim=1) == target).sum())
    if metrics is not None:
        output = torch.cat(outputs).numpy() if outputs else np.zeros((0, 1), np.float32)
        return compute_metrics(metrics, y.numpy(), output, task, total_loss / max(n, 1))
    result = {"loss": total_loss / n}
    if loss == "cross_entropy":
        result["accuracy"] = correct / n
    return result
