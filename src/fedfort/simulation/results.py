"""Run outputs (``results.json``, ``training.png``), written by :mod:`fedfort.run.outputs`;
kept here so existing imports keep working."""

from fedfort.run.outputs import (
    PLOT_FILE,
    RESULTS_FILE,
    plot_history,
    rollback_events,
    write_results,
)

__all__ = ["PLOT_FILE", "RESULTS_FILE", "plot_history", "rollback_events", "write_results"]
