"""The compliance report of a run, and the report kit every fedfort report is built with.

- :mod:`~fedfort.report.html`: :func:`build_report` renders the compliance report, one
  self-contained HTML file an auditor can file, :func:`write_report` writes
  ``RUN/report.html`` (what ``fedfort report RUN`` calls).

The kit, shared with the red-team reports (:mod:`fedfort.redteam`):

- :mod:`~fedfort.report.markup`: escaping, number formats, lists and tables;
- :mod:`~fedfort.report.page`: the one stylesheet, the page shell and its sections;
- :mod:`~fedfort.report.figures`: matplotlib figures as PNGs, data URIs and ``<figure>``;
- :mod:`~fedfort.report.document`: a report as sections rendered to Markdown and HTML alike.
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
