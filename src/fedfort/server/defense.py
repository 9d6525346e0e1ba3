"""Stages that put the detector and the reputation ledger into the round.

Order in the pipeline: ``verify -> detect -> quorum -> aggregate -> ... -> reputation``.
Detection runs on individual updates, so it cannot run when updates are hidden by secure
aggregation; the configuration refuses that combination.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from fedfort.detection.detector import AnomalyDetector
from fedfort.detection.reputation import ReputationLedger
from fedfort.errors import ConfigError
from fedfort.measurements import DetectMeasurement, ReputationMeasurement
from fedfort.server.engine import RoundContext, Stage

__all__ = ["DetectAnomalies", "DetectionAction", "UpdateReputation"]

DetectionAction = Literal["exclude", "downweight", "record"]


class DetectAnomalies(Stage):
    """Score the accepted updates and act on the flagged ones.

    ``exclude`` drops flagged updates before aggregation, ``downweight`` multiplies their
    aggregation weight by ``downweight_factor`` (only weight-using rules such as the mean are
    affected), ``record`` only reports them. Flagged client ids are left in
    ``ctx.extras["flagged"]`` for the reputation stage.
    """

    name = "detect"

    def __init__(
        self,
        detector: AnomalyDetector,
        action: DetectionAction = "exclude",
        downweight_factor: float = 0.1,
    ) -> None:
        if action not in ("exclude", "downweight", "record"):
            raise ConfigError(f"detection action must be exclude, downweight or record: {action}")
        if not 0.0 <= downweight_factor <= 1.0:
            raise ConfigError(f"downweight_factor must be in [0, 1], got {downweight_factor}")
        self.detector = detector
        self.action = action
        self.downweight_factor = downweight_factor

    def run(self, ctx: RoundContext) -> None:
        if not ctx.accepted:
            return
        ids = tuple(u.client_id for u in ctx.accepted)
        report = self.detector.score(np.stack([u.delta for u in ctx.accepted]), ids)
        flagged = set(report.flagged_ids)
        ctx.extras["flagged"] = sorted(flagged)
        ctx.pending_state[self.name] = report.history_state
        if self.action == "exclude":
            ctx.accepted = [u for u in ctx.accepted if u.client_id not in flagged]
        elif self.action == "downweight":
            for cid in flagged:
                ctx.weight_factors[cid] = self.downweight_factor
        scored = report.to_dict()
        ctx.measure(
            DetectMeasurement(
                action=self.action,
                flagged=scored.pop("flagged"),
                scores=scored.pop("scores"),
                components=scored.pop("components"),
                extra=scored,
            )
        )

    def state_dict(self) -> dict[str, Any]:
        return self.detector.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.detector.load_state_dict(state)


class UpdateReputation(Stage):
    """Advance the reputation ledger from this round's outcome (last stage of the round).

    Accepted, unflagged updates earn reputation; flagged updates and updates rejected by
    verification cost it. The same ledger object is the selection policy of
    :class:`~fedfort.server.selection.SelectClients`.
    """

    name = "reputation"

    def __init__(self, ledger: ReputationLedger) -> None:
        self.ledger = ledger

    def run(self, ctx: RoundContext) -> None:
        selected = set(ctx.selected)
        flagged = set(ctx.extras.get("flagged", ()))
        rejected = {r.client_id for r in ctx.rejections} & selected
        accepted = {u.client_id for u in ctx.accepted} - flagged
        state = self.ledger.updated(
            ctx.round, participants=selected, accepted=accepted, penalised=flagged | rejected
        )
        ctx.pending_state[self.name] = state
        scores = state["scores"]
        quarantined = sorted(c for c, r in state["quarantined_until"].items() if r > ctx.round)
        values = np.fromiter(scores.values(), dtype=np.float64, count=len(scores))
        spread = (
            dict(
                zip(
                    ("p10", "median", "p90"),
                    np.quantile(values, [0.1, 0.5, 0.9]).tolist(),
                    strict=True,
                )
            )
            if scores
            else {}
        )
        ctx.measure(
            ReputationMeasurement(
                penalised=sorted(flagged | rejected),
                quarantined=quarantined,
                mean=float(values.mean()) if scores else None,
                min=float(values.min()) if scores else None,
                max=float(values.max()) if scores else None,
                **spread,
            )
        )

    def state_dict(self) -> dict[str, Any]:
        return self.ledger.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ledger.load_state_dict(state)
