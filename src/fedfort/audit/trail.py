"""What a run writes to its audit log: the round engine's commits turned into entries.

:class:`AuditTrail` is a commit hook of the :class:`~fedfort.server.RoundEngine`. For every
committed round it appends, in one transaction:

============================  ==============================================================
``round_start``               round, attempt, when it started, the model it started from
``attempt_discarded``         each abandoned attempt: why, who was selected, who dropped
``clients_selected``          the selected clients and those that dropped out
``update_rejected``           every refused update with its reason code (one entry each)
``clients_flagged``           the detector's flagged clients with their anomaly scores
``reputation``                penalised and quarantined clients, the score distribution
``aggregation``               the aggregation rule and what it measured (clipped, trimmed...)
``privacy``                   the DP mechanism, its parameters and the epsilon spent so far
``secure_aggregation``        the protocol, who was included, who dropped at which step
``rollback``                  a drift rollback: from which model to which version, and why
``model_version``             the committed global model: version, SHA-256, metrics
``round_end``                 participants, duration, accuracy and loss
============================  ==============================================================

The run adds ``run_start`` (the full config and its hash, the model spec, the audit key),
``run_resumed``, ``run_end``, and the runtime adds key lifecycle events and the transport
gate's refusals. Entries hold metadata and hashes only, never an update or a data sample.
Every write goes through the one :class:`~fedfort.audit.AuditLog` writer, which advances the
log's signed head (:mod:`fedfort.audit.head`); the trail also records that head in the
checkpoint database, and after each committed round hands it to ``round_head_listeners``
(the per-round print and the alert webhook of ``governance.publish_head``), so copies of it
live outside the run directory.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any

from fedfort import jsonio
from fedfort._version import __version__
from fedfort.audit.head import SignedHead
from fedfort.audit.log import AuditLog
from fedfort.audit.verify import AUDIT_HEAD_META
from fedfort.config import RunConfig
from fedfort.server.checkpoint import CheckpointStore
from fedfort.server.engine import RoundEngine, RoundRecord

__all__ = ["AuditTrail", "config_sha256"]

#: longest rejection detail kept in an entry (details are diagnostics, not payloads)
_DETAIL_CHARS = 240


def config_sha256(config: RunConfig) -> str:
    """SHA-256 of the full configuration (every section, canonical JSON)."""
    text = jsonio.dumps(config.to_dict(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


class AuditTrail:
    """Writes a run's events to its :class:`~fedfort.audit.AuditLog`."""

    def __init__(self, log: AuditLog, store: CheckpointStore | None = None) -> None:
        self.log = log
        self.store = store
        #: called with ``(round, signed head)`` after each committed round's entries
        self.round_head_listeners: list[Callable[[int, SignedHead], None]] = []

    def run_start(
        self, config: RunConfig, *, runtime: str, model_sha256: str, param_spec: Any
    ) -> None:
        """The first entry: what this run is, and the key that signs its log."""
        privacy = config.privacy
        self._write(
            [
                (
                    "run_start",
                    None,
                    {
                        "fedfort_version": __version__,
                        "runtime": runtime,
                        "config_sha256": config_sha256(config),
                        "identity_sha256": config.identity_hash(),
                        "config_identity": config.config_identity(),
                        "config": config.to_dict(),
                        "param_spec_sha256": hashlib.sha256(
                            jsonio.dumps(param_spec, sort_keys=True).encode()
                        ).hexdigest(),
                        "initial_model_sha256": model_sha256,
                        "aggregation_rule": config.defense.aggregator,
                        "detection": config.detection.enabled,
                        "privacy_mode": privacy.mode,
                        "dp_sgd": privacy.dp_sgd.enabled,
                        "secure_aggregation": config.secure_aggregation.mode,
                        "audit_key": self.log.key_id,
                        "audit_public_key": self.log.public_key.hex(),
                    },
                )
            ]
        )

    def event(self, kind: str, body: dict[str, Any], round_: int | None = None) -> None:
        """A runtime event (key lifecycle, a transport refusal, an operator action)."""
        self._write([(kind, round_, body)])

    def events(self, items: list[tuple[str, int | None, dict[str, Any]]]) -> None:
        """Several runtime events ``(kind, round, body)`` in one transaction."""
        if items:
            self._write(items)

    def on_commit(self, engine: RoundEngine, record: RoundRecord) -> None:
        self._write(self.round_entries(record))
        head = self.log.signed_head
        if head is not None:
            for listener in self.round_head_listeners:
                listener(record.round, head)

    def run_end(self, *, rounds: int, model_sha256: str, stopped: str | None) -> None:
        self._write(
            [
                (
                    "run_end",
                    rounds,
                    {"rounds": rounds, "model_sha256": model_sha256, "stopped": stopped},
                )
            ]
        )

    def _write(self, items: list[tuple[str, int | None, dict[str, Any]]]) -> None:
        self.log.append_many(items)
        head = self.log.signed_head
        if self.store is not None and head is not None:
            self.store.set_meta(AUDIT_HEAD_META, jsonio.dumps(head.to_dict(), sort_keys=True))

    @staticmethod
    def round_entries(record: RoundRecord) -> list[tuple[str, int | None, dict[str, Any]]]:
        """The entries of one committed round (see the module docstring)."""
        r, m = record.round, record.measurements
        items: list[tuple[str, int | None, dict[str, Any]]] = [
            (
                "round_start",
                r,
                {"attempt": record.attempt, "started_at": time.time() - record.duration_s},
            )
        ]
        for discarded in record.discarded_attempts:
            items.append(
                (
                    "attempt_discarded",
                    r,
                    {
                        "attempt": discarded["attempt"],
                        "reason": discarded["reason"],
                        "selected": discarded["selected"],
                        "dropped": discarded["dropped"],
                        "rejected": [
                            {"client_id": x["client_id"], "reason": x["reason"]}
                            for x in discarded["rejected"]
                        ],
                    },
                )
            )
        items.append(
            (
                "clients_selected",
                r,
                {
                    "selected": record.selected,
                    "dropped": record.dropped,
                    "participating": record.accepted,
                },
            )
        )
        for rejection in record.rejected:
            items.append(
                (
                    "update_rejected",
                    r,
                    {
                        "client_id": rejection["client_id"],
                        "reason": rejection["reason"],
                        "detail": rejection["detail"][:_DETAIL_CHARS],
                    },
                )
            )
        if "detect" in m:
            detect = m["detect"]
            items.append(
                (
                    "clients_flagged",
                    r,
                    {
                        "action": detect.get("action"),
                        "flagged": detect.get("flagged", []),
                        "scores": detect.get("scores", {}),
                    },
                )
            )
        if "reputation" in m:
            items.append(("reputation", r, dict(m["reputation"])))
        if "aggregate" in m:
            items.append(("aggregation", r, dict(m["aggregate"])))
            if str(m["aggregate"].get("rule", "")).startswith("secure_"):
                agg = m["aggregate"]
                items.append(
                    (
                        "secure_aggregation",
                        r,
                        {
                            "mode": agg["rule"].removeprefix("secure_"),
                            "included": agg.get("included"),
                            "protocol_dropped": agg.get("protocol_dropped", {}),
                        },
                    )
                )
        if "privacy" in m:
            items.append(("privacy", r, dict(m["privacy"])))
        if "rollback" in m:
            items.append(("rollback", r, dict(m["rollback"])))
        items.append(
            (
                "model_version",
                r,
                {
                    "version": r,
                    "sha256": record.model_sha256,
                    "accuracy": record.accuracy,
                    "loss": record.loss,
                },
            )
        )
        items.append(
            (
                "round_end",
                r,
                {
                    "participants": record.participants,
                    "duration_s": record.duration_s,
                    "accuracy": record.accuracy,
                    "loss": record.loss,
                    "epsilon": record.epsilon,
                    "delta": record.delta,
                },
            )
        )
        return items
