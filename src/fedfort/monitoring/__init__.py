"""Monitoring: Prometheus metrics, the run dashboard and its state reader.

- :mod:`~fedfort.monitoring.metrics`: :class:`FederationMetrics` (a commit hook) and
  :class:`MetricsServer` (``/metrics``);
- :mod:`~fedfort.monitoring.run_state`: :func:`read_run`, a run directory's state;
- :mod:`~fedfort.monitoring.dashboard`: :class:`DashboardServer`, the live page.
"""

from typing import TYPE_CHECKING

from fedfort._lazy import lazy_exports

if TYPE_CHECKING:
    from fedfort.monitoring.dashboard import DashboardServer, serve_dashboard
    from fedfort.monitoring.metrics import FederationMetrics, MetricsServer
    from fedfort.monitoring.run_state import read_run

__all__ = ["DashboardServer", "FederationMetrics", "MetricsServer", "read_run", "serve_dashboard"]

if not TYPE_CHECKING:  # type checkers see the imports above; typos stay errors
    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "DashboardServer": "fedfort.monitoring.dashboard",
            "serve_dashboard": "fedfort.monitoring.dashboard",
            "FederationMetrics": "fedfort.monitoring.metrics",
            "MetricsServer": "fedfort.monitoring.metrics",
            "read_run": "fedfort.monitoring.run_state",
        },
        globals(),
    )
