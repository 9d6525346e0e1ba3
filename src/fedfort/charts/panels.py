"""The panels of a run's charts, and :func:`training_figure`, the figure of ``training.png``.

Each ``draw_*`` function fills one matplotlib ``Axes`` with the conventions of
:mod:`fedfort.charts.axes`; the compliance report draws each panel as a figure of its own,
``training.png`` puts them side by side. A panel without data is not drawn.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from matplotlib.figure import Figure

from fedfort.charts.axes import (
    count_axis,
    mark_rollbacks,
    plain_ticks,
    round_axis,
    value_axis,
)
from fedfort.charts.rounds import RollbackMark, Series, metric_series, rollback_marks

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["draw_counts", "draw_losses", "draw_privacy", "draw_scores", "training_figure"]

_SCORE_COLORS: Final = ("C0", "C2", "C4", "C5", "C6", "C8", "C9")
_LOSS_COLORS: Final = ("C1", "C3", "C7", "C5", "C6")
#: width and height of one panel of training.png, in inches
_PANEL: Final = (5.0, 4.0)


def _plot_series(ax: Axes, series: Sequence[Series], colors: Sequence[str]) -> None:
    for i, s in enumerate(series):
        ax.plot(
            s.rounds,
            s.values,
            marker="o",
            markersize=3,
            color=colors[i % len(colors)],
            label=s.label,
        )


def _label(ax: Axes, series: Sequence[Series], single: str, several: str) -> None:
    ax.set_ylabel(single if len(series) == 1 else several)
    ax.grid(alpha=0.3)


def draw_scores(ax: Axes, scores: Sequence[Series], marks: Sequence[RollbackMark] = ()) -> None:
    """Accuracy-like metrics per round (on [0, 1] when they all are), with the rollbacks."""
    _plot_series(ax, scores, _SCORE_COLORS)
    round_axis(ax)
    _label(ax, scores, scores[0].label if scores else "score", "score")
    if all(s.unit_interval for s in scores):
        ax.set_ylim(0, 1)
    value_axis(ax, [v for s in scores for v in s.values])
    mark_rollbacks(ax, marks)
    if len(scores) > 1 or marks:
        ax.legend(loc="lower right", fontsize="x-small")


def draw_losses(ax: Axes, losses: Sequence[Series]) -> None:
    """Losses per round, on a logarithmic axis when they span decades."""
    _plot_series(ax, losses, _LOSS_COLORS)
    round_axis(ax)
    values = [v for s in losses for v in s.values]
    value_axis(ax, values, log=True)
    _label(ax, losses, losses[0].label if losses else "loss", "loss")
    if ax.get_yscale() == "log":
        ax.set_ylabel(ax.get_ylabel() + " (log scale)")
    if len(losses) > 1:
        ax.legend(loc="upper right", fontsize="x-small")


def draw_counts(ax: Axes, rounds: Sequence[int], counts: Mapping[str, Sequence[int]]) -> None:
    """Grouped bars of non-negative counts per round (e.g. flagged and rejected updates)."""
    width = 0.8 / max(1, len(counts))
    colors = ("C1", "C3", "C0", "C2")
    for i, (label, values) in enumerate(counts.items()):
        offset = (i - (len(counts) - 1) / 2) * width
        ax.bar(
            [r + offset for r in rounds],
            [max(0, int(v)) for v in values],
            width=width,
            color=colors[i % len(colors)],
            label=label,
        )
    round_axis(ax)
    ax.set_ylabel("updates")
    count_axis(ax, [max(0, int(v)) for values in counts.values() for v in values])
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize="x-small")


def draw_privacy(
    ax: Axes, epsilon: Sequence[float], accuracy: Sequence[float], delta: float
) -> None:
    """Test accuracy against the epsilon spent (a private run with a server test set)."""
    ax.plot(epsilon, accuracy, marker="o", markersize=3, color="C2")
    ax.set_xlabel(f"epsilon spent (delta = {delta:g})")
    ax.set_ylabel("server test accuracy")
    ax.set_ylim(0, 1)
    plain_ticks(ax.xaxis)
    plain_ticks(ax.yaxis)
    ax.grid(alpha=0.3)


def training_figure(
    records: Sequence[Mapping[str, Any]], events: Iterable[Mapping[str, Any]] = ()
) -> Figure:
    """The figure of ``training.png``: the scores with the rollbacks, the losses and, for a
    private run with a server test set, accuracy against epsilon; only panels with data."""
    scores, losses = metric_series(records)
    marks = rollback_marks(records, events)
    private = [
        r
        for r in records
        if isinstance(r.get("epsilon"), int | float) and isinstance(r.get("accuracy"), int | float)
    ]
    panels = int(bool(scores)) + int(bool(losses)) + int(bool(private))
    # a bare Figure renders through Agg when saved: no pyplot, no process-wide backend
    fig = Figure(figsize=(_PANEL[0] * max(1, panels), _PANEL[1]))
    if panels == 0:
        fig.text(0.5, 0.5, "no round has been evaluated yet", ha="center", va="center")
        return fig
    axes = list(fig.subplots(1, panels, squeeze=False)[0])
    if scores:
        draw_scores(axes.pop(0), scores, marks)
    if losses:
        draw_losses(axes.pop(0), losses)
    if private:
        draw_privacy(
            axes.pop(0),
            [float(r["epsilon"]) for r in private],
            [float(r["accuracy"]) for r in private],
            float(private[-1].get("delta") or 0.0),
        )
    fig.suptitle("fedfort: the global model per round")
    fig.tight_layout()
    return fig
