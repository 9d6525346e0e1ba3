"""The plots of the compliance report, as matplotlib figures inlined as PNG data URIs.

:func:`plots_section` renders the ones a run has data for: accuracy and loss per round,
epsilon spent against the budget (private runs), the reputation distribution (when reputation
is on) and detections per round.
"""

from __future__ import annotations

from typing import Any, Final

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from fedfort.measurements import MeasurementSet, PrivacyMeasurement
from fedfort.report.figures import data_uri, figure, png_bytes
from fedfort.report.markup import number

__all__ = ["plots_section"]

#: PNG resolution: readable on screen and in print, small enough to keep the file light
_DPI: Final = 90
_FIGSIZE: Final = (6.4, 3.0)


def _figure(title: str, caption: str, fig: Figure) -> str:
    return figure(data_uri(png_bytes(fig, _DPI)), title, caption)


def _line_plot(
    rows: list[dict[str, Any]], key: str, label: str, color: str, unit_interval: bool
) -> Figure | None:
    points = [(r["round"], x) for r in rows if (x := number(r.get(key))) is not None]
    if not points:
        return None
    fig = Figure(figsize=_FIGSIZE)
    ax = fig.subplots()
    ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3, color=color)
    ax.set_xlabel("round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(label)
    if unit_interval:
        ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.set_title(f"{label} per round")
    return fig


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
    ax.set_xlabel("round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("epsilon")
    ax.set_ylim(bottom=0)
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
    ax.set_xlabel("round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("reputation")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize="small")
    ax.set_title("client reputation per round")
    return fig


def _detection_plot(rows: list[dict[str, Any]]) -> Figure | None:
    if not rows:
        return None
    fig = Figure(figsize=_FIGSIZE)
    ax = fig.subplots()
    x = [float(r["round"]) for r in rows]
    width = 0.4
    ax.bar(
        [v - width / 2 for v in x],
        [int(r.get("flagged") or 0) for r in rows],
        width=width,
        color="C1",
        label="flagged",
    )
    ax.bar(
        [v + width / 2 for v in x],
        [int(r.get("rejected") or 0) for r in rows],
        width=width,
        color="C3",
        label="rejected",
    )
    ax.set_xlabel("round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("updates")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize="small")
    ax.set_title("detections per round")
    return fig


def plots_section(state: dict[str, Any], records: list[dict[str, Any]]) -> str:
    rows: list[dict[str, Any]] = state.get("rounds", [])
    if not rows:
        return "<p>No committed round yet.</p>"
    privacy = state.get("privacy")
    target = None if privacy is None else number(privacy.get("target_epsilon"))
    figures = [
        (
            "accuracy per round",
            "Test accuracy of the global model on the server's held-out set.",
            _line_plot(rows, "accuracy", "test accuracy", "C0", unit_interval=True),
        ),
        (
            "loss per round",
            "Test loss of the global model.",
            _line_plot(rows, "loss", "test loss", "C1", unit_interval=False),
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
