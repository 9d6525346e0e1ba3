"""A report as a list of sections, rendered to Markdown and to an HTML page alike.

The red-team reports (:mod:`fedfort.redteam.report`, :mod:`fedfort.redteam.privacy_report`)
describe their content once, as :class:`Section` objects holding paragraphs, bullets, a
:class:`Table` and an :class:`Image`, and render it twice: :func:`render_markdown` for
``report.md`` and :func:`render_html` for ``report.html`` (on the shared page of
:mod:`fedfort.report.page`), so both files carry the same content. Every text is escaped for
its format: Markdown's table and inline-markup characters, HTML's special characters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from fedfort.report.figures import figure
from fedfort.report.markup import esc, table
from fedfort.report.page import html_page, section

__all__ = ["Image", "Section", "Table", "md_escape", "render_html", "render_markdown"]


@dataclass(frozen=True)
class Table:
    """A table of text cells under one row of headers."""

    headers: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class Image:
    """An image: ``src`` is a path relative to the report or a ``data:`` URI."""

    alt: str
    src: str


@dataclass(frozen=True)
class Section:
    """One titled section: paragraphs, then bullets, a table and an image when given."""

    title: str
    paragraphs: list[str] = field(default_factory=list)
    bullets: list[str] = field(default_factory=list)
    table: Table | None = None
    image: Image | None = None


def md_escape(text: str) -> str:
    """Escape what would break a table cell or be read as inline HTML/code."""
    for char in ("\\", "|", "<", ">", "`"):
        text = text.replace(char, "\\" + char)
    return text.replace("\n", " ")


def render_markdown(title: str, sections: Sequence[Section]) -> str:
    """The sections as one Markdown document under a ``#`` title."""
    lines = [f"# {md_escape(title)}", ""]
    for part in sections:
        lines += [f"## {md_escape(part.title)}", ""]
        for paragraph in part.paragraphs:
            lines += [md_escape(paragraph), ""]
        if part.bullets:
            lines += [*(f"- {md_escape(bullet)}" for bullet in part.bullets), ""]
        if part.table is not None:
            lines += [*_markdown_table(part.table), ""]
        if part.image is not None:
            lines += [f"![{md_escape(part.image.alt)}]({part.image.src})", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def _markdown_table(content: Table) -> list[str]:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(md_escape(cell) for cell in cells) + " |"

    return [line(content.headers), "|" + "---|" * len(content.headers)] + [
        line(row) for row in content.rows
    ]


def render_html(title: str, sections: Sequence[Section]) -> str:
    """The sections as one self-contained HTML page (:func:`fedfort.report.page.html_page`)."""
    body: list[str] = []
    for part in sections:
        lines = [f"<p>{esc(paragraph)}</p>" for paragraph in part.paragraphs]
        if part.bullets:
            lines += ["<ul>", *(f"<li>{esc(bullet)}</li>" for bullet in part.bullets), "</ul>"]
        if part.table is not None:
            lines.append(table(part.table.headers, part.table.rows))
        if part.image is not None:
            lines.append(figure(part.image.src, part.image.alt))
        body += section(part.title, *lines)
    return html_page(title, body)
