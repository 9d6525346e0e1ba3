"""The messages a round exchanges between the server and its clients.

They are plain data: the simulation runtime passes them in-process or to worker processes, and
the network runtime will serialise the same objects. Vectors are float32 NumPy arrays of the
model's flat dimension (see :mod:`fedfort.params`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

__all__ = ["Algorithm", "ClientUpdate", "LocalTrainingConfig", "LossName", "TrainTask"]

Algorithm = Literal["fedavg", "fedprox", "scaffold"]
LossName = Literal["cross_entropy", "mse"]


@dataclass(frozen=True)
class LocalTrainingConfig:
    """How a client trains locally; chosen by the server and sent with every task.

    ``algorithm`` selects FedAvg (plain local SGD), FedProx (adds the proximal term
    ``mu/2 * ||w - w_global||^2``, Li et al. 2020) or SCAFFOLD (control-variate drift
    correction, Karimireddy et al. 2020).
    """

    algorithm: Algorithm = "fedavg"
    epochs: int = 1
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.0
    weight_decay: float = 0.0
    mu: float = 0.0
    loss: LossName = "cross_entropy"


@dataclass(frozen=True)
class TrainTask:
    """The server's broadcast to one selected client for one round attempt."""

    round: int
    attempt: int
    client_id: str
    weights: np.ndarray
    config: LocalTrainingConfig
    seed: int
    server_control: np.ndarray | None = None


@dataclass(frozen=True)
class ClientUpdate:
    """A client's answer: the model delta ``w_local - w_global`` and its sample count.

    ``control_delta`` is SCAFFOLD's ``c_i+ - c_i`` and is ``None`` for other algorithms.
    ``metrics`` holds local measurements such as ``train_loss`` and ``train_time_s``.
    """

    round: int
    client_id: str
    delta: np.ndarray
    num_samples: int
    metrics: dict[str, float] = field(default_factory=dict)
    control_delta: np.ndarray | None = None
