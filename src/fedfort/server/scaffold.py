"""SCAFFOLD's server side: the server control variate ``c``.

Karimireddy et al., "SCAFFOLD: Stochastic Controlled Averaging for Federated Learning"
(ICML 2020), Algorithm 1: after a round with participants ``S`` out of ``N`` clients,
``c <- c + (|S| / N) * mean_{i in S}(delta_c_i) = c + sum_{i in S}(delta_c_i) / N``.
Starting from ``c = c_i = 0`` this keeps the invariant ``c = mean over all N clients of c_i``
as long as clients apply ``delta_c_i`` exactly when the server commits it (see
:meth:`fedfort.client.FederatedClient.acknowledge`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedfort.errors import ConfigError
from fedfort.measurements import ScaffoldMeasurement
from fedfort.server.engine import RoundContext, Stage

__all__ = ["ScaffoldControl"]


class ScaffoldControl(Stage):
    """Holds ``c`` and advances it from the accepted updates' control deltas."""

    name = "scaffold_control"

    def __init__(self, dim: int, num_clients: int) -> None:
        if num_clients < 1:
            raise ConfigError("SCAFFOLD needs at least one client")
        self.num_clients = num_clients
        self.control = np.zeros(dim, dtype=np.float32)

    def current(self) -> np.ndarray:
        """The control variate broadcast with this round's tasks."""
        return self.control

    def run(self, ctx: RoundContext) -> None:
        deltas = [u.control_delta for u in ctx.accepted if u.control_delta is not None]
        if len(deltas) != len(ctx.accepted):
            raise ConfigError("every accepted SCAFFOLD update must carry a control delta")
        if not deltas:
            return
        total = np.stack(deltas).sum(axis=0, dtype=np.float64)
        new = (self.control + total / self.num_clients).astype(np.float32)
        ctx.pending_state[self.name] = {"control": new}
        ctx.measure(ScaffoldMeasurement(control_norm=float(np.linalg.norm(new))))

    def state_dict(self) -> dict[str, Any]:
        return {"control": self.control}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "control" in state:
            self.control = np.asarray(state["control"], dtype=np.float32).copy()
