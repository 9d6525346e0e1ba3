"""Options shared by more than one ``fedfort`` command."""

from __future__ import annotations

import argparse

__all__ = ["monitoring_arguments"]


def monitoring_arguments(parser: argparse.ArgumentParser) -> None:
    """``--metrics`` and ``--dashboard``: live endpoints of a running federation."""
    parser.add_argument(
        "--metrics", metavar="HOST:PORT", help="serve Prometheus /metrics, e.g. 127.0.0.1:9464"
    )
    parser.add_argument(
        "--dashboard", metavar="HOST:PORT", help="serve the live dashboard, e.g. 127.0.0.1:8321"
    )
    parser.add_argument(
        "--operator",
        metavar="HOST:PORT",
        help="serve the operator API (needs [access]), e.g. 127.0.0.1:8443",
    )
