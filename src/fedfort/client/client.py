"""A federated client: its data, its persistent state, and how it answers a task."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from fedfort.client.privacy import privatize
from fedfort.client.secure import SecureSessions
from fedfort.client.training import ClientData, LocalTrainer
from fedfort.messages import ClientUpdate, TrainTask
from fedfort.secagg.crypto import SigningKey
from fedfort.secagg.policy import ClientPolicy

if TYPE_CHECKING:
    from fedfort.client.dp_sgd import DpSgdLedger

__all__ = ["FederatedClient"]


class FederatedClient:
    """One data holder.

    The state a client keeps across rounds is SCAFFOLD's control variate ``c_i`` and, with
    DP-SGD, its own sample-level privacy ledger. Both advance only when the server confirms
    that the client's update was committed (:meth:`acknowledge`), so a discarded round leaves
    ``c = mean_i(c_i)`` intact and costs the client no privacy in its report.

    ``identity`` is the client's Ed25519 identity key (a fresh one unless given); its public
    half is what the federation registers (the secure-aggregation protocol signs with it);
    ``secure_policy`` is the client's own floor for masking sessions.
    """

    def __init__(
        self,
        client_id: str,
        data: ClientData,
        data_metrics: Mapping[str, float] | None = None,
        *,
        identity: SigningKey | None = None,
        secure_policy: ClientPolicy | None = None,
    ) -> None:
        self.client_id = client_id
        self.data = data
        #: counts of the client's data-protection pipeline (``edge_*``, see fedfort.edge)
        self.data_metrics = dict(data_metrics or {})
        self.control: np.ndarray | None = None
        self._dp_sgd: DpSgdLedger | None = None
        self.identity = SigningKey() if identity is None else identity
        self.secure = SecureSessions(client_id, self.identity, secure_policy)

    def seal(
        self, task: TrainTask, update: ClientUpdate, directory: Mapping[str, bytes]
    ) -> ClientUpdate:
        """Keep ``update`` for the task's secure aggregation session; the sealed reply."""
        return self.secure.seal(task, update, directory)

    def secure_handle(self, round_: int, attempt: int, message: object) -> object:
        """Answer one secure-aggregation message (see :class:`SecureSessions`)."""
        return self.secure.handle(round_, attempt, message)

    def handle(self, task: TrainTask, trainer: LocalTrainer) -> ClientUpdate:
        """Train for ``task`` and return the update (does not change the client's state)."""
        return self.finalize(task, trainer.fit(task, self.data, self.control))

    def finalize(self, task: TrainTask, update: ClientUpdate) -> ClientUpdate:
        """The trained update as it leaves the client: with DP-SGD, the client's own epsilon
        (rounds committed so far plus this one) is attached, then the task's privacy directive
        is applied (see :func:`fedfort.client.privacy.privatize`)."""
        if self.data_metrics:
            update = dataclasses.replace(update, metrics={**update.metrics, **self.data_metrics})
        settings = task.config.dp_sgd
        if settings is not None and "dp_sgd_steps" in update.metrics:
            stats = _dp_sgd_stats(update)
            eps = self.dp_sgd_ledger().epsilon(settings.delta, extra=stats)
            update = dataclasses.replace(update, metrics={**update.metrics, "dp_sgd_epsilon": eps})
        return privatize(update, task.privacy, task.seed)

    def dp_sgd_ledger(self) -> DpSgdLedger:
        """The client's own DP-SGD ledger (sample-level, committed rounds only)."""
        if self._dp_sgd is None:
            from fedfort.client.dp_sgd import DpSgdLedger

            self._dp_sgd = DpSgdLedger()
        return self._dp_sgd

    def acknowledge(self, update: ClientUpdate) -> None:
        """Apply the state change of an update the server committed."""
        update = self.secure.unsealed(update)
        if update.control_delta is not None:
            base = np.zeros_like(update.control_delta) if self.control is None else self.control
            self.control = (base + update.control_delta).astype(np.float32)
        if "dp_sgd_steps" in update.metrics:
            self.dp_sgd_ledger().record(_dp_sgd_stats(update))

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {} if self.control is None else {"control": self.control}
        if self._dp_sgd is not None and len(self._dp_sgd):
            state["dp_sgd"] = self._dp_sgd.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        control = state.get("control")
        self.control = None if control is None else np.asarray(control, dtype=np.float32)
        self._dp_sgd = None
        if "dp_sgd" in state:
            self.dp_sgd_ledger().load_state_dict(state["dp_sgd"])


def _dp_sgd_stats(update: ClientUpdate) -> Any:
    from fedfort.client.dp_sgd import DpSgdStats

    m = update.metrics
    return DpSgdStats(
        steps=int(m["dp_sgd_steps"]),
        sample_rate=float(m["dp_sgd_sample_rate"]),
        noise_multiplier=float(m["dp_sgd_noise_multiplier"]),
        train_loss=float("nan"),
    )
