"""Formatting shared by the ``fedfort`` commands."""

from __future__ import annotations

__all__ = ["number"]


def number(value: float | None, digits: int, missing: str) -> str:
    """``value`` with ``digits`` decimals, or ``missing`` when there is no value."""
    return missing if value is None else f"{value:.{digits}f}"
