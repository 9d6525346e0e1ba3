"""Server optimizers: how the aggregate update moves the global model.

Following Reddi et al., "Adaptive Federated Optimization" (ICLR 2021), the aggregated client
delta is treated as a pseudo-gradient ``-Delta`` and fed to a server-side optimizer:

- :class:`ServerSGD` (FedAvg): ``x <- x + lr * Delta`` (``lr = 1`` is plain FedAvg).
- :class:`ServerMomentum` (FedAvgM, Hsu et al. 2019): ``v <- beta * v + Delta``,
  ``x <- x + lr * v``.
- :class:`ServerAdam` (FedAdam): ``m <- b1 m + (1-b1) Delta``, ``v <- b2 v + (1-b2) Delta^2``,
  ``x <- x + lr * m / (sqrt(v) + tau)``.

``step`` is pure: it returns the new model and the new state, and the round engine stores the
state only when the round commits. Server optimizers live in one open registry
(:data:`SERVER_OPTIMIZER_REGISTRY`): ``[server] optimizer`` names a registered one or an import
path, with its options in ``[server.optimizer_options]`` (fedfort's own read their flat keys
``lr``, ``momentum``, ``beta1``, ``beta2``, ``tau``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

import numpy as np

from fedfort.errors import ConfigError
from fedfort.registry import Component, Registry

__all__ = [
    "SERVER_OPTIMIZER_REGISTRY",
    "ServerAdam",
    "ServerMomentum",
    "ServerOptimizer",
    "ServerSGD",
    "build_server_optimizer",
    "make_server_optimizer",
    "register",
]

State = dict[str, Any]


class ServerOptimizer(Component, ABC):
    """Applies an aggregate update to the global model vector (the extension contract: one
    pure :meth:`step`; register it with :func:`register` or name it by import path)."""

    name: str = "server_optimizer"

    @abstractmethod
    def step(self, model: np.ndarray, update: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        """Return ``(new_model, new_state)``; ``state`` is ``{}`` on the first round."""


#: every server optimizer, fedfort's own and the user's, by name
SERVER_OPTIMIZER_REGISTRY: Registry[ServerOptimizer] = Registry("server optimizer", ServerOptimizer)
#: class decorator: ``@register("my_optimizer")``
register = SERVER_OPTIMIZER_REGISTRY.register


@register("fedavg", legacy=lambda s: {"lr": s["lr"]})
class ServerSGD(ServerOptimizer):
    """FedAvg's server step ``x + lr * Delta``."""

    name = "fedavg"

    def __init__(self, lr: float = 1.0) -> None:
        if not lr > 0:
            raise ConfigError(f"server lr must be > 0, got {lr}")
        self.lr = lr

    def step(self, model: np.ndarray, update: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        return (model + np.float32(self.lr) * update).astype(np.float32), {}


@register("fedavgm", legacy=lambda s: {"lr": s["lr"], "momentum": s["momentum"]})
class ServerMomentum(ServerOptimizer):
    """FedAvgM: heavy-ball momentum on the server (Hsu et al., 2019)."""

    name = "fedavgm"

    def __init__(self, lr: float = 1.0, momentum: float = 0.9) -> None:
        if not lr > 0 or not 0 <= momentum < 1:
            raise ConfigError(f"FedAvgM needs lr > 0 and momentum in [0, 1), got {lr}, {momentum}")
        self.lr = lr
        self.momentum = momentum

    def step(self, model: np.ndarray, update: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        velocity = state.get("velocity")
        v = update.copy() if velocity is None else np.float32(self.momentum) * velocity + update
        return (model + np.float32(self.lr) * v).astype(np.float32), {"velocity": v}


@register(
    "fedadam",
    legacy=lambda s: {"lr": s["lr"], "beta1": s["beta1"], "beta2": s["beta2"], "tau": s["tau"]},
)
class ServerAdam(ServerOptimizer):
    """FedAdam (Reddi et al., ICLR 2021), without bias correction as in the paper."""

    name = "fedadam"

    def __init__(
        self, lr: float = 0.01, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-3
    ) -> None:
        if not lr > 0 or not 0 <= beta1 < 1 or not 0 <= beta2 < 1 or not tau > 0:
            raise ConfigError(
                "FedAdam needs lr > 0, beta1 and beta2 in [0, 1) and tau > 0, got "
                f"lr={lr}, beta1={beta1}, beta2={beta2}, tau={tau}"
            )
        self.lr, self.beta1, self.beta2, self.tau = lr, beta1, beta2, tau

    def step(self, model: np.ndarray, update: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        m = state.get("m", np.zeros_like(update))
        v = state.get("v", np.zeros_like(update))
        b1, b2 = np.float32(self.beta1), np.float32(self.beta2)
        m = b1 * m + (1 - b1) * update
        v = b2 * v + (1 - b2) * update * update
        new = model + np.float32(self.lr) * m / (np.sqrt(v) + np.float32(self.tau))
        return new.astype(np.float32), {"m": m.astype(np.float32), "v": v.astype(np.float32)}


def build_server_optimizer(server: Mapping[str, Any]) -> ServerOptimizer:
    """The optimizer a ``[server]`` table (as a dict) names, with its flat keys and options."""
    ref = str(server.get("optimizer", "fedavg"))
    entry = SERVER_OPTIMIZER_REGISTRY.resolve(ref)
    options = dict(entry.legacy(server)) if entry.legacy is not None else {}
    options.update(server.get("optimizer_options") or {})
    return SERVER_OPTIMIZER_REGISTRY.build(ref, options)


def make_server_optimizer(
    name: str,
    *,
    lr: float = 1.0,
    momentum: float = 0.9,
    beta1: float = 0.9,
    beta2: float = 0.99,
    tau: float = 1e-3,
) -> ServerOptimizer:
    """Build a server optimizer by name (``fedavg``, ``fedavgm``, ``fedadam`` or a registered
    one) from fedfort's flat ``[server]`` keys."""
    return build_server_optimizer(
        {
            "optimizer": name,
            "lr": lr,
            "momentum": momentum,
            "beta1": beta1,
            "beta2": beta2,
            "tau": tau,
        }
    )
