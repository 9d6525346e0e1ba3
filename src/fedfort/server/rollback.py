"""Drift detection with automatic rollback to the best model version.

:class:`DriftRollback` runs after evaluation. It remembers the best validated version (the
committed round whose model scored the highest validation accuracy). When a candidate model
scores more than ``max_drop`` below it, the candidate is not committed: the round commits the
best version's model instead, with the server optimizer's state of that version, and the round
measures why under ``rollback`` (the audit log records it as a ``rollback`` entry). A poisoned
model therefore never becomes a version and is never sent to clients; the federation continues
from the best version with the clients and selection of the following rounds.

``source`` chooses the accuracy watched: the server's validation set (``"server"``) or the
clients' example-weighted federated evaluation (``"federated"``, ``governance.rollback_on``),
for a server that holds no validation data.

This is the "checkpoint and roll back on validation failure" response to untargeted poisoning
(the validation-based defence of Zeno, Xie et al., ICML 2019, applied to the global model
rather than to each update; Shejwalkar and Houmansadr, NDSS 2021, show why single-round
validation alone is not enough, which is why fedfort keeps it behind robust aggregation).

What is restored: the global model and the server optimizer's state (its momentum would
otherwise push the poisoned direction again). What is not: privacy spent is spent (the
accountant keeps counting), and reputation, detection history and selection randomness keep
what they learned from the bad round.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import numpy as np

from fedfort.errors import ConfigError
from fedfort.measurements import RollbackMeasurement
from fedfort.params import vector_sha256
from fedfort.server.engine import RoundContext, Stage

__all__ = ["DriftRollback", "VersionLoader"]

#: returns the committed model of a round and that round's server optimizer state
VersionLoader = Callable[[int], tuple[np.ndarray, dict[str, Any]]]


class DriftRollback(Stage):
    """Commit the best version instead of a candidate whose accuracy drifted ``max_drop`` below."""

    name = "rollback"

    def __init__(
        self,
        max_drop: float,
        optimizer: Stage,
        load_version: VersionLoader | None = None,
        *,
        source: Literal["server", "federated"] = "server",
    ) -> None:
        if not 0.0 < max_drop <= 1.0:
            raise ConfigError(f"governance.rollback_drop must be in (0, 1], got {max_drop}")
        self.source = source
        self.max_drop = max_drop
        self.optimizer = optimizer
        self.load_version = load_version
        self.best_round: int | None = None
        self.best_evaluation: dict[str, float] = {}
        self._best_model: np.ndarray | None = None
        self._best_optimizer: dict[str, Any] = {}

    def _evaluation(self, ctx: RoundContext) -> dict[str, float]:
        """The values this rollback watches: the server's, or the clients' overall ones."""
        if self.source == "server":
            return ctx.evaluation
        federated = ctx.federated_evaluation or {}
        return dict(federated.get("overall", {}))

    def run(self, ctx: RoundContext) -> None:
        evaluation = self._evaluation(ctx)
        accuracy = evaluation.get("accuracy")
        if accuracy is None or ctx.new_model is None:
            return
        best = self.best_evaluation.get("accuracy")
        if best is not None and (not math.isfinite(accuracy) or best - accuracy > self.max_drop):
            self._roll_back(ctx, accuracy, best, evaluation)
            return
        if math.isfinite(accuracy) and (best is None or accuracy >= best):
            optimizer_state = ctx.pending_state.get(self.optimizer.name)
            ctx.pending_state[self.name] = {
                "best_round": ctx.round,
                "best_evaluation": dict(evaluation),
                "model": ctx.new_model,
                "optimizer": optimizer_state
                if optimizer_state is not None
                else self.optimizer.state_dict(),
            }

    def _roll_back(
        self, ctx: RoundContext, accuracy: float, best: float, evaluation: dict[str, float]
    ) -> None:
        assert self.best_round is not None
        model, optimizer_state = self._best()
        rejected = vector_sha256(ctx.new_model) if ctx.new_model is not None else None
        ctx.measure(
            RollbackMeasurement(
                automatic=True,
                reason=(
                    f"validation accuracy {accuracy:.4f} is {best - accuracy:.4f} below the best "
                    f"version (round {self.best_round}: {best:.4f}); the limit is {self.max_drop}"
                ),
                rejected_sha256=rejected,
                rejected_accuracy=accuracy,
                rejected_loss=evaluation.get("loss"),
                to_version=self.best_round,
                to_sha256=vector_sha256(model),
                max_drop=self.max_drop,
            )
        )
        ctx.new_model = model.copy()
        ctx.pending_state[self.optimizer.name] = optimizer_state
        if self.source == "server":
            ctx.evaluation = dict(self.best_evaluation)

    def _best(self) -> tuple[np.ndarray, dict[str, Any]]:
        if self._best_model is None:
            if self.load_version is None or self.best_round is None:
                raise ConfigError("the best model version is not available to roll back to")
            self._best_model, self._best_optimizer = self.load_version(self.best_round)
        return self._best_model, self._best_optimizer

    def commit(self, ctx: RoundContext) -> None:
        pending = ctx.pending_state.get(self.name)
        if pending is None:
            return
        self.best_round = int(pending["best_round"])
        self.best_evaluation = dict(pending["best_evaluation"])
        self._best_model = np.asarray(pending["model"], dtype=np.float32).copy()
        self._best_optimizer = dict(pending["optimizer"])

    def state_dict(self) -> dict[str, Any]:
        # the best model itself is a committed version in the checkpoints; only its round here
        return {"best_round": self.best_round, "best_evaluation": dict(self.best_evaluation)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        best = state.get("best_round")
        self.best_round = None if best is None else int(best)
        self.best_evaluation = dict(state.get("best_evaluation", {}))
        self._best_model, self._best_optimizer = None, {}
