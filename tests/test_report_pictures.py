"""The compliance report reads well: ISO 8601 UTC times, shortened hashes whose full value
opens without a script, no empty detection chart, rollbacks (automatic and operator) marked on
the accuracy curve, and records without a server-side accuracy (a federated evaluation
instead) reported rather than crashing."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from fedfort import Simulation
from fedfort.audit.rollback_request import request_rollback
from fedfort.charts.rounds import metric_series, rollback_marks
from fedfort.config import parse_config
from fedfort.monitoring.run_state import read_run, run_records
from fedfort.report import build_report
from fedfort.report.markup import digest, utc
from fedfort.report.plots import _detection_plot, _epsilon_plot, _scores_plot
from fedfort.server.versions import ModelRegistry

ISO_UTC = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
HASH = "8656375eb8614f15eeab66ac53c622f32d071fd3df19c6428a496120b3fd9ea8"


@pytest.fixture(scope="module")
def rolled_back(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A drift rollback in round 3 or 4, then an operator rollback to version 1 after round 4,
    applied when the run resumes for a fifth round; no anomaly detection."""
    out = tmp_path_factory.mktemp("pictures") / "run"
    body: dict[str, Any] = {
        "rounds": 4,
        "data": {"dataset": "digits", "partition": "iid"},
        "model": {"name": "logreg"},
        "clients": {"count": 6, "epochs": 1, "batch_size": 0, "lr": 0.5},
        "simulation": {"workers": 0},
        "attack": {"name": "sign_flip", "scale": 50.0, "fraction": 0.4, "start_round": 3},
        "governance": {"rollback_drop": 0.05},
    }
    with Simulation(parse_config(body), out_dir=out) as sim:
        sim.run()
    with ModelRegistry(out) as registry:
        request_rollback(registry, 1, "the auditor asked for version 1")
    with Simulation.resume(out, rounds=5) as sim:
        sim.run()
    return out


def test_utc_times_are_iso_8601_with_a_z() -> None:
    assert utc(1796677445) == "2026-12-07T21:04:05Z"
    assert utc(None) is None and utc(float("nan")) is None


def test_every_time_in_the_report_is_iso_8601_utc(rolled_back: Path) -> None:
    text = build_report(rolled_back)
    assert "+00:00" not in text
    generated = re.search(r"Generated (\S+) by fedfort", text)
    assert generated is not None and re.fullmatch(ISO_UTC, generated.group(1))
    times = re.findall(r'<time datetime="([^"]*)">([^<]*)</time>', text)
    assert len(times) >= 6  # every model version and lifecycle event
    assert all(a == b and re.fullmatch(ISO_UTC, a) for a, b in times)
    # the operator rollback's time inside its description, too
    assert re.search(rf"rolled back to version 1 at {ISO_UTC}", text)


def test_a_hash_shows_12_characters_and_opens_to_its_full_value_without_script() -> None:
    html = digest(HASH).html
    assert html == (
        f'<details class="digest"><summary title="{HASH}"><code>{HASH[:12]}</code>…</summary>'
        f'<code class="full">{HASH}</code></details>'
    )
    assert digest("8ad50d58").html == "<code>8ad50d58</code>"  # short enough as it is
    assert digest(None).html == "<code>\u2014</code>"
    assert "&lt;x&gt;" in digest("<x>" * 10).html


def test_tables_show_shortened_hashes_and_wrap_long_text(rolled_back: Path) -> None:
    text = build_report(rolled_back)
    state = read_run(rolled_back)
    for model in state["models"]:
        sha = model["sha256"]
        assert f'<summary title="{sha}"><code>{sha[:12]}</code>…</summary>' in text
        assert f'<code class="full">{sha}</code>' in text
    # no table cell shows a whole hash: the only full hashes are inside opened details, the
    # sentence of the audit verdict (hashed in the alert only when it failed) and the command
    # an auditor copies
    visible = re.sub(r'<code class="full">[0-9a-f]{64}</code>', "", text)
    visible = re.sub(r'title="[0-9a-f]{64}"', "", visible)
    visible = re.sub(r"--head \d+:[0-9a-f]{64}", "", visible)
    cells = re.findall(r"<td[^>]*>(.*?)</td>", visible)
    assert cells and not [c for c in cells if re.search(r"<code>[0-9a-f]{64}</code>", c)]
    assert '<td class="long">' in text  # the audit event details wrap anywhere
    assert "<script" not in text.lower()


def test_no_detection_chart_when_nothing_was_flagged_or_rejected(rolled_back: Path) -> None:
    text = build_report(rolled_back)
    state = read_run(rolled_back)
    assert not any(r["flagged"] or r["rejected"] for r in state["rounds"])
    assert 'alt="detections per round"' not in text
    assert _detection_plot(state["rounds"]) is None
    rows = [{"round": 1, "flagged": 0, "rejected": 0}, {"round": 2, "flagged": 2, "rejected": 1}]
    fig = _detection_plot(rows)
    assert fig is not None
    FigureCanvasAgg(fig).draw()
    (ax,) = fig.axes
    assert ax.get_ylim()[0] == 0 and ax.yaxis.get_offset_text().get_text() == ""


def test_both_rollbacks_are_marked_on_the_accuracy_curve(rolled_back: Path) -> None:
    state = read_run(rolled_back)
    _, records = run_records(rolled_back)
    automatic = [r["round"] for r in state["rounds"] if r["rollback"]]
    assert automatic  # the boosted sign flip wrecks a candidate from round 3
    marks = rollback_marks(records, state["events"])
    assert [m.x for m in marks if m.automatic] == [float(r) for r in automatic]
    assert [(m.x, m.label) for m in marks if not m.automatic] == [(4.5, "operator rollback to v1")]
    scores, _ = metric_series(records)
    fig = _scores_plot(scores, state, records)
    FigureCanvasAgg(fig).draw()
    (ax,) = fig.axes
    lines = [float(x.get_xdata()[0]) for x in ax.get_lines() if x.get_gid() == "rollback"]
    assert lines == [m.x for m in marks]
    assert "operator rollback to v1" in [t.get_text().strip() for t in ax.texts]
    assert ax.yaxis.get_offset_text().get_text() == ""


def test_epsilon_near_the_budget_has_no_offset_label() -> None:
    rows = [{"round": r, "epsilon": 2.9999 + 1e-5 * r} for r in range(1, 6)]
    fig = _epsilon_plot(rows, [], 3.0)
    assert fig is not None
    FigureCanvasAgg(fig).draw()
    (ax,) = fig.axes
    assert ax.yaxis.get_offset_text().get_text() == ""
    assert ax.xaxis.get_offset_text().get_text() == ""


def test_a_run_without_server_accuracy_reports_its_federated_evaluation(
    rolled_back: Path, tmp_path: Path
) -> None:
    run = Path(shutil.copytree(rolled_back, tmp_path / "federated"))
    db = sqlite3.connect(run / "checkpoints.sqlite")
    try:
        rows = db.execute("SELECT round, record_json FROM checkpoints WHERE round > 0").fetchall()
        with db:
            for round_, text in rows:
                record = json.loads(text)
                record.pop("accuracy", None)
                record.pop("loss", None)
                record["evaluation"] = {
                    "overall": {"accuracy": 0.5 + 0.05 * round_, "loss": 1.0 / round_},
                    "clients": {"client-000": {"accuracy": 0.5, "examples": 40}},
                }
                db.execute(
                    "UPDATE checkpoints SET record_json = ? WHERE round = ?",
                    (json.dumps(record), round_),
                )
    finally:
        db.close()
    text = build_report(run)
    assert 'alt="accuracy per round"' in text and 'alt="loss per round"' in text
    assert "Overall metrics of the federated evaluation" in text
    assert "server&#x27;s held-out set" not in text  # no server-side test set was used
