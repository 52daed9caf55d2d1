"""One self-contained HTML page: inline CSS, tables as HTML, figures as base64 PNG and
(optionally) image thumbnails as base64 JPEG. It links to nothing, so it opens offline and
survives being mailed or moved on its own.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ensemble_dfd.data.jpeg import encode_jpeg
from ensemble_dfd.runio import write_text

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1200px;padding:0 1em;color:#222;line-height:1.4}
h1{border-bottom:2px solid #444}h2{border-bottom:1px solid #bbb;margin-top:2em}
table{border-collapse:collapse;font-size:0.82em;margin:0.5em 0 1em}
th,td{border:1px solid #ccc;padding:2px 6px;text-align:right}
th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}
tr:nth-child(even) td{background:#fafafa}
.scroll{overflow-x:auto;max-height:32em;overflow-y:auto}
figure{display:inline-block;margin:0.5em;vertical-align:top}
figure img{max-width:100%;border:1px solid #ddd}figcaption{font-size:0.85em;color:#555}
.note{background:#fff6d6;border-left:4px solid #e0b000;padding:0.5em 1em}
.warn{background:#fde2e2;border-left:4px solid #c00;padding:0.5em 1em}
.thumbs{display:flex;flex-wrap:wrap;gap:8px}.thumbs figure{width:120px;margin:0}
.thumbs img{width:112px;height:auto}
code{background:#f3f3f3;padding:0 3px}
.answer{border:1px solid #ccc;border-radius:6px;padding:0.6em 1em;margin:0.8em 0}
.answer h3{margin:0.1em 0 0.4em}.answer .cols{display:flex;flex-wrap:wrap;gap:1em}
.answer .text{flex:1 1 300px;min-width:280px}.answer .fig{flex:2 1 600px}
.answer td{white-space:nowrap}.answer td:last-child{white-space:normal}
.answer .fig figure{margin:0}.headline{font-size:1.15em;font-weight:600;margin:0.2em 0}
.v-yes{border-left:6px solid #2a8f2a}.v-no{border-left:6px solid #c0392b}
.v-undecided,.v-not-measured{border-left:6px solid #e0b000}
.v-measured{border-left:6px solid #3070b0}
.badge{display:inline-block;font-size:0.8em;padding:1px 8px;border-radius:4px;color:#fff;
background:#777;margin-right:0.3em;vertical-align:middle}.v-yes .badge{background:#2a8f2a}
.v-no .badge{background:#c0392b}.v-undecided .badge,.v-not-measured .badge{background:#b08800}
.v-measured .badge{background:#3070b0}
details{margin:0.4em 0}.caption{font-weight:600;margin:0.8em 0 0.2em}
summary{cursor:pointer;font-weight:600}details td,details th{white-space:nowrap}
.meta{font-size:0.85em;color:#555}
"""


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def table_html(df: pd.DataFrame, digits: int = 3, max_rows: int | None = None) -> str:
    """An escaped HTML table; floats rounded, NaN as an em dash, long tables cut."""
    shown = df if max_rows is None or len(df) <= max_rows else df.head(max_rows)

    def fmt(v: float) -> str:
        return "—" if not np.isfinite(v) else f"{v:.{digits}f}"

    out = shown.to_html(index=False, escape=True, na_rep="—", float_format=fmt, border=0)
    if shown is not df:
        out += (f"<p><em>First {max_rows} of {len(df)} rows; the CSV beside this page has "
                "them all.</em></p>")
    return f'<div class="scroll">{out}</div>'


@dataclass
class HtmlReport:
    """Builds the page piece by piece; `render()` returns it, `write()` saves it."""

    title: str
    parts: list[str] = field(default_factory=list)

    def heading(self, text: str, level: int = 2, anchor: str | None = None) -> None:
        a = f' id="{html.escape(anchor)}"' if anchor else ""
        self.parts.append(f"<h{level}{a}>{html.escape(text)}</h{level}>")

    def paragraph(self, text: str, css: str | None = None, anchor: str | None = None,
                  badge: str | None = None) -> None:
        """Plain text (escaped); `css` picks a box style such as 'note' or 'warn'; `badge`
        puts a short label (a verdict) in front."""
        cls = f' class="{css}"' if css else ""
        a = f' id="{html.escape(anchor)}"' if anchor else ""
        b = f'<span class="badge">{html.escape(badge)}</span> ' if badge else ""
        self.parts.append(f"<p{a}{cls}>{b}{html.escape(text)}</p>")

    def open(self, tag: str, css: str | None = None, anchor: str | None = None,
             summary: str | None = None) -> None:
        """Open a container (`div`, `section`, `details` with its `summary`); close it with
        `close(tag)`."""
        cls = f' class="{html.escape(css)}"' if css else ""
        a = f' id="{html.escape(anchor)}"' if anchor else ""
        s = f"<summary>{html.escape(summary)}</summary>" if summary is not None else ""
        self.parts.append(f"<{tag}{a}{cls}>{s}")

    def close(self, tag: str) -> None:
        self.parts.append(f"</{tag}>")

    def bullets(self, items: Sequence[str]) -> None:
        self.parts.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in items)
                          + "</ul>")

    def table(self, df: pd.DataFrame, digits: int = 3, max_rows: int | None = 200) -> None:
        self.parts.append(table_html(df, digits, max_rows))

    def figure(self, png: str | Path | bytes, caption: str = "",
               anchor: str | None = None) -> None:
        """Embed a PNG (a path or its bytes) as a data URI."""
        data = Path(png).read_bytes() if isinstance(png, str | Path) else png
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        a = f' id="{html.escape(anchor)}"' if anchor else ""
        self.parts.append(f'<figure><img{a} alt="{html.escape(caption)}" '
                          f'src="{data_uri(data, "image/png")}">{cap}</figure>')

    def thumbnails(self, items: Sequence[tuple[str, bytes]]) -> None:
        """A row of small JPEGs with captions (hard images)."""
        figs = "".join(f'<figure><img alt="{html.escape(c)}" src="{data_uri(d, "image/jpeg")}">'
                       f"<figcaption>{html.escape(c)}</figcaption></figure>" for c, d in items)
        self.parts.append(f'<div class="thumbs">{figs}</div>')

    def render(self) -> str:
        body = "\n".join(self.parts)
        return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                f"<title>{html.escape(self.title)}</title>\n<style>{CSS}</style>\n</head>\n"
                f"<body>\n<h1>{html.escape(self.title)}</h1>\n{body}\n</body>\n</html>\n")

    def write(self, path: str | Path) -> Path:
        return write_text(path, self.render())


def thumbnail_jpeg(rgb: np.ndarray, max_side: int = 112, quality: int = 80) -> bytes:
    """A small JPEG of an RGB uint8 image (longest side at most `max_side`)."""
    import cv2

    h, w = rgb.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale < 1.0:
        rgb = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))),
                         interpolation=cv2.INTER_AREA)
    return encode_jpeg(rgb, quality)
