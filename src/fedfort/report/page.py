"""The page every fedfort HTML report is: one stylesheet, one shell, titled sections.

:func:`html_page` wraps a report's body in a complete, self-contained document: the
:data:`STYLESHEET` inline in a ``<style>`` element, no script and no reference to another host,
so the file reads the same offline and in print. :func:`section` is one ``<h2>`` section of it.
The compliance report (:mod:`fedfort.report.html`) and the red-team reports
(:mod:`fedfort.report.document`) are both built on them, so they look alike.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from fedfort.report.markup import esc

__all__ = ["STYLESHEET", "html_page", "section"]

#: the CSS of every report: tables that fit the page (long text cells wrap anywhere, numeric cells
#: and times never, a table wider than a narrow screen scrolls in its own box), right-aligned
#: numeric cells, shortened hashes that open to their full value, badges for statuses (``ok``,
#: ``warn``, ``bad``, ``info``), an alert box, figures with captions, print rules
STYLESHEET: Final = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif;
       margin: 2rem auto; max-width: 78rem; padding: 0 1rem; color: #1d1d1d;
       line-height: 1.45; }
h1 { border-bottom: 2px solid #ccc; padding-bottom: .3rem; margin-bottom: .4rem; }
h2 { margin-top: 2.2rem; border-bottom: 1px solid #e2e2e2; padding-bottom: .2rem; }
table { border-collapse: collapse; margin: .6rem 0; font-size: .9rem; }
th, td { border: 1px solid #ccc; padding: .28rem .55rem; text-align: left;
         vertical-align: top; }
th { background: #f0f0f0; }
tbody tr:nth-child(even) { background: #fafafa; }
td.long { overflow-wrap: anywhere; min-width: 14rem; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap;
         overflow-wrap: normal; }
.table-wrap { max-width: 100%; overflow-x: auto; }
time { white-space: nowrap; }
details.digest { display: inline-block; vertical-align: top; }
details.digest summary { cursor: pointer; white-space: nowrap; }
details.digest code.full { display: block; user-select: all; }
code, pre { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace;
            font-size: .85rem; }
code { overflow-wrap: anywhere; }
pre { background: #f6f6f6; border: 1px solid #ddd; padding: .8rem; overflow-x: auto; }
ul.kv { margin: 0; padding-left: 1.1rem; }
.badge { display: inline-block; padding: .05rem .5rem; border-radius: .7rem;
         font-weight: 600; font-size: .85rem; white-space: nowrap; }
.ok { background: #dff3e3; color: #14532d; }
.warn { background: #fff3cd; color: #6b4e00; }
.bad { background: #fde2e1; color: #b00020; }
.info { background: #e8eef8; color: #1e3a6e; }
.alert { border: 3px solid #b00020; background: #fde2e1; color: #b00020; padding: .8rem 1rem;
         font-weight: 600; margin: 1rem 0; }
.muted { color: #666; }
.fail { color: #b00020; font-weight: 700; }
figure { margin: .8rem 0; display: inline-block; vertical-align: top; }
figcaption { font-size: .85rem; color: #555; }
img { max-width: 100%; height: auto; }
@media print { body { margin: 0; max-width: none; } h2 { break-after: avoid; }
               figure, tr { break-inside: avoid; } .table-wrap { overflow: visible; } }
"""


def section(heading: str, *body: str) -> list[str]:
    """The lines of one ``<section>``: its escaped ``<h2>`` heading, then ``body`` (markup)."""
    return ["<section>", f"<h2>{esc(heading)}</h2>", *body, "</section>"]


def html_page(title: str, body: Iterable[str]) -> str:
    """A complete HTML document titled ``title`` (escaped) around ``body`` (lines of markup).

    The title is both the ``<title>`` and the ``<h1>``; empty lines of ``body`` are dropped.
    """
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title>",
        f"<style>{STYLESHEET}</style>",
        "</head>",
        "<body>",
        f"<h1>{esc(title)}</h1>",
        *body,
        "</body>",
        "</html>",
    ]
    return "\n".join(p for p in parts if p) + "\n"
