"""The compliance report of a run: one self-contained HTML file an auditor can file.

- :mod:`~fedfort.report.html`: :func:`build_report` renders it, :func:`write_report` writes
  ``RUN/report.html`` (what ``fedfort report RUN`` calls).
"""

from typing import TYPE_CHECKING

from fedfort._lazy import lazy_exports

if TYPE_CHECKING:
    from fedfort.report.html import REPORT_FILE, build_report, write_report

__all__ = ["REPORT_FILE", "build_report", "write_report"]

if not TYPE_CHECKING:  # type checkers see the imports above; typos stay errors
    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "REPORT_FILE": "fedfort.report.html",
            "build_report": "fedfort.report.html",
            "write_report": "fedfort.report.html",
        },
        globals(),
    )
