"""A client's evaluation of the global model on its own hold-out (federated evaluation).

The hold-out never leaves the client: it answers an :class:`~fedfort.messages.EvaluateTask`
with metric values and an example count only (:class:`~fedfort.messages.EvaluationReport`).
Since each answer tells the server something about the hold-out, a client does not let the
server use it as an oracle: :class:`EvaluationGuard` answers at most one evaluation per round,
for increasing rounds only, and only for weights of the model's shape with finite values. A
server that could score many models of its choice on a client's data could probe it (the
label-leakage and membership attacks that query a model's loss, e.g. Shokri et al., S&P 2017,
need exactly such repeated queries); one score of each round's global model is what the
federation agreed to share. A client that knows the run's planned rounds (its own config's
``rounds``) answers no evaluation past them, so a server cannot walk the round counter up to
score as many models as it likes.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fedfort.client.training import ClientData, LocalTrainer, evaluate_vector
from fedfort.errors import ProtocolError
from fedfort.messages import EvaluateTask, EvaluationReport

__all__ = ["EvaluationGuard", "evaluate_holdout"]


class EvaluationGuard:
    """What a client checks before it evaluates: one answer per round, rounds increasing,
    weights of the model's shape and finite, and (when ``max_round`` is given: the run's
    planned rounds) no round past the run's last. Its state (the last round answered)
    persists with the client's (checkpointed with the run in simulation)."""

    def __init__(self, client_id: str, max_round: int | None = None) -> None:
        self.client_id = client_id
        self.max_round = max_round
        self.last_round = 0

    def admit(self, task: EvaluateTask, dim: int) -> None:
        """Check ``task`` and record its round as answered; :class:`ProtocolError` if refused."""
        if task.client_id != self.client_id:
            raise ProtocolError(
                f"{self.client_id} was asked to evaluate as {task.client_id!r}: it answers only "
                "for itself"
            )
        if task.round <= self.last_round:
            raise ProtocolError(
                f"{self.client_id} already evaluated round {self.last_round} and answers one "
                f"evaluation per round, for later rounds only (asked for round {task.round})"
            )
        if self.max_round is not None and task.round > self.max_round:
            raise ProtocolError(
                f"{self.client_id} refuses to evaluate round {task.round}: its run has "
                f"{self.max_round} rounds"
            )
        weights = np.asarray(task.weights)
        if weights.shape != (dim,) or not np.isfinite(weights).all():
            raise ProtocolError(
                f"{self.client_id} refuses to evaluate round {task.round}: the weights are not a "
                f"finite vector of the model's {dim} entries"
            )
        self.last_round = task.round

    def state_dict(self) -> dict[str, Any]:
        return {"last_round": self.last_round} if self.last_round else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last_round = int(state.get("last_round", 0))


def evaluate_holdout(
    trainer: LocalTrainer, task: EvaluateTask, holdout: ClientData
) -> EvaluationReport:
    """Score ``task.weights`` on ``holdout``; metrics undefined on it (NaN) are left out."""
    n = len(holdout)
    if n == 0:
        raise ProtocolError(f"{task.client_id} has no hold-out rows to evaluate on")
    values = evaluate_vector(
        trainer,
        np.ascontiguousarray(task.weights, dtype=np.float32),
        holdout.x,
        holdout.y,
        task.loss,
        metrics=task.metrics,
        task=task.task,
    )
    kept = {k: v for k, v in values.items() if math.isfinite(v)}
    return EvaluationReport(task.round, task.client_id, n, kept)
