"""The axis conventions of every fedfort chart.

- :func:`plain_ticks`: tick labels are the values themselves: never an offset or a multiplier
  printed beside the axis (``+2.097e3``, ``1e-5``), which readers miss or misread;
- :func:`value_axis`: a logarithmic axis when asked for and the values span a decade or more
  (a loss falling from 2.3 to 0.02), plain ticks otherwise;
- :func:`round_axis`: integer rounds on the x axis;
- :func:`count_axis`: counts start at zero and are integers, so an all-zero chart never shows
  negative ticks;
- :func:`mark_rollbacks`: every rollback as a labelled vertical line (and the refused
  candidate's accuracy as a cross).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Final

import numpy as np
from matplotlib.ticker import LogFormatter, MaxNLocator, ScalarFormatter

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.axis import Axis

    from fedfort.charts.rounds import RollbackMark

__all__ = [
    "DECADE",
    "count_axis",
    "mark_rollbacks",
    "plain_ticks",
    "round_axis",
    "spans_decades",
    "value_axis",
]

#: largest / smallest value from which a logarithmic axis reads better than a linear one
DECADE: Final = 10.0
#: colours of the rollback marks: automatic (the server refused a candidate), operator
_AUTOMATIC: Final = "#b00020"
_OPERATOR: Final = "#6b4e00"


class _PlainLogFormatter(LogFormatter):
    """Log-axis tick labels as plain numbers (``0.01``, ``0.5``, ``1000``), not ``1e-02``."""

    def _num_to_string(self, x: float, vmin: float, vmax: float) -> str:
        return f"{x:.6g}"


def plain_ticks(axis: Axis) -> None:
    """Label ``axis``'s ticks with plain numbers: no offset, no scientific multiplier."""
    formatter = ScalarFormatter(useOffset=False)
    formatter.set_scientific(False)
    axis.set_major_formatter(formatter)


def spans_decades(values: Iterable[float]) -> bool:
    """Whether the finite ``values`` are all positive and the largest is >= 10x the smallest."""
    array = np.asarray(list(values), dtype=np.float64)
    array = array[np.isfinite(array)]
    if array.size == 0 or bool(np.any(array <= 0)):
        return False
    return bool(array.max() >= DECADE * array.min())


def value_axis(ax: Axes, values: Iterable[float], *, log: bool = False) -> None:
    """The y axis of ``values``: logarithmic when ``log`` and they span decades, else plain."""
    if log and spans_decades(values):
        ax.set_yscale("log")
        # plain numbers at the decades and between them (0.02, 0.1, 0.5, 1, 2)
        ax.yaxis.set_major_formatter(_PlainLogFormatter(labelOnlyBase=False))
        ax.yaxis.set_minor_formatter(
            _PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(2, 1))
        )
    else:
        plain_ticks(ax.yaxis)


def round_axis(ax: Axes) -> None:
    """The x axis of rounds: integer ticks, plain labels."""
    ax.set_xlabel("round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    plain_ticks(ax.xaxis)


def count_axis(ax: Axes, counts: Sequence[int]) -> None:
    """The y axis of counts: from zero to a little above the largest, integer ticks."""
    top = max([1, *counts])
    ax.set_ylim(0, top * 1.15)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    plain_ticks(ax.yaxis)


def mark_rollbacks(ax: Axes, marks: Sequence[RollbackMark]) -> None:
    """Draw each rollback as a dashed vertical line labelled along it, and the accuracy of a
    candidate the server refused as a cross; one legend entry per kind."""
    seen: set[str] = set()
    for mark in marks:
        color = _AUTOMATIC if mark.automatic else _OPERATOR
        kind = "automatic rollback" if mark.automatic else "operator rollback"
        ax.axvline(
            mark.x,
            color=color,
            linestyle="--",
            linewidth=1.2,
            label=None if kind in seen else kind,
            gid="rollback",
        )
        seen.add(kind)
        ax.text(
            mark.x,
            0.98,
            f" {mark.label} ",
            transform=ax.get_xaxis_transform(),
            rotation=90,
            ha="right",
            va="top",
            fontsize="small",
            color=color,
            bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.7, "pad": 1},
        )
        if mark.refused is not None:
            label = "refused candidate"
            ax.plot(
                [mark.x],
                [mark.refused],
                marker="x",
                markersize=7,
                linestyle="none",
                color=color,
                label=None if label in seen else label,
            )
            seen.add(label)
