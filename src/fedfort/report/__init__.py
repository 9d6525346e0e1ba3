"""The compliance report of a run: one self-contained HTML file an auditor can file.

- :mod:`~fedfort.report.html`: :func:`build_report` renders it, :func:`write_report` writes
  ``RUN/report.html`` (what ``fedfort report RUN`` calls).
"""

from fedfort.report.html import REPORT_FILE, build_report, write_report

__all__ = ["REPORT_FILE", "build_report", "write_report"]
