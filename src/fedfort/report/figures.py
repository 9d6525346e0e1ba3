"""Figures in a report: a matplotlib figure as PNG bytes, a data URI, and its ``<figure>``.

A self-contained page embeds its figures as ``data:image/png;base64`` URIs
(:func:`data_uri`); a page that ships beside its PNG files links them by relative path. Both
go through :func:`figure`, which escapes the source, the alternative text and the caption.
PNGs are written without the ``Software`` metadata tag, so the same figure gives the same bytes
whichever matplotlib drew it.
"""

from __future__ import annotations

import base64
import io
from typing import TYPE_CHECKING

from fedfort.report.markup import esc

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["data_uri", "figure", "png_bytes"]


def png_bytes(fig: Figure, dpi: int) -> bytes:
    """``fig`` laid out tightly and rendered as PNG at ``dpi`` dots per inch."""
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    return buffer.getvalue()


def data_uri(png: bytes) -> str:
    """A ``data:image/png;base64`` URI carrying ``png``, for a page with no file beside it."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def figure(src: str, alt: str, caption: str | None = None) -> str:
    """A ``<figure>`` showing the image at ``src`` (a relative path or a data URI)."""
    caption_html = "" if caption is None else f"<figcaption>{esc(caption)}</figcaption>"
    return f'<figure><img src="{esc(src)}" alt="{esc(alt)}">{caption_html}</figure>'
