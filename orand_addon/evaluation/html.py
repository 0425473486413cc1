"""Building blocks of the HTML reports (``evaluate --report`` and the demo's report): one self-contained page,
pictures embedded, numbers as tables.

Example grids are HTML, one picture per panel with its caption, wrapping to the window (readable at any width;
small images are enlarged without smoothing). Heat maps come with a colour bar of their colour map, label masks
with a legend of the classes they show.

>>> print(table(["kind", "mIoU"], [["OR", "40.3"]]))
<table><tr><th>kind</th><th>mIoU</th></tr><tr><td>OR</td><td>40.3</td></tr></table>
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..io.images import voc_palette

HEAT_COLORMAP = "jet"
VOID = 255
CSS = (
    "body{font-family:sans-serif;margin:1.5em;max-width:1600px;color:#222}"
    "h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ccc}"
    "table{border-collapse:collapse;margin:.6em 0}td,th{padding:3px 9px;text-align:right;border-bottom:1px solid #eee}"
    "td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}tr.group td{font-weight:bold}"
    ".chart{max-width:100%}.row{margin:.8em 0}.row h3{font-size:.95em;margin:.2em 0}"
    ".panels{display:flex;flex-wrap:wrap;gap:6px}figure{margin:0;width:PANELpx}"
    "figure img{width:PANELpx;image-rendering:pixelated;display:block}"
    "figcaption{font-size:.8em;text-align:center;color:#444}"
    ".legend{display:flex;flex-wrap:wrap;gap:4px 14px;font-size:.85em;margin:.5em 0}"
    ".swatch{display:inline-block;width:14px;height:14px;border:1px solid #999;vertical-align:middle;"
    "margin-right:4px}.colorbar{display:flex;align-items:center;gap:8px;font-size:.85em;margin:.5em 0}"
    ".bar{width:280px;height:14px;border:1px solid #999}.note{color:#555;font-size:.9em}"
)


def esc(text: object) -> str:
    return html.escape(str(text))


def png_uri(rgb: np.ndarray) -> str:
    """A data URI of an (H, W, 3) uint8 picture (PNG)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def file_img(path: Path, alt: str = "", css: str = "chart") -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img class="{css}" src="data:image/png;base64,{data}" alt="{esc(alt or Path(path).name)}">'


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], classes: Sequence[str] = ()) -> str:
    """An HTML table; ``classes``: a CSS class per row (``group`` for bold rows)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for n, row in enumerate(rows):
        css = classes[n] if n < len(classes) else ""
        cells = "".join(f"<td>{esc(v)}</td>" for v in row)
        body.append(f'<tr class="{css}">{cells}</tr>' if css else f"<tr>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def jet_stops(n: int = 11) -> list[str]:
    """CSS colours of the heat maps' colour map at ``n`` evenly spaced values 0..1."""
    from matplotlib import colormaps

    cmap = colormaps[HEAT_COLORMAP]
    return ["#%02x%02x%02x" % tuple(int(round(255 * c)) for c in cmap(i / (n - 1))[:3]) for i in range(n)]


def colorbar(label: str) -> str:
    """A horizontal colour bar of the heat maps, 0 to 1."""
    gradient = ",".join(jet_stops())
    return (f'<div class="colorbar"><span>{esc(label)}:</span><span>0</span><div class="bar" '
            f'style="background:linear-gradient(to right,{gradient})"></div><span>1</span></div>')


def legend(class_names: Sequence[str], values: Iterable[int], void: str = "void / no prediction") -> str:
    """Swatches of the mask colours (VOC palette) of ``values`` with the class names; 255 is ``void``."""
    palette = voc_palette()
    items = []
    for v in sorted(set(int(x) for x in values)):
        name = void if v == VOID else (class_names[v] if v < len(class_names) else f"class {v}")
        colour = "#%02x%02x%02x" % tuple(int(c) for c in palette[v])
        items.append(f'<span><span class="swatch" style="background:{colour}"></span>{esc(name)}</span>')
    return f'<div class="legend">{"".join(items)}</div>'


def panel(rgb: np.ndarray, caption: str) -> str:
    return f'<figure><img src="{png_uri(rgb)}" alt="{esc(caption)}"><figcaption>{esc(caption)}</figcaption></figure>'


def example_rows(rows: Sequence[tuple[str, Sequence[tuple[str, np.ndarray]]]]) -> str:
    """One block per image: its id, then its panels ``(caption, RGB)`` side by side, wrapping."""
    return "".join(f'<div class="row"><h3>{esc(image_id)}</h3><div class="panels">'
                   + "".join(panel(rgb, caption) for caption, rgb in panels) + "</div></div>"
                   for image_id, panels in rows)


def panel_width(columns: int, page_px: int = 1330) -> int:
    """Pixels per panel so that ``columns`` panels fit one line of a ``page_px`` page (150 to 240).

    >>> panel_width(8), panel_width(3), panel_width(12)
    (160, 240, 150)
    """
    return max(150, min(240, page_px // max(columns, 1) - 6))


def page(title: str, body: str, panel_px: int = 200) -> str:
    """The whole document."""
    css = CSS.replace("PANEL", str(panel_px))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title><style>{css}</style>"
            f"</head><body><h1>{esc(title)}</h1>{body}</body></html>\n")
