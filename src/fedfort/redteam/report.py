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

Markdown and HTML are rendered from the same list of sections with the report kit
(:mod:`fedfort.report.document`), so they carry the same content, and the HTML page has the
compliance report's look; both link the PNG heatmaps (:mod:`fedfort.redteam.heatmaps`) by
relative path and must stay next to them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from fedfort.redteam.heatmaps import (
    HEATMAP_ACCURACY_FILE,
    HEATMAP_ASR_FILE,
    HEATMAP_DROP_FILE,
    Matrix,
    Row,
    backdoor_attacks,
    fixed,
    matrix_of,
    write_heatmaps,
)
from fedfort.report.document import Image, Section, Table, render_html, render_markdown
from fedfort.report.markup import DASH

__all__ = ["HTML_FILE", "MARKDOWN_FILE", "write_report"]

MARKDOWN_FILE: Final = "report.md"
HTML_FILE: Final = "report.html"


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
    matrix = matrix_of(summary)
    written = write_heatmaps(matrix, out)
    images = {path.name for path in written.values()}
    sections = _sections(summary, cells, meta or {}, matrix, images)
    markdown_path = out / MARKDOWN_FILE
    markdown_path.write_text(render_markdown(title, sections), encoding="utf-8")
    html_path = out / HTML_FILE
    html_path.write_text(render_html(title, sections), encoding="utf-8")
    return {"markdown": markdown_path, "html": html_path, **written}


# --------------------------------------------------------------------------- formatting


def _fmt_mean_std(row: Row | None, metric: str) -> str:
    if row is None or row[f"{metric}_mean"] is None:
        return DASH
    mean = fixed(row[f"{metric}_mean"])
    std = row[f"{metric}_std"]
    return mean if std is None else f"{mean} ± {std:.3f}"


def _fmt_points(value: float | None) -> str:
    return fixed(None if value is None else value * 100, digits=1)


def _fmt_int(value: int | None) -> str:
    return DASH if value is None else str(value)


def _fmt_list(labels: Sequence[str]) -> str:
    return ", ".join(labels) if labels else DASH


# --------------------------------------------------------------------------- sections


def _sections(
    summary: dict[str, Any],
    cells: Sequence[dict[str, Any]],
    meta: dict[str, Any],
    matrix: Matrix,
    images: set[str],
) -> list[Section]:
    def image(alt: str, file: str) -> Image | None:
        return Image(alt, file) if file in images else None

    sections = [
        _run_section(summary, cells, meta),
        _verdict_section(summary, matrix),
        Section(
            title="Clean accuracy (mean ± std over seeds)",
            paragraphs=["Final test accuracy of the global model; rows are attacks."],
            table=_metric_table(matrix, "accuracy"),
            image=image("Clean accuracy heatmap", HEATMAP_ACCURACY_FILE),
        ),
        Section(
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
    backdoors = backdoor_attacks(matrix)
    if backdoors:
        sections.append(
            Section(
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
            Section(
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
) -> Section:
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
    return Section(title="Run", bullets=[f"{key}: {value}" for key, value in lines.items()])


def _verdict_section(summary: dict[str, Any], matrix: Matrix) -> Section:
    tolerance = summary["tolerance"] * 100
    asr_limit = summary["asr_limit"]
    rows = []
    for verdict in summary["verdicts"]:
        best = matrix.index.get((verdict["attack"], verdict["best_defense"]))
        rows.append(
            [
                verdict["attack"],
                verdict["attack_kind"],
                fixed(verdict["undefended_accuracy"]),
                verdict["best_defense"],
                fixed(None if best is None else best["accuracy_mean"]),
                fixed(None if best is None else best["backdoor_asr_mean"]),
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
    return Section(title="Verdicts", paragraphs=[paragraph], table=Table(headers, rows))


def _metric_table(matrix: Matrix, metric: str) -> Table:
    rows = [
        [attack] + [_fmt_mean_std(matrix.index.get((attack, d)), metric) for d in matrix.defenses]
        for attack in matrix.attacks
    ]
    return Table(["attack", *matrix.defenses], rows)


def _drop_table(matrix: Matrix) -> Table:
    values = matrix.values("drop_vs_fedavg_mean")
    rows = [
        [attack] + [_fmt_points(value) for value in line]
        for attack, line in zip(matrix.attacks, values, strict=True)
    ]
    return Table(["attack", *matrix.defenses], rows)


def _detection_table(matrix: Matrix) -> Table:
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
                    fixed(row["detection_precision_mean"]),
                    fixed(row["detection_recall_mean"]),
                    fixed(row["malicious_quarantined_mean"], digits=1),
                    _fmt_int(row["first_quarantine_round_max"]),
                    _fmt_int(row["honest_quarantined_at_end_max"]),
                ]
            )
    return Table(headers, rows)
