"""Run outputs: ``results.json`` and a PNG of accuracy and loss per round."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from fedfort import jsonio
from fedfort.run.result import RunResult

__all__ = ["PLOT_FILE", "RESULTS_FILE", "plot_history", "write_results"]

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
    plot_history(result.records, out / PLOT_FILE)
    return path


def plot_history(records: list[dict[str, Any]], path: str | Path) -> None:
    """Plot test accuracy and loss per round (rounds without evaluation are skipped) and, for
    a private run, accuracy against the epsilon spent."""
    evaluated = [r for r in records if r.get("accuracy") is not None]
    private = [r for r in evaluated if r.get("epsilon") is not None]
    panels = 3 if private else 2
    # a bare Figure renders through Agg when saved: no pyplot, no process-wide backend
    fig = Figure(figsize=(5 * panels, 4))
    axes = fig.subplots(1, panels)
    ax_acc, ax_loss = axes[0], axes[1]
    rounds = [r["round"] for r in evaluated]
    ax_acc.plot(rounds, [r["accuracy"] for r in evaluated], marker="o", markersize=3)
    ax_acc.set_xlabel("round")
    ax_acc.set_ylabel("test accuracy")
    ax_acc.set_ylim(0, 1)
    ax_acc.grid(alpha=0.3)
    ax_loss.plot(rounds, [r["loss"] for r in evaluated], marker="o", markersize=3, color="C1")
    ax_loss.set_xlabel("round")
    ax_loss.set_ylabel("test loss")
    ax_loss.grid(alpha=0.3)
    if private:
        ax_eps = axes[2]
        ax_eps.plot(
            [r["epsilon"] for r in private],
            [r["accuracy"] for r in private],
            marker="o",
            markersize=3,
            color="C2",
        )
        ax_eps.set_xlabel(f"epsilon spent (delta = {private[-1]['delta']:g})")
        ax_eps.set_ylabel("test accuracy")
        ax_eps.set_ylim(0, 1)
        ax_eps.grid(alpha=0.3)
    fig.suptitle("fedfort: global model on the server's held-out test set")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
