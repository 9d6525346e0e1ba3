"""Charts of a run's rounds, drawn the same way in ``training.png`` and in the compliance report.

- :mod:`~fedfort.charts.rounds`: what a chart shows, read from round records: the series of
  metrics (server test accuracy and loss, the federated evaluation's overall metrics) and the
  rollbacks (automatic drift rollbacks from the records, operator rollbacks from the audit
  events);
- :mod:`~fedfort.charts.axes`: the axis conventions: plain tick labels (never an offset such as
  ``+2.097e3``), a logarithmic loss axis when the values span a decade or more, counts from
  zero, rollbacks as labelled vertical lines;
- :mod:`~fedfort.charts.panels`: the panels (metrics, losses, counts) and
  :func:`~fedfort.charts.panels.training_figure`, the figure written as ``training.png``.

A panel is drawn only when the run has data for it.
"""

from typing import TYPE_CHECKING

from fedfort._lazy import lazy_exports

if TYPE_CHECKING:
    from fedfort.charts.panels import training_figure
    from fedfort.charts.rounds import RollbackMark, Series, metric_series, rollback_marks

__all__ = ["RollbackMark", "Series", "metric_series", "rollback_marks", "training_figure"]

if not TYPE_CHECKING:  # type checkers see the imports above; typos stay errors
    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "RollbackMark": "fedfort.charts.rounds",
            "Series": "fedfort.charts.rounds",
            "metric_series": "fedfort.charts.rounds",
            "rollback_marks": "fedfort.charts.rounds",
            "training_figure": "fedfort.charts.panels",
        },
        globals(),
    )
