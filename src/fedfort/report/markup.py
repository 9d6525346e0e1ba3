"""The markup helpers of the compliance report: escaping, number formats, lists and tables.

Every piece of run data reaches the page through :func:`esc` (:func:`html.escape`), except a
:class:`Raw` value, which is markup built here from escaped parts. A :data:`Cell` is anything a
table cell or a list value may hold; ``None`` shows as a dash.

Number formats: :func:`f4` (accuracy and loss, 4 decimals), :func:`eps` (epsilon spent, 6
significant digits), :func:`g` (``g`` format) and :func:`utc` (a timestamp as UTC ISO 8601,
``2026-12-07T21:04:05Z``; :func:`when` puts it in a ``<time>`` element that never wraps).

A hash reaches a table as :func:`digest`: its first :data:`SHORT_HASH` hex characters, the full
value in the ``title`` tooltip and in a ``<details>`` element that opens to show it, selectable
for copying, with no script. Long text in a cell wraps (the stylesheet breaks it anywhere), so a
table fits the page.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from fedfort import jsonio

__all__ = [
    "DASH",
    "LONG_TEXT",
    "MAX_TEXT",
    "SHORT_HASH",
    "UTC_FORMAT",
    "Cell",
    "Raw",
    "badge",
    "code",
    "digest",
    "eps",
    "esc",
    "f4",
    "g",
    "join",
    "kv",
    "number",
    "summary",
    "table",
    "truncate",
    "utc",
    "when",
]

#: longest free-text value shown in a cell (details and event bodies are diagnostics)
MAX_TEXT: Final = 240
DASH: Final = "\u2014"
#: a text cell longer than this may break anywhere, so its column never widens the table
LONG_TEXT: Final = 40
#: hex characters of a hash shown in a table (48 bits: enough to tell versions apart by eye)
SHORT_HASH: Final = 12
#: every time in a report: UTC, ISO 8601, to the second
UTC_FORMAT: Final = "%Y-%m-%dT%H:%M:%SZ"


@dataclass(frozen=True)
class Raw:
    """Markup built by this module from escaped parts; any other value is escaped."""

    html: str


Cell = Raw | str | int | float | None


def esc(value: Cell) -> str:
    if isinstance(value, Raw):
        return value.html
    if value is None:
        return DASH
    return html.escape(str(value), quote=True)


def join(*parts: Cell) -> Raw:
    return Raw("".join(esc(p) for p in parts))


def code(value: Cell) -> Raw:
    return Raw(f"<code>{esc(value)}</code>")


def digest(value: Cell) -> Raw:
    """A hash as its first :data:`SHORT_HASH` characters; the full value in the tooltip and in a
    ``<details>`` that opens to show it (a short or missing value is shown as it is)."""
    if not isinstance(value, str) or len(value) <= SHORT_HASH:
        return code(value)
    full = esc(value)
    return Raw(
        f'<details class="digest"><summary title="{full}"><code>{esc(value[:SHORT_HASH])}'
        f'</code>…</summary><code class="full">{full}</code></details>'
    )


def badge(text: str, level: str) -> Raw:
    return Raw(f'<span class="badge {level}">{esc(text)}</span>')


def truncate(text: str, limit: int = MAX_TEXT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def number(value: Any) -> float | None:
    """``value`` as a float when it is a real number (not a bool), else ``None``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def f4(value: Any) -> str | None:
    """Accuracy and loss: 4 decimals."""
    x = number(value)
    return None if x is None else f"{x:.4f}"


def eps(value: Any) -> str | None:
    """Epsilon spent: 6 significant digits (shows a spend just below the budget as such)."""
    x = number(value)
    return None if x is None else f"{x:.6g}"


def g(value: Any) -> str | None:
    x = number(value)
    return None if x is None else f"{x:g}"


def utc(ts: Any) -> str | None:
    x = number(ts)
    if x is None or not math.isfinite(x):
        return None
    return datetime.fromtimestamp(x, UTC).strftime(UTC_FORMAT)


def when(ts: Any) -> Raw | None:
    """:func:`utc` in a ``<time>`` element (machine-readable, never wrapped), or ``None``."""
    text = utc(ts)
    return None if text is None else Raw(f'<time datetime="{text}">{text}</time>')


def summary(body: Any) -> str:
    """A compact one-line rendering of an audit entry body."""
    if not isinstance(body, dict):
        return truncate(str(body))
    parts = []
    for key, value in sorted(body.items()):
        shown = (
            value
            if isinstance(value, str)
            else jsonio.dumps(value, sort_keys=True, non_finite="null")
        )
        parts.append(f"{key}={shown}")
    return truncate(", ".join(parts))


def kv(items: Iterable[tuple[str, Cell]]) -> Raw:
    """A bullet list of ``label: value`` lines."""
    lines = [f"<li><b>{esc(label)}</b>: {esc(value)}</li>" for label, value in items]
    return Raw('<ul class="kv">' + "".join(lines) + "</ul>")


def table(
    headers: Sequence[str], rows: Iterable[Sequence[Cell]], numeric: Sequence[int] = ()
) -> str:
    """An HTML table; ``numeric`` columns are right-aligned, text longer than
    :data:`LONG_TEXT` characters may wrap anywhere (a hash inside a detail, a long id)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    thead = f"<thead><tr>{head}</tr></thead>" if head else ""
    body = []
    for row in rows:
        cells = [
            f'<td class="num">{esc(c)}</td>'
            if i in numeric
            else f'<td class="long">{esc(c)}</td>'
            if isinstance(c, str) and len(c) > LONG_TEXT
            else f"<td>{esc(c)}</td>"
            for i, c in enumerate(row)
        ]
        body.append("<tr>" + "".join(cells) + "</tr>")
    # the wrapper scrolls a table wider than a narrow screen instead of the page
    return f'<div class="table-wrap"><table>{thead}<tbody>{"".join(body)}</tbody></table></div>'
