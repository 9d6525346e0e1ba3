"""The heatmaps of a red-team report: one PNG per metric, attacks by defences.

:func:`write_heatmaps` draws clean accuracy, the accuracy drop against the no-attack FedAvg run
and, when the matrix has backdoor attacks, their attack success rate, each annotated cell by
cell and coloured on a fixed scale so that reports stay comparable. :class:`Matrix` is the
summary's rows indexed by (attack, defence), shared with the report's tables
(:mod:`fedfort.redteam.report`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import matplotlib
import numpy as np
from matplotlib.artist import setp
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from fedfort.report.markup import DASH

__all__ = [
    "HEATMAP_ACCURACY_FILE",
    "HEATMAP_ASR_FILE",
    "HEATMAP_DROP_FILE",
    "Matrix",
    "backdoor_attacks",
    "fixed",
    "matrix_of",
    "write_heatmaps",
]

HEATMAP_ACCURACY_FILE: Final = "heatmap_accuracy.png"
HEATMAP_DROP_FILE: Final = "heatmap_accuracy_drop.png"
HEATMAP_ASR_FILE: Final = "heatmap_backdoor_asr.png"

# Drop (in points) shown full red. A fixed scale keeps one collapsed run (an 80-point drop)
# from washing a serious 10-point drop out to green, and keeps reports comparable.
_DROP_SCALE_POINTS: Final = 20.0

Row = dict[str, Any]


@dataclass(frozen=True)
class Matrix:
    """Rows and columns of a heatmap/table and the summary rows indexed by (attack, defence)."""

    attacks: list[str]
    defenses: list[str]
    index: dict[tuple[str, str], Row]

    def values(self, key: str, scale: float = 1.0) -> list[list[float | None]]:
        out: list[list[float | None]] = []
        for attack in self.attacks:
            line: list[float | None] = []
            for defense in self.defenses:
                row = self.index.get((attack, defense))
                value = None if row is None else row.get(key)
                line.append(None if value is None else float(value) * scale)
            out.append(line)
        return out

    def restricted(self, attacks: list[str]) -> Matrix:
        return Matrix(attacks=attacks, defenses=self.defenses, index=self.index)


def matrix_of(summary: dict[str, Any]) -> Matrix:
    """The attacks and defences of ``summary`` that have rows, in the summary's order."""
    rows: list[Row] = summary["rows"]
    index = {(r["attack"], r["defense"]): r for r in rows}
    attacks = [a for a in summary["attacks"] if any(r["attack"] == a for r in rows)]
    defenses = [d for d in summary["defenses"] if any(r["defense"] == d for r in rows)]
    return Matrix(attacks=attacks, defenses=defenses, index=index)


def backdoor_attacks(matrix: Matrix) -> list[str]:
    """Attacks with a backdoor ASR in at least one row."""
    values = matrix.values("backdoor_asr_mean")
    return [
        attack
        for attack, line in zip(matrix.attacks, values, strict=True)
        if any(value is not None for value in line)
    ]


def fixed(value: float | None, digits: int = 3) -> str:
    """``value`` with ``digits`` decimals (a dash for ``None``, never ``-0.000``)."""
    if value is None:
        return DASH
    text = f"{value:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0.000"


def write_heatmaps(matrix: Matrix, out: Path) -> dict[str, Path]:
    """Draw the heatmaps of ``matrix`` into ``out``; return their paths (none when empty)."""
    if not matrix.attacks or not matrix.defenses:
        return {}
    written: dict[str, Path] = {}
    path = out / HEATMAP_ACCURACY_FILE
    _plot_heatmap(
        matrix.values("accuracy_mean"),
        matrix,
        path,
        title="Clean test accuracy (mean over seeds)",
        colorbar="accuracy",
        cmap="RdYlGn",
        norm=Normalize(vmin=0.0, vmax=1.0),
        digits=2,
    )
    written["heatmap_accuracy"] = path

    path = out / HEATMAP_DROP_FILE
    _plot_heatmap(
        matrix.values("drop_vs_fedavg_mean", scale=100.0),
        matrix,
        path,
        title="Accuracy drop vs the no-attack FedAvg run (points)",
        colorbar="drop (percentage points)",
        cmap="RdYlGn_r",
        norm=Normalize(vmin=0.0, vmax=_DROP_SCALE_POINTS),
        digits=1,
    )
    written["heatmap_accuracy_drop"] = path

    backdoors = backdoor_attacks(matrix)
    if backdoors:
        sub = matrix.restricted(backdoors)
        path = out / HEATMAP_ASR_FILE
        _plot_heatmap(
            sub.values("backdoor_asr_mean"),
            sub,
            path,
            title="Backdoor attack success rate (mean over seeds)",
            colorbar="attack success rate",
            cmap="RdYlGn_r",
            norm=Normalize(vmin=0.0, vmax=1.0),
            digits=2,
        )
        written["heatmap_backdoor_asr"] = path
    return written


def _figsize(matrix: Matrix) -> tuple[float, float]:
    """Grow with the matrix so that labels and annotations stay readable."""
    longest_defense = max(len(d) for d in matrix.defenses)
    longest_attack = max(len(a) for a in matrix.attacks)
    width = 3.0 + 0.08 * longest_attack + 1.1 * len(matrix.defenses)
    height = 2.0 + 0.06 * longest_defense + 0.55 * len(matrix.attacks)
    return max(width, 5.0), max(height, 3.0)


def _text_colour(rgba: tuple[float, float, float, float]) -> str:
    red, green, blue, _ = rgba
    luminance = 0.299 * red + 0.587 * green + 0.114 * blue
    return "white" if luminance < 0.45 else "black"


def _plot_heatmap(
    values: list[list[float | None]],
    matrix: Matrix,
    path: Path,
    *,
    title: str,
    colorbar: str,
    cmap: str,
    norm: Normalize,
    digits: int,
) -> None:
    data = np.array([[np.nan if v is None else v for v in line] for line in values], dtype=float)
    colormap = matplotlib.colormaps[cmap].with_extremes(bad="#e0e0e0")
    # a bare Figure renders through Agg when saved: no pyplot, no process-wide backend
    fig = Figure(figsize=_figsize(matrix))
    ax = fig.subplots()
    image = ax.imshow(np.ma.masked_invalid(data), cmap=colormap, norm=norm, aspect="auto")
    ax.set_xticks(range(len(matrix.defenses)), labels=matrix.defenses)
    ax.set_yticks(range(len(matrix.attacks)), labels=matrix.attacks)
    for label in ax.get_xticklabels():
        setp(label, rotation=35, ha="right", rotation_mode="anchor")
    ax.set_xlabel("defence")
    ax.set_ylabel("attack")
    _annotate(ax, data, colormap, norm, digits)
    fig.colorbar(image, ax=ax, label=colorbar, extend=_extend(data, norm))
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _extend(data: Any, norm: Normalize) -> str:
    """Colour-bar arrows for values outside the colour scale (they are clipped)."""
    finite = data[np.isfinite(data)]
    low = bool(finite.size and finite.min() < norm.vmin)
    high = bool(finite.size and finite.max() > norm.vmax)
    if low and high:
        return "both"
    return "min" if low else "max" if high else "neither"


def _annotate(ax: Any, data: Any, colormap: Any, norm: Normalize, digits: int) -> None:
    rows, cols = data.shape
    for i in range(rows):
        for j in range(cols):
            value = float(data[i, j])
            if np.isnan(value):
                ax.text(j, i, DASH, ha="center", va="center", color="#555555")
                continue
            colour = _text_colour(colormap(norm(value)))
            ax.text(j, i, fixed(value, digits), ha="center", va="center", color=colour, fontsize=9)
