"""Round measurement of the clients' data-protection counts (``edge_*`` update metrics).

A client that runs the ``[edge]`` pipeline (:mod:`fedfort.edge`) attaches counts to its update:
rows in and out, rows dropped for missing or invalid values, values imputed, fields dropped,
generalised and pseudonymised, duplicates, outliers and label issues flagged. This stage
copies them, per client and summed, into the round record under ``edge``. They are counts
only; no value or field name is ever part of an update. Updates that carry no metrics
(private or securely aggregated ones) contribute nothing.
"""

from __future__ import annotations

from fedfort.measurements import DataProtectionMeasurement
from fedfort.server.engine import RoundContext, Stage

__all__ = ["ReportDataProtection"]

_PREFIX = "edge_"


class ReportDataProtection(Stage):
    """Record the accepted clients' ``edge_*`` counts (insert after ``verify``)."""

    name = "edge"

    def run(self, ctx: RoundContext) -> None:
        per_client: dict[str, dict[str, int]] = {}
        for update in ctx.accepted:
            counts = {
                key[len(_PREFIX) :]: int(value)
                for key, value in update.metrics.items()
                if key.startswith(_PREFIX)
            }
            if counts:
                per_client[update.client_id] = counts
        if not per_client:
            return
        totals: dict[str, int] = {}
        for counts in per_client.values():
            for key, value in counts.items():
                totals[key] = totals.get(key, 0) + value
        ctx.measure(DataProtectionMeasurement(clients=per_client, totals=totals))
