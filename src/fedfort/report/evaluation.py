"""The report's table of the clients' federated evaluation (their last evaluated round).

One row per client that reported (its example count and metric values), the example-weighted
overall row, and the reports the server dropped with their reasons. Client ids and reasons may
be chosen by a client; they are escaped like every cell (:func:`~fedfort.report.markup.table`).
"""

from __future__ import annotations

from typing import Any

from fedfort.report.markup import esc, f4, table

__all__ = ["federated_section"]


def federated_section(records: list[dict[str, Any]]) -> str | None:
    """The section's HTML, or ``None`` when the clients never evaluated."""
    evaluated = [r for r in records if r.get("evaluation")]
    if not evaluated:
        return None
    last = evaluated[-1]
    ev: dict[str, Any] = last["evaluation"]
    overall: dict[str, Any] = ev.get("overall", {})
    clients: dict[str, dict[str, Any]] = ev.get("clients", {})
    metrics = list(overall) or sorted({k for c in clients.values() for k in c} - {"examples"})
    rows: list[list[Any]] = [
        [cid, values.get("examples"), *(f4(values.get(m)) for m in metrics)]
        for cid, values in sorted(clients.items())
    ]
    total = sum(int(v.get("examples") or 0) for v in clients.values())
    rows.append(["overall (example-weighted)", total, *(f4(overall.get(m)) for m in metrics)])
    numeric = tuple(range(1, len(metrics) + 2))
    html = (
        f"<p>Round {esc(last.get('round'))}: each client scored the global model on its own "
        "hold-out and reported only these values and its example count.</p>"
        + table(["client", "examples", *metrics], rows, numeric=numeric)
    )
    rejected: dict[str, str] = ev.get("rejected", {})
    if rejected:
        html += "<p>Reports dropped by the server:</p>" + table(
            ["client", "reason"], sorted(rejected.items())
        )
    missing = ev.get("missing") or []
    if missing:
        html += f"<p class='muted'>No answer from {esc(', '.join(map(str, missing)))}.</p>"
    return html
