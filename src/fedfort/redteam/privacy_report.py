"""The privacy red-team report: leakage per defence for both attacks, in Markdown and HTML.

It renders the body of ``privacy.json`` (:func:`fedfort.redteam.privacy.run_privacy_redteam`)
with the report kit's sections and renderers (:mod:`fedfort.report.document`):

* a side-by-side table per defence kind: membership inference (AUC of the client-update and
  the global-model attacks) beside gradient inversion (SSIM, PSNR, label accuracy);
* membership inference on the final global model and on one round's client updates, AUC and
  TPR at the configured FPR as mean [low, high] over seeds, epsilon per DP row;
* gradient inversion per defence: MSE, PSNR, SSIM, label accuracy, leaked images;
* what each defence does not stop (central DP does not hide an update from the server that
  adds the noise);
* a grid of original and reconstructed images per defence: ``inversion_grid.png`` beside
  ``report.md``, and embedded as base64 in ``report.html``, which is self-contained.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import numpy as np
from matplotlib.figure import Figure

from fedfort.redteam.inversion_experiment import DEFENCES
from fedfort.redteam.report import HTML_FILE, MARKDOWN_FILE
from fedfort.report.document import Image, Section, Table, render_html, render_markdown
from fedfort.report.figures import data_uri
from fedfort.report.markup import DASH

__all__ = ["GRID_FILE", "NOTES", "write_privacy_report"]

GRID_FILE: Final = "inversion_grid.png"
_KINDS: Final[tuple[str, ...]] = DEFENCES  # the rows of the side-by-side table, in order
_GRID_COLUMNS: Final = 6

NOTES: Final = (
    "Central DP does not hide an update from the server that adds the noise: it protects the "
    "released model from everyone else, so the client-update attack meets the raw update.",
    "Distributed DP without secure aggregation: each update carries only its share of the "
    "noise, so the server reading one update faces far less noise than the sum's epsilon "
    "assumes.",
    "Secure aggregation hides single updates (the server sees only the round's sum) but not "
    "the global model: the final-model attacks are unchanged by it.",
    "Clipping alone bounds an update's norm; it is no privacy guarantee and has no epsilon. "
    "Clipping at the server (defense.norm_bound) happens after the server read the update.",
    "Local DP's epsilon is per round; the figure shown is its composition over the rounds "
    "by fedfort's accountant.",
)


def _ci(cell: dict[str, Any] | None, digits: int = 3) -> str:
    if not cell:
        return DASH
    if cell["n"] == 1:
        return f"{cell['mean']:.{digits}f}"
    return f"{cell['mean']:.{digits}f} [{cell['low']:.{digits}f}, {cell['high']:.{digits}f}]"


def _eps(row: dict[str, Any]) -> str:
    e = row.get("epsilon")
    if not e:
        return DASH
    return f"{e['mean']:.3g} (δ={row['delta']:g})"


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return DASH
    if isinstance(value, str):
        return value
    return f"{float(value):.{digits}f}"


def _membership_tables(m: dict[str, Any]) -> tuple[Table, Table]:
    fpr = f"TPR@{m['settings']['fpr']:.0%}FPR"
    g_head = ["defence", "epsilon", "accuracy"]
    attacks = [a for a in ("loss_threshold", "lira_online", "lira_offline")]
    rows = m["rows"]
    present = [a for a in attacks if any(a in r["global_model"] for r in rows.values())]
    for a in present:
        g_head += [f"{a} AUC", f"{a} {fpr}"]
    g_rows, u_rows = [], []
    for name, r in rows.items():
        line = [name, _eps(r), _ci(r["accuracy"])]
        for a in present:
            cell = r["global_model"].get(a, {})
            line += [_ci(cell.get("auc")), _ci(cell.get("tpr_at_fpr"))]
        g_rows.append(line)
        u = r["client_update"]["loss_change"]
        u_rows.append([name, r["server_sees"], _eps(r), _ci(u["auc"]), _ci(u["tpr_at_fpr"])])
    u_head = ["defence", "server sees", "epsilon", "loss-change AUC", f"loss-change {fpr}"]
    return Table(g_head, g_rows), Table(u_head, u_rows)


def _inversion_table(inv: dict[str, Any]) -> Table:
    head = ["defence", "setting", "epsilon", "MSE", "PSNR (dB)", "SSIM", "label accuracy", "leaked"]
    rows = []
    for r in inv["rows"]:
        s = r["summary"]
        params = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in r["parameters"].items()
        )
        leaked = f"{r['leaked']}/{r['trials_run']}" if r["applicable"] else r["note"]
        rows.append(
            [
                r["title"],
                params,
                _num(r["epsilon"], 3),
                _num(s["mean_mse"], 4),
                _num(s["mean_psnr"], 1),
                _num(s["mean_ssim"]),
                _num(s["label_accuracy"], 2),
                leaked,
            ]
        )
    return Table(head, rows)


def _side_by_side(m: dict[str, Any], inv: dict[str, Any] | None) -> Table:
    head = [
        "defence kind",
        "membership setting",
        "epsilon",
        "update AUC",
        "model AUC (best)",
        "inversion setting",
        "epsilon",
        "SSIM",
        "PSNR (dB)",
        "label accuracy",
    ]
    rows = []
    for kind in _KINDS:
        mem = [(n, r) for n, r in m["rows"].items() if r.get("kind") == kind]
        gi = [r for r in (inv["rows"] if inv else []) if r["defence"] == kind]
        for i in range(max(len(mem), len(gi))):
            line = [kind]
            if i < len(mem):
                name, r = mem[i]
                best = max(r["global_model"].values(), key=lambda c: c["auc"]["mean"])
                line += [
                    name,
                    _eps(r),
                    _ci(r["client_update"]["loss_change"]["auc"]),
                    _ci(best["auc"]),
                ]
            else:
                line += [DASH] * 4
            if i < len(gi):
                g = gi[i]
                s = g["summary"]
                line += [
                    g["title"],
                    _num(g["epsilon"]),
                    _num(s["mean_ssim"]),
                    _num(s["mean_psnr"], 1),
                    _num(s["label_accuracy"], 2),
                ]
            else:
                line += [DASH] * 5
            rows.append(line)
    return Table(head, rows)


def _grid(inv: dict[str, Any], path: Path) -> bool:
    """Originals on top, one row of reconstructions per applicable defence row."""
    rows = [r for r in inv["rows"] if r["applicable"] and r["trials"]]
    if not rows:
        return False
    cols = min(_GRID_COLUMNS, len(rows[0]["trials"]))
    # a bare Figure renders through Agg when saved: no pyplot, no process-wide backend
    fig = Figure(figsize=(1.3 * cols + 1.8, 1.3 * (len(rows) + 1)))
    axes = fig.subplots(len(rows) + 1, cols, squeeze=False)
    lines = [("original", [t["true_image"] for t in rows[0]["trials"][:cols]])]
    lines += [(r["title"], [t["reconstruction"] for t in r["trials"][:cols]]) for r in rows]
    for i, (label, images) in enumerate(lines):
        for j in range(cols):
            ax = axes[i][j]
            if j < len(images):
                ax.imshow(np.asarray(images[j]), cmap="gray_r", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[i][0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle("gradient inversion: original (top) vs reconstruction per defence", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90, metadata={"Software": None})
    return True


def _sections(body: dict[str, Any], image: Image | None) -> list[Section]:
    meta, m, inv = body["meta"], body["membership"], body["inversion"]
    s = m["settings"]
    run = [f"{k}: {v}" for k, v in meta.items()]
    run.append(f"intervals: {s['interval']}; LiRA shadows per seed: {s['shadows']}")
    global_table, update_table = _membership_tables(m)
    sections = [
        Section("Run", bullets=run),
        Section(
            "Leakage per defence, both attacks",
            paragraphs=[
                "Membership AUC is 0.5 for guessing. SSIM near the noise baseline "
                "means the inversion learnt nothing."
            ],
            table=_side_by_side(m, inv),
        ),
        Section(
            "Membership inference on the final global model",
            paragraphs=[
                "Members: every client's training rows; non-members: as many held-out "
                "rows. Loss threshold (Yeom et al., CSF 2018) and LiRA online/offline "
                "(Carlini et al., IEEE S&P 2022)."
            ],
            table=global_table,
        ),
        Section(
            f"Membership inference on client updates (round {s['update_round']})",
            paragraphs=[
                "The curious server scores loss(w) - loss(w + delta_k) on client k's "
                "rows and on held-out rows; under secure aggregation it has only the "
                "round's aggregate."
            ],
            table=update_table,
        ),
    ]
    if inv is not None:
        sections.append(
            Section("Gradient inversion of one client's update", table=_inversion_table(inv))
        )
    sections.append(Section("What each defence does not stop", bullets=list(NOTES)))
    if image is not None:
        sections.append(Section("Original vs reconstructed images", image=image))
    return sections


def write_privacy_report(body: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write ``report.md``, ``report.html`` and the image grid into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    title = "fedfort privacy red-team report"
    written: dict[str, Path] = {}
    md_image = html_image = None
    if body["inversion"] is not None and _grid(body["inversion"], out / GRID_FILE):
        written["grid"] = out / GRID_FILE
        alt = "original and reconstructed images per defence"
        md_image = Image(alt, GRID_FILE)
        html_image = Image(alt, data_uri((out / GRID_FILE).read_bytes()))
    (out / MARKDOWN_FILE).write_text(
        render_markdown(title, _sections(body, md_image)), encoding="utf-8"
    )
    (out / HTML_FILE).write_text(render_html(title, _sections(body, html_image)), encoding="utf-8")
    written["markdown"] = out / MARKDOWN_FILE
    written["html"] = out / HTML_FILE
    return written
