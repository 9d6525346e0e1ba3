"""Render a red-team summary as heatmaps, a Markdown report and a self-contained HTML page.

The report answers "which attacks does which defence survive?" for one ``fedfort redteam``
matrix. It takes the dict built by :func:`fedfort.redteam.summary.summarize` and shows:

* the run metadata (dataset, rounds, seeds, wall time, ... as given by the caller) and the
  survival criteria;
* a verdict per attack: accuracy without a defence, the best defence with its accuracy and
  backdoor attack success rate (ASR), whether it survives, and the defences the attack hurts;
* clean accuracy (mean ± std over seeds) per attack x defence, also as a heatmap;
* the accuracy drop against the no-attack FedAvg run in percentage points, also as a heatmap;
* the backdoor ASR per backdoor attack x defence (only when the matrix has backdoor attacks);
* detection and quarantine figures for the runs that had detection or reputation enabled.

Markdown and HTML are rendered from the same list of sections, so they carry the same
content; both link the PNG heatmaps by relative path and must stay next to them.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import matplotlib
import numpy as np
from matplotlib.artist import setp
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

__all__ = [
    "HEATMAP_ACCURACY_FILE",
    "HEATMAP_ASR_FILE",
    "HEATMAP_DROP_FILE",
    "HTML_FILE",
    "MARKDOWN_FILE",
    "write_report",
]

MARKDOWN_FILE: Final = "report.md"
HTML_FILE: Final = "report.html"
HEATMAP_ACCURACY_FILE: Final = "heatmap_accuracy.png"
HEATMAP_DROP_FILE: Final = "heatmap_accuracy_drop.png"
HEATMAP_ASR_FILE: Final = "heatmap_backdoor_asr.png"

DASH: Final = "—"
_UNDEFENDED: Final = "fedavg"

# Drop (in points) shown full red. A fixed scale keeps one collapsed run (an 80-point drop)
# from washing a serious 10-point drop out to green, and keeps reports comparable.
_DROP_SCALE_POINTS: Final = 20.0

_CSS: Final = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto;
       max-width: 72rem; padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #ddd; padding-bottom: .3rem; }
h2 { margin-top: 2rem; }
table { border-collapse: collapse; margin: .8rem 0; font-size: .92rem; }
th, td { border: 1px solid #ccc; padding: .3rem .6rem; text-align: left; }
th { background: #f2f2f2; }
tbody tr:nth-child(even) { background: #fafafa; }
img { max-width: 100%; height: auto; }
figure { margin: .8rem 0; }
"""

Row = dict[str, Any]


@dataclass(frozen=True)
class _Table:
    headers: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class _Image:
    alt: str
    file: str


@dataclass(frozen=True)
class _Section:
    title: str
    paragraphs: list[str] = field(default_factory=list)
    bullets: list[str] = field(default_factory=list)
    table: _Table | None = None
    image: _Image | None = None


@dataclass(frozen=True)
class _Matrix:
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

    def restricted(self, attacks: list[str]) -> _Matrix:
        return _Matrix(attacks=attacks, defenses=self.defenses, index=self.index)


def write_report(
    summary: dict[str, Any],
    cells: list[dict[str, Any]],
    out_dir: str | Path,
    *,
    title: str = "fedfort red-team report",
    meta: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """Write the heatmaps, ``report.md`` and ``report.html`` into ``out_dir`` (created).

    ``summary`` is the output of :func:`fedfort.redteam.summary.summarize`; ``cells`` the
    runs it was built from (used for the run count and summed training time); ``meta`` extra
    ``key: value`` lines for the run section (e.g. dataset, rounds, seeds, wall time).

    Returns the path of every file written, keyed ``"markdown"``, ``"html"``,
    ``"heatmap_accuracy"``, ``"heatmap_accuracy_drop"`` and, when the matrix has backdoor
    attacks, ``"heatmap_backdoor_asr"``. Heatmaps are skipped for an empty matrix.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    matrix = _matrix(summary)
    written = _write_heatmaps(matrix, out)
    images = {path.name for path in written.values()}
    sections = _sections(summary, cells, meta or {}, matrix, images)
    markdown_path = out / MARKDOWN_FILE
    markdown_path.write_text(_render_markdown(title, sections), encoding="utf-8")
    html_path = out / HTML_FILE
    html_path.write_text(_render_html(title, sections), encoding="utf-8")
    return {"markdown": markdown_path, "html": html_path, **written}


# --------------------------------------------------------------------------- data access


def _matrix(summary: dict[str, Any]) -> _Matrix:
    rows: list[Row] = summary["rows"]
    index = {(r["attack"], r["defense"]): r for r in rows}
    attacks = [a for a in summary["attacks"] if any(r["attack"] == a for r in rows)]
    defenses = [d for d in summary["defenses"] if any(r["defense"] == d for r in rows)]
    return _Matrix(attacks=attacks, defenses=defenses, index=index)


def _backdoor_attacks(matrix: _Matrix) -> list[str]:
    """Attacks with a backdoor ASR in at least one row."""
    values = matrix.values("backdoor_asr_mean")
    return [
        attack
        for attack, line in zip(matrix.attacks, values, strict=True)
        if any(value is not None for value in line)
    ]


# --------------------------------------------------------------------------- formatting


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return DASH
    text = f"{value:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0.000"


def _fmt_mean_std(row: Row | None, metric: str) -> str:
    if row is None or row[f"{metric}_mean"] is None:
        return DASH
    mean = _fmt(row[f"{metric}_mean"])
    std = row[f"{metric}_std"]
    return mean if std is None else f"{mean} ± {std:.3f}"


def _fmt_points(value: float | None) -> str:
    return _fmt(None if value is None else value * 100, digits=1)


def _fmt_int(value: int | None) -> str:
    return DASH if value is None else str(value)


def _fmt_list(labels: Sequence[str]) -> str:
    return ", ".join(labels) if labels else DASH


# --------------------------------------------------------------------------- heatmaps


def _write_heatmaps(matrix: _Matrix, out: Path) -> dict[str, Path]:
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

    backdoors = _backdoor_attacks(matrix)
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


def _figsize(matrix: _Matrix) -> tuple[float, float]:
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
    matrix: _Matrix,
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
            ax.text(j, i, _fmt(value, digits), ha="center", va="center", color=colour, fontsize=9)


# --------------------------------------------------------------------------- sections


def _sections(
    summary: dict[str, Any],
    cells: Sequence[dict[str, Any]],
    meta: dict[str, Any],
    matrix: _Matrix,
    images: set[str],
) -> list[_Section]:
    def image(alt: str, file: str) -> _Image | None:
        return _Image(alt, file) if file in images else None

    sections = [
        _run_section(summary, cells, meta),
        _verdict_section(summary, matrix),
        _Section(
            title="Clean accuracy (mean ± std over seeds)",
            paragraphs=["Final test accuracy of the global model; rows are attacks."],
            table=_metric_table(matrix, "accuracy"),
            image=image("Clean accuracy heatmap", HEATMAP_ACCURACY_FILE),
        ),
        _Section(
            title="Accuracy drop vs the no-attack FedAvg run (points)",
            paragraphs=[
                "Accuracy of the FedAvg run without an attack minus this run's accuracy, in "
                "percentage points, paired by seed and averaged; negative values are gains. "
                'The "none" row is what each defence costs when nobody attacks.'
            ],
            table=_drop_table(matrix),
            image=image("Accuracy drop heatmap", HEATMAP_DROP_FILE),
        ),
    ]
    backdoors = _backdoor_attacks(matrix)
    if backdoors:
        sections.append(
            _Section(
                title="Backdoor attack success",
                paragraphs=[
                    "Share of triggered test inputs classified as the attacker's target "
                    "(mean ± std over seeds); lower is better."
                ],
                table=_metric_table(matrix.restricted(backdoors), "backdoor_asr"),
                image=image("Backdoor attack success heatmap", HEATMAP_ASR_FILE),
            )
        )
    detection = _detection_table(matrix)
    if detection.rows:
        sections.append(
            _Section(
                title="Detection",
                paragraphs=[
                    "Anomaly detection precision and recall (mean over seeds), malicious "
                    "clients quarantined (mean), the round by which every malicious client "
                    "had been quarantined (latest over seeds; — if not all seeds got there) "
                    "and honest clients still quarantined at the end (max over seeds)."
                ],
                table=detection,
            )
        )
    return sections


def _run_section(
    summary: dict[str, Any], cells: Sequence[dict[str, Any]], meta: dict[str, Any]
) -> _Section:
    lines = {str(key): str(value) for key, value in meta.items()}
    total = sum(float(c["duration_s"]) for c in cells)
    derived = {
        "runs": str(len(cells)),
        "training time (sum over runs)": f"{total:.1f} s",
        "accuracy tolerance": f"{summary['tolerance'] * 100:.1f} points",
        "backdoor ASR limit": f"{summary['asr_limit']:.2f}",
    }
    for key, value in derived.items():
        lines.setdefault(key, value)
    return _Section(title="Run", bullets=[f"{key}: {value}" for key, value in lines.items()])


def _verdict_section(summary: dict[str, Any], matrix: _Matrix) -> _Section:
    tolerance = summary["tolerance"] * 100
    asr_limit = summary["asr_limit"]
    rows = []
    for verdict in summary["verdicts"]:
        best = matrix.index.get((verdict["attack"], verdict["best_defense"]))
        rows.append(
            [
                verdict["attack"],
                verdict["attack_kind"],
                _fmt(verdict["undefended_accuracy"]),
                verdict["best_defense"],
                _fmt(None if best is None else best["accuracy_mean"]),
                _fmt(None if best is None else best["backdoor_asr_mean"]),
                "yes" if verdict["survives"] else "no",
                _fmt_list(verdict["hurt_defenses"]),
            ]
        )
    headers = [
        "attack",
        "kind",
        "undefended acc",
        "best defence",
        "its acc",
        "its ASR",
        "survives",
        "defences it hurts",
    ]
    paragraph = (
        "The best defence against an attack has the highest clean accuracy; against a "
        "backdoor, the lowest attack success rate (ASR) among the defences within the accuracy "
        f"tolerance. A defence survives when its accuracy stays within {tolerance:.1f} points "
        f"of the no-attack FedAvg run (and, for backdoors, its ASR is at most {asr_limit:.2f}). "
        "An attack hurts a defence when it costs more than the tolerance against that "
        "defence's own no-attack run (or, for backdoors, pushes its ASR above the limit)."
    )
    return _Section(title="Verdicts", paragraphs=[paragraph], table=_Table(headers, rows))


def _metric_table(matrix: _Matrix, metric: str) -> _Table:
    rows = [
        [attack] + [_fmt_mean_std(matrix.index.get((attack, d)), metric) for d in matrix.defenses]
        for attack in matrix.attacks
    ]
    return _Table(["attack", *matrix.defenses], rows)


def _drop_table(matrix: _Matrix) -> _Table:
    values = matrix.values("drop_vs_fedavg_mean")
    rows = [
        [attack] + [_fmt_points(value) for value in line]
        for attack, line in zip(matrix.attacks, values, strict=True)
    ]
    return _Table(["attack", *matrix.defenses], rows)


def _detection_table(matrix: _Matrix) -> _Table:
    headers = [
        "attack",
        "defence",
        "precision",
        "recall",
        "malicious quarantined",
        "first quarantine round",
        "honest quarantined at end",
    ]
    rows = []
    for attack in matrix.attacks:
        for defense in matrix.defenses:
            row = matrix.index.get((attack, defense))
            if row is None or (
                row["detection_precision_mean"] is None
                and row["malicious_quarantined_mean"] is None
            ):
                continue
            rows.append(
                [
                    attack,
                    defense,
                    _fmt(row["detection_precision_mean"]),
                    _fmt(row["detection_recall_mean"]),
                    _fmt(row["malicious_quarantined_mean"], digits=1),
                    _fmt_int(row["first_quarantine_round_max"]),
                    _fmt_int(row["honest_quarantined_at_end_max"]),
                ]
            )
    return _Table(headers, rows)


# --------------------------------------------------------------------------- rendering


def _md_escape(text: str) -> str:
    """Escape what would break a table cell or be read as inline HTML/code."""
    for char in ("\\", "|", "<", ">", "`"):
        text = text.replace(char, "\\" + char)
    return text.replace("\n", " ")


def _render_markdown(title: str, sections: Sequence[_Section]) -> str:
    lines = [f"# {_md_escape(title)}", ""]
    for section in sections:
        lines += [f"## {_md_escape(section.title)}", ""]
        for paragraph in section.paragraphs:
            lines += [_md_escape(paragraph), ""]
        if section.bullets:
            lines += [*(f"- {_md_escape(bullet)}" for bullet in section.bullets), ""]
        if section.table is not None:
            lines += [*_markdown_table(section.table), ""]
        if section.image is not None:
            lines += [f"![{_md_escape(section.image.alt)}]({section.image.file})", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def _markdown_table(table: _Table) -> list[str]:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(_md_escape(cell) for cell in cells) + " |"

    return [line(table.headers), "|" + "---|" * len(table.headers)] + [
        line(row) for row in table.rows
    ]


def _render_html(title: str, sections: Sequence[_Section]) -> str:
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{esc(title)}</h1>",
    ]
    for section in sections:
        parts += ["<section>", f"<h2>{esc(section.title)}</h2>"]
        parts += [f"<p>{esc(paragraph)}</p>" for paragraph in section.paragraphs]
        if section.bullets:
            parts += ["<ul>", *(f"<li>{esc(b)}</li>" for b in section.bullets), "</ul>"]
        if section.table is not None:
            parts += _html_table(section.table)
        if section.image is not None:
            src, alt = esc(section.image.file), esc(section.image.alt)
            parts.append(f'<figure><img src="{src}" alt="{alt}"></figure>')
        parts.append("</section>")
    parts += ["</body>", "</html>"]
    return "\n".join(parts) + "\n"


def _html_table(table: _Table) -> list[str]:
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in table.headers)
    body = [
        "<tr>" + "".join(f"<td>{esc(cell)}</td>" for cell in row) + "</tr>" for row in table.rows
    ]
    return ["<table>", f"<thead><tr>{head}</tr></thead>", "<tbody>", *body, "</tbody>", "</table>"]
