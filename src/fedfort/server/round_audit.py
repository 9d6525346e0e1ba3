"""The audit entries of one committed round, built from its :class:`RoundRecord`.

The audit trail (:class:`fedfort.audit.AuditTrail`, a commit hook) writes what
:meth:`RoundRecord.audit_entries` returns, in one transaction:

============================  ==============================================================
``round_start``               round, attempt, when it started
``attempt_discarded``         each abandoned attempt: why, who was selected, who dropped
``clients_selected``          the selected clients, those that dropped out, the participants
``update_rejected``           every refused update with its reason code (one entry each)
(published measurements)      what each measurement type supplies
                              (:meth:`fedfort.measurements.Measurement.audit_entries`), in the
                              order the types were registered: ``clients_flagged``,
                              ``reputation``, ``aggregation`` and ``secure_aggregation``,
                              ``privacy``, ``rollback``, ``federated_evaluation``, then those
                              of a user's own types
``model_version``             the committed global model: version, SHA-256, metrics
``round_end``                 participants, duration, accuracy and loss, epsilon and delta,
                              the clients' overall federated evaluation (when it ran)
============================  ==============================================================

Entries hold metadata and hashes only, never an update or a data sample. The same entries are
rebuilt from a signed checkpoint's record when a run is recovered
(:func:`fedfort.run.resume.check_audit_log`), so they depend on the record alone.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fedfort.server.engine import RoundRecord

__all__ = ["DETAIL_CHARS", "round_entries"]

#: longest rejection detail kept in an entry (details are diagnostics, not payloads)
DETAIL_CHARS = 240


def round_entries(record: RoundRecord) -> list[tuple[str, int | None, dict[str, Any]]]:
    """The entries ``(kind, round, body)`` of one committed round (see the module docstring)."""
    r = record.round
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
                    "detail": rejection["detail"][:DETAIL_CHARS],
                },
            )
        )
    for measurement in record.published:
        items.extend((kind, r, body) for kind, body in measurement.audit_entries())
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
                # the clients' overall evaluation, in rounds that had one
                **(
                    {"federated": record.evaluation.get("overall", {})} if record.evaluation else {}
                ),
            },
        )
    )
    return items
