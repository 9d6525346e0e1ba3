"""The plots of the compliance report, as matplotlib figures inlined as PNG data URIs.

:func:`plots_section` renders the ones a run has data for, drawn with the conventions of
:mod:`fedfort.charts` (plain tick labels, a log loss axis when losses span decades, counts from
zero): the scores per round (server test accuracy and the federated evaluation's overall
metrics) with every rollback marked, the losses, epsilon spent against the budget (private
runs), the reputation distribution (when reputation is on) and the updates flagged or rejected
per round (only when some were).
"""

from __future__ import annotations

from typing import Any, Final

from matplotlib.figure import Figure

from fedfort.charts.axes import plain_ticks, round_axis, spans_decades
from fedfort.charts.panels import draw_counts, draw_losses, draw_scores
from fedfort.charts.rounds import Series, metric_series, rollback_marks
from fedfort.measurements import MeasurementSet, PrivacyMeasurement
from fedfort.report.figures import data_uri, figure, png_bytes
from fedfort.report.markup import number

__all__ = ["plots_section"]

#: PNG resolution: readable on screen and in print, small enough to keep the file light
_DPI: Final = 90
_FIGSIZE: Final = (6.4, 3.0)


def _figure(title: str, caption: str, fig: Figure) -> str:
    return figure(data_uri(png_bytes(fig, _DPI)), title, caption)


def _scores_plot(
    scores: list[Series], state: dict[str, Any], records: list[dict[str, Any]]
) -> Figure:
    fig = Figure(figsize=_FIGSIZE)
    ax = fig.subplots()
    draw_scores(ax, scores, rollback_marks(records, state.get("events", [])))
    ax.set_title("accuracy per round" if len(scores) == 1 else "metrics per round")
    return fig


def _losses_plot(losses: list[Series]) -> Figure:
    fig = Figure(figsize=_FIGSIZE)
    ax = fig.subplots()
    draw_losses(ax, losses)
    ax.set_title("loss per round")
    return fig


def _scores_caption(scores: list[Series]) -> str:
    federated = any(s.label.startswith("federated") for s in scores)
    server = any(s.label.startswith("server") for s in scores)
    parts = []
    if server:
        parts.append("Test accuracy of the global model on the server's held-out set")
    if federated:
        parts.append("overall metrics of the federated evaluation on the clients' own data")
    text = "; ".join(parts)
    return (
        text[0].upper()
        + text[1:]
        + ". A dashed line marks each rollback: automatic (the candidate, a cross, was refused"
        " and an earlier version committed) or by an operator (between two rounds)."
    )


def _losses_caption(losses: list[Series]) -> str:
    where = ", ".join(
        "on the server's held-out set" if s.label.startswith("server") else "federated"
        for s in losses
    )
    log = spans_decades(v for s in losses for v in s.values)
    return f"Loss of the global model ({where})" + (
        "; logarithmic axis: the losses span decades." if log else "."
    )


def _epsilon_plot(
    rows: list[dict[str, Any]], records: list[dict[str, Any]], target: float | None
) -> Figure | None:
    points = [(r["round"], x) for r in rows if (x := number(r.get("epsilon"))) is not None]
    measured = [(r["round"], MeasurementSet.of_record(r).get(PrivacyMeasurement)) for r in records]
    client = [
        (round_, x)
        for round_, m in measured
        if m is not None and (x := number(m.dp_sgd_epsilon_max)) is not None
    ]
    if not points and not client:
        return None
    fig = Figure(figsize=_FIGSIZE)
    ax = fig.subplots()
    if points:
        ax.plot(
            [p[0] for p in points],
            [p[1] for p in points],
            marker="o",
            markersize=3,
            color="C2",
            label="epsilon spent (user level)",
        )
    if client:
        ax.plot(
            [p[0] for p in client],
            [p[1] for p in client],
            marker="s",
            markersize=3,
            color="C4",
            label="DP-SGD: largest client epsilon",
        )
    if target is not None:
        ax.axhline(target, color="#b00020", linestyle="--", label=f"budget {target:g}")
    round_axis(ax)
    ax.set_ylabel("epsilon")
    ax.set_ylim(bottom=0)
    plain_ticks(ax.yaxis)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    ax.set_title("privacy spent per round")
    return fig


def _reputation_plot(rows: list[dict[str, Any]]) -> Figure | None:
    keys = ("min", "p10", "median", "p90", "max")
    rep = [
        (r["round"], r["reputation"])
        for r in rows
        if isinstance(r.get("reputation"), dict)
        and all(number(r["reputation"].get(k)) is not None for k in keys)
    ]
    if not rep:
        return None
    fig = Figure(figsize=_FIGSIZE)
    ax = fig.subplots()
    x = [p[0] for p in rep]
    series = {k: [float(p[1][k]) for p in rep] for k in keys}
    ax.fill_between(x, series["p10"], series["p90"], color="C0", alpha=0.2, label="p10-p90")
    ax.plot(x, series["median"], color="C0", marker="o", markersize=3, label="median")
    ax.plot(x, series["min"], color="C3", linestyle=":", label="min")
    ax.plot(x, series["max"], color="C2", linestyle=":", label="max")
    round_axis(ax)
    ax.set_ylabel("reputation")
    ax.set_ylim(0, 1)
    plain_ticks(ax.yaxis)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize="small")
    ax.set_title("client reputation per round")
    return fig


def _detection_plot(rows: list[dict[str, Any]]) -> Figure | None:
    """Flagged and rejected updates per round; ``None`` when no update ever was either."""
    counts = {
        label: [max(0, int(number(r.get(key)) or 0)) for r in rows]
        for label, key in (("flagged", "flagged"), ("rejected", "rejected"))
    }
    if not any(v for values in counts.values() for v in values):
        return None
    fig = Figure(figsize=_FIGSIZE)
    ax = fig.subplots()
    draw_counts(ax, [int(r["round"]) for r in rows], counts)
    ax.set_title("detections per round")
    return fig


def plots_section(state: dict[str, Any], records: list[dict[str, Any]]) -> str:
    rows: list[dict[str, Any]] = state.get("rounds", [])
    if not rows:
        return "<p>No committed round yet.</p>"
    privacy = state.get("privacy")
    target = None if privacy is None else number(privacy.get("target_epsilon"))
    scores, losses = metric_series(records)
    figures: list[tuple[str, str, Figure | None]] = [
        (
            "accuracy per round",
            _scores_caption(scores) if scores else "",
            _scores_plot(scores, state, records) if scores else None,
        ),
        (
            "loss per round",
            _losses_caption(losses),
            _losses_plot(losses) if losses else None,
        ),
    ]
    if privacy is not None:
        figures.append(
            (
                "epsilon spent per round",
                "Epsilon spent so far after each round; the dashed line is the budget.",
                _epsilon_plot(rows, records, target),
            )
        )
    figures += [
        (
            "reputation per round",
            "Distribution of client reputation after each round.",
            _reputation_plot(rows),
        ),
        (
            "detections per round",
            "Updates flagged by anomaly detection and updates rejected by verification.",
            _detection_plot(rows),
        ),
    ]
    parts = [_figure(title, caption, fig) for title, caption, fig in figures if fig is not None]
    return "".join(parts) if parts else "<p>Nothing to plot.</p>"
