"""The charts of a run (training.png and the report's plots): plain tick labels, log losses
when they span decades, counts from zero, rollbacks marked, and records without a server-side
accuracy or with a federated evaluation drawn rather than crashing."""

from __future__ import annotations

from typing import Any

import pytest
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from fedfort.charts.axes import spans_decades
from fedfort.charts.panels import draw_counts, training_figure
from fedfort.charts.rounds import metric_series, rollback_marks
from fedfort.simulation.results import plot_history

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _drawn(fig: Figure) -> list[Axes]:
    FigureCanvasAgg(fig).draw()
    return list(fig.axes)


def _no_offset_text(axes: list[Axes]) -> None:
    for ax in axes:
        assert ax.xaxis.get_offset_text().get_text() == "", ax.get_xlabel()
        assert ax.yaxis.get_offset_text().get_text() == "", ax.get_ylabel()


def _rollback_lines(ax: Axes) -> list[float]:
    return [float(line.get_xdata()[0]) for line in ax.get_lines() if line.get_gid() == "rollback"]


def _evaluated(round_: int, **overall: float) -> dict[str, Any]:
    """A record with a federated evaluation and no server-side accuracy or loss."""
    return {
        "round": round_,
        "evaluation": {
            "overall": {**overall, "examples": 300},
            "clients": {"hospital-a": {**overall, "examples": 100}},
        },
    }


def _automatic_rollback(round_: int, to_version: int, refused: float) -> dict[str, Any]:
    return {
        "rollback": {
            "automatic": True,
            "reason": "validation accuracy fell",
            "rejected_accuracy": refused,
            "to_version": to_version,
        }
    }


def test_a_near_constant_large_loss_has_plain_ticks_and_no_offset() -> None:
    # a diverged model's loss: matplotlib's default labels it "+2.097e3" beside the axis
    records = [{"round": r, "accuracy": 0.1, "loss": 2097.1 + 0.01 * r} for r in range(1, 6)]
    axes = _drawn(training_figure(records))
    assert len(axes) == 2
    _no_offset_text(axes)
    loss = axes[1]
    assert loss.get_yscale() == "linear"
    labels = [t.get_text() for t in loss.get_yticklabels() if t.get_text()]
    assert labels and all(label.startswith("2097.") for label in labels)


def test_losses_spanning_decades_are_on_a_log_axis_with_plain_labels() -> None:
    records = [{"round": r, "accuracy": 0.5, "loss": 2.3 * 0.5**r} for r in range(1, 10)]
    axes = _drawn(training_figure(records))
    _no_offset_text(axes)
    assert axes[1].get_yscale() == "log" and "log scale" in axes[1].get_ylabel()
    labels = {t.get_text() for t in axes[1].get_yticklabels()}
    assert "0.1" in labels and not any("e-" in label for label in labels)
    # within one decade the axis stays linear
    assert not spans_decades([2.3, 1.0, 0.5]) and spans_decades([2.3, 0.2])
    assert not spans_decades([1.0, 0.0, 0.01])  # a zero cannot sit on a log axis


def test_records_without_accuracy_plot_the_federated_evaluation() -> None:
    records = [
        _evaluated(r, accuracy=0.5 + 0.04 * r, auc=0.6 + 0.03 * r, loss=1.5 * 0.8**r)
        for r in range(1, 7)
    ]
    scores, losses = metric_series(records)
    assert [s.label for s in scores] == ["federated accuracy", "federated auc"]
    assert [s.label for s in losses] == ["federated loss"]
    assert scores[0].rounds == [1, 2, 3, 4, 5, 6]
    assert scores[0].values[0] == pytest.approx(0.54)

    axes = _drawn(training_figure(records))
    _no_offset_text(axes)
    score_labels = [line.get_label() for line in axes[0].get_lines()]
    assert score_labels == ["federated accuracy", "federated auc"]  # "examples" is a count
    assert [line.get_label() for line in axes[1].get_lines()] == ["federated loss"]


def test_server_and_federated_metrics_share_the_panels_and_gaps_are_skipped() -> None:
    records: list[dict[str, Any]] = [
        {"round": 1, "accuracy": 0.4, "loss": 1.2},
        {"round": 2, "accuracy": None, "loss": None},  # a round that was not evaluated
        {**_evaluated(3, accuracy=0.7), "accuracy": 0.6, "loss": 0.9},
    ]
    scores, losses = metric_series(records)
    assert [(s.label, s.rounds) for s in scores] == [
        ("server test accuracy", [1, 3]),
        ("federated accuracy", [3]),
    ]
    assert [(s.label, s.rounds) for s in losses] == [("server test loss", [1, 3])]


def test_rollbacks_are_marked_on_the_accuracy_curve() -> None:
    records: list[dict[str, Any]] = [
        {"round": r, "accuracy": 0.5 + 0.03 * r, "loss": 1.0} for r in range(1, 11)
    ]
    records[4]["measurements"] = _automatic_rollback(5, to_version=4, refused=0.1)
    events = [
        {"kind": "run_start", "round": None, "body": {}},
        {
            "kind": "rollback",
            "round": 7,
            "body": {"automatic": False, "at_round": 7, "to_version": 3, "reason": "audit"},
        },
        # the audit entry of the automatic rollback is in the record already
        {"kind": "rollback", "round": 5, "body": {"automatic": True, "to_version": 4}},
    ]
    marks = rollback_marks(records, events)
    assert [(m.x, m.automatic, m.refused) for m in marks] == [(5.0, True, 0.1), (7.5, False, None)]

    ax = _drawn(training_figure(records, events))[0]
    assert _rollback_lines(ax) == [5.0, 7.5]
    texts = [t.get_text().strip() for t in ax.texts]
    assert texts == ["rollback to v4", "operator rollback to v3"]
    refused = [line for line in ax.get_lines() if line.get_label() == "refused candidate"]
    assert len(refused) == 1 and list(refused[0].get_ydata()) == [0.1]
    legend = ax.get_legend()
    assert legend is not None
    entries = [t.get_text() for t in legend.get_texts()]
    assert {"automatic rollback", "operator rollback", "refused candidate"} <= set(entries)


def test_counts_start_at_zero_and_an_all_zero_chart_has_no_negative_tick() -> None:
    fig = Figure()
    ax = fig.subplots()
    draw_counts(ax, [1, 2, 3], {"flagged": [0, 0, 0], "rejected": [0, -2, 0]})
    _drawn(fig)
    assert ax.get_ylim()[0] == 0
    assert all(tick >= 0 for tick in ax.get_yticks() if tick <= ax.get_ylim()[1])
    assert all(patch.get_height() >= 0 for patch in ax.patches)
    _no_offset_text([ax])


def test_training_png_of_records_without_any_metric_says_so(tmp_path: Any) -> None:
    fig = training_figure([{"round": 1}, {"round": 2, "accuracy": None}])
    assert fig.axes == []
    assert [t.get_text() for t in fig.texts] == ["no round has been evaluated yet"]
    path = tmp_path / "training.png"
    plot_history([{"round": 1, "evaluation": {"overall": {"accuracy": 0.7}}}], path)
    assert path.read_bytes().startswith(PNG_SIGNATURE)


def test_a_private_run_adds_accuracy_against_epsilon() -> None:
    records = [
        {"round": r, "accuracy": 0.5, "loss": 1.0, "epsilon": 2.99990 + 1e-5 * r, "delta": 1e-5}
        for r in range(1, 6)
    ]
    axes = _drawn(training_figure(records))
    assert len(axes) == 3 and axes[2].get_xlabel() == "epsilon spent (delta = 1e-05)"
    _no_offset_text(axes)
