"""A federated client: its data, its persistent state, and how it answers a task."""

from __future__ import annotations

from typing import Any

import numpy as np

from fedfort.client.training import ClientData, LocalTrainer
from fedfort.messages import ClientUpdate, TrainTask

__all__ = ["FederatedClient"]


class FederatedClient:
    """One data holder.

    The only state a client keeps across rounds is SCAFFOLD's control variate ``c_i``. It is
    advanced only when the server confirms that the client's update was committed
    (:meth:`acknowledge`), so a discarded round leaves ``c = mean_i(c_i)`` intact.
    """

    def __init__(self, client_id: str, data: ClientData) -> None:
        self.client_id = client_id
        self.data = data
        self.control: np.ndarray | None = None

    def handle(self, task: TrainTask, trainer: LocalTrainer) -> ClientUpdate:
        """Train for ``task`` and return the update (does not change the client's state)."""
        return trainer.fit(task, self.data, self.control)

    def acknowledge(self, update: ClientUpdate) -> None:
        """Apply the state change of an update the server committed."""
        if update.control_delta is not None:
            base = np.zeros_like(update.control_delta) if self.control is None else self.control
            self.control = (base + update.control_delta).astype(np.float32)

    def state_dict(self) -> dict[str, Any]:
        return {} if self.control is None else {"control": self.control}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        control = state.get("control")
        self.control = None if control is None else np.asarray(control, dtype=np.float32)
