"""Strict JSON: every JSON document fedfort writes goes through :func:`dumps`.

Python's :func:`json.dumps` writes ``NaN``, ``Infinity`` and ``-Infinity`` by default. Those
tokens are not JSON (RFC 8259, section 6): strict parsers (browsers' ``JSON.parse``, ``jq``,
Go, Rust's ``serde_json``) refuse the whole file, and a client that reports ``train_loss = inf``
could otherwise make a run's ``results.json`` unreadable to every tool an auditor uses.
:func:`dumps` never writes them. A non-finite float is handled by one of two rules, chosen by
the writer:

- ``"error"`` (default): raise :class:`~fedfort.errors.NonFiniteValue` naming where the value
  sits (``rounds[2].loss``). For documents whose values are state or identity (configs,
  checkpoint state, hashes' inputs, requests): a null there would silently change meaning.
- ``"null"``: write ``null``. For documents of measurements (``results.json``, reports, the
  dashboard and API responses): a measured quantity that is not a number (the test loss of a
  diverged model) has no value, and ``null`` is how these files already say "no value".

NumPy scalars are written as the Python numbers they hold. :func:`loads` is the matching
strict reader: it refuses the three non-standard tokens.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np

from fedfort.errors import NonFiniteValue

__all__ = ["NonFiniteRule", "dumps", "loads", "write_json"]

NonFiniteRule = Literal["error", "null"]


def dumps(
    value: Any,
    *,
    non_finite: NonFiniteRule = "error",
    indent: int | None = None,
    sort_keys: bool = False,
    separators: tuple[str, str] | None = None,
    ensure_ascii: bool = True,
    default: Callable[[Any], Any] | None = None,
) -> str:
    """``value`` as strict JSON text; non-finite floats follow ``non_finite`` (see above)."""
    if non_finite not in ("error", "null"):
        raise ValueError(f"non_finite must be 'error' or 'null', got {non_finite!r}")
    return json.dumps(
        _finite(value, "$", non_finite),
        allow_nan=False,
        indent=indent,
        sort_keys=sort_keys,
        separators=separators,
        ensure_ascii=ensure_ascii,
        default=default,
    )


def write_json(
    path: str | Path, value: Any, *, non_finite: NonFiniteRule = "error", indent: int = 2
) -> Path:
    """Write ``value`` to ``path`` as strict, indented JSON (UTF-8); return the path."""
    out = Path(path)
    out.write_text(dumps(value, non_finite=non_finite, indent=indent) + "\n", encoding="utf-8")
    return out


def _reject_constant(token: str) -> Any:
    raise ValueError(f"{token} is not JSON (RFC 8259): the document was not written strictly")


def loads(text: str | bytes) -> Any:
    """Parse strict JSON: ``NaN``, ``Infinity`` and ``-Infinity`` raise :class:`ValueError`."""
    return json.loads(text, parse_constant=_reject_constant)


def _finite(node: Any, path: str, rule: NonFiniteRule) -> Any:
    """``node`` with NumPy scalars made plain and non-finite floats handled by ``rule``."""
    if isinstance(node, np.generic):
        node = node.item()
    if isinstance(node, float):
        if math.isfinite(node):
            return node
        if rule == "null":
            return None
        raise NonFiniteValue(path, node)
    if isinstance(node, dict):
        return {k: _finite(v, f"{path}.{k}", rule) for k, v in node.items()}
    if isinstance(node, list | tuple):
        return [_finite(v, f"{path}[{i}]", rule) for i, v in enumerate(node)]
    return node
