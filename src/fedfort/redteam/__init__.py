"""``fedfort redteam``: attacks x defences x seeds, summarised and reported.

:mod:`~fedfort.redteam.matrix` plans and runs the cells, :mod:`~fedfort.redteam.summary` folds
seeds into rows and verdicts, :mod:`~fedfort.redteam.report` writes Markdown and HTML (on the
report kit, :mod:`fedfort.report`) beside the heatmaps of :mod:`~fedfort.redteam.heatmaps`.
``docs/redteam.md`` explains the config and the report.
"""

from typing import TYPE_CHECKING

from fedfort._lazy import lazy_exports

if TYPE_CHECKING:
    from fedfort.redteam.matrix import (
        REDTEAM_FILE,
        RedteamConfig,
        load_redteam_config,
        plan_cells,
        run_redteam,
    )
    from fedfort.redteam.report import write_report
    from fedfort.redteam.summary import summarize

__all__ = [
    "REDTEAM_FILE",
    "RedteamConfig",
    "load_redteam_config",
    "plan_cells",
    "run_redteam",
    "summarize",
    "write_report",
]

if not TYPE_CHECKING:  # type checkers see the imports above; typos stay errors
    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "REDTEAM_FILE": "fedfort.redteam.matrix",
            "RedteamConfig": "fedfort.redteam.matrix",
            "load_redteam_config": "fedfort.redteam.matrix",
            "plan_cells": "fedfort.redteam.matrix",
            "run_redteam": "fedfort.redteam.matrix",
            "write_report": "fedfort.redteam.report",
            "summarize": "fedfort.redteam.summary",
        },
        globals(),
    )
