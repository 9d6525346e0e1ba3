"""Run outputs: ``results.json`` and ``training.png``, the run's metrics per round.

A run with an ``out_dir`` writes both when :meth:`fedfort.run.federation.Federation.run`
returns (or stops on an exhausted privacy budget), from the Python API and the CLI alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from fedfort import jsonio
from fedfort.audit import AUDIT_FILE, read_entries
from fedfort.charts.panels import training_figure
from fedfort.errors import AuditError
from fedfort.run.result import RunResult

__all__ = ["PLOT_FILE", "RESULTS_FILE", "plot_history", "rollback_events", "write_results"]

RESULTS_FILE = "results.json"
PLOT_FILE = "training.png"


def write_results(result: RunResult, out_dir: str | Path) -> Path:
    """Write ``results.json`` (config echo, per-round records, final, what verification
    rejected and capped, the clients' last federated evaluation) and the plot. The file is
    strict JSON: a non-finite measurement (the test loss of a diverged model) is written as
    ``null`` (see :mod:`fedfort.jsonio`)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    body: dict[str, Any] = {
        "config": result.config.to_dict(),
        "rounds": result.records,
        "final": result.final,
        "verification": result.verification,
    }
    if result.security is not None:
        body["security"] = result.security
    if result.privacy is not None:
        body["privacy"] = result.privacy
    if result.secure_aggregation is not None:
        body["secure_aggregation"] = result.secure_aggregation
    if result.federated is not None:
        body["federated_evaluation"] = result.federated
    path = out / RESULTS_FILE
    path.write_text(
        jsonio.dumps(body, indent=2, sort_keys=False, non_finite="null"), encoding="utf-8"
    )
    plot_history(result.records, out / PLOT_FILE, rollback_events(out))
    return path


def rollback_events(run_dir: str | Path) -> list[dict[str, Any]]:
    """The ``rollback`` entries of the audit log in ``run_dir`` as ``{"kind", "round", "body"}``
    (none when the run keeps no audit log or it cannot be read; ``fedfort audit verify`` is
    what judges the log)."""
    path = Path(run_dir) / AUDIT_FILE
    if not path.exists():
        return []
    try:
        return [
            {"kind": e.kind, "round": e.round, "body": e.data}
            for e in read_entries(path)
            if e.kind == "rollback"
        ]
    except (AuditError, ValueError):
        return []


def plot_history(
    records: list[dict[str, Any]],
    path: str | Path,
    events: Iterable[Mapping[str, Any]] = (),
) -> None:
    """Plot the run's metrics per round (see :func:`fedfort.charts.panels.training_figure`):
    server test accuracy and the federated evaluation's overall metrics with the rollbacks
    (automatic ones from ``records``, operator ones from the audit ``events``), the losses and,
    for a private run, accuracy against the epsilon spent. Rounds without a metric are skipped."""
    training_figure(records, events).savefig(path, dpi=100, metadata={"Software": None})
