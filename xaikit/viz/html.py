"""Building blocks of a self-contained HTML page: inlined PNG images, tables, badges, sections.

Everything a page needs travels inside it: images are base64 ``data:image/png`` URIs, the
stylesheet and the one small script are inline, and nothing points at the network, so the file
opens from a USB stick, an e-mail attachment or a CI artifact exactly as it was written.

Images are encoded compactly: optionally downscaled, reduced to an adaptive 256-colour palette
when that is smaller (heatmap overlays and matplotlib figures lose nothing visible) and written
with PNG's ``optimize`` flag. ``escape`` every piece of text that is not markup.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from xaikit.errors import XaikitConfigError

PNG_PREFIX = "data:image/png;base64,"


def escape(value: Any) -> str:
    """``value`` as HTML text (``<``, ``>``, ``&`` and quotes escaped)."""
    return html.escape(str(value), quote=True)


def _pil(image: np.ndarray | Image.Image) -> Image.Image:
    if isinstance(image, Image.Image):
        return image
    array = np.asarray(image)
    if array.dtype != np.uint8:
        if array.dtype.kind == "f":
            array = np.clip(np.round(np.nan_to_num(array) * 255.0), 0, 255)
        array = array.astype(np.uint8)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise XaikitConfigError(
            f"an image to encode must be (H, W), (H, W, 3) or (H, W, 4), got {array.shape}"
        )
    return Image.fromarray(array)


def encode_png(
    image: np.ndarray | Image.Image,
    *,
    max_side: int | None = None,
    palette: bool = True,
    colors: int = 256,
) -> bytes:
    """An image as compact PNG bytes: ``(H, W)`` / ``(H, W, 3|4)`` uint8 (or float in
    ``[0, 1]``) or a PIL image.

    Args:
        max_side: downscale (Lanczos, aspect kept) so the longer side is at most this many
            pixels; never upscales.
        palette: also try an adaptive palette of ``colors`` colours (fast octree, no
            dithering) and keep whichever file is smaller. 128 colours are indistinguishable
            from the original for heatmap overlays and cost about 25 % fewer bytes than 256.
    """
    if not 2 <= colors <= 256:
        raise XaikitConfigError(f"colors must be between 2 and 256, got {colors}")
    picture = _pil(image)
    if picture.mode == "RGBA":
        background = Image.new("RGB", picture.size, (255, 255, 255))
        background.paste(picture, mask=picture.getchannel("A"))
        picture = background
    if max_side is not None and max(picture.size) > max_side:
        scale = max_side / max(picture.size)
        size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
        picture = picture.resize(size, Image.Resampling.LANCZOS)
    candidates = [picture]
    if palette and picture.mode == "RGB":
        candidates.append(
            picture.quantize(colors, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
        )
    best = b""
    for candidate in candidates:
        buffer = io.BytesIO()
        candidate.save(buffer, format="PNG", optimize=True)
        if not best or buffer.tell() < len(best):
            best = buffer.getvalue()
    return best


def figure_png(
    figure: Figure, *, dpi: int = 80, max_width: int | None = 900, palette: bool = True
) -> bytes:
    """A matplotlib figure rendered at ``dpi`` as compact PNG bytes, at most ``max_width``
    pixels wide (see :func:`encode_png`)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, facecolor="white")
    buffer.seek(0)
    with Image.open(buffer, formats=("PNG",)) as opened:  # matplotlib's own PNG, nothing else
        picture = opened.convert("RGB")
    if max_width is not None and picture.width > max_width:
        height = max(1, round(picture.height * max_width / picture.width))
        picture = picture.resize((max_width, height), Image.Resampling.LANCZOS)
    return encode_png(picture, palette=palette)


def data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` of PNG bytes."""
    if not png.startswith(b"\x89PNG\r\n\x1a\n"):
        raise XaikitConfigError("data_uri takes PNG bytes (they must start with the PNG magic)")
    return PNG_PREFIX + base64.b64encode(png).decode("ascii")


def img(
    png: bytes,
    alt: str,
    *,
    title: str | None = None,
    css_class: str | None = None,
    width: int | None = None,
) -> str:
    """An ``<img>`` element with the PNG inlined; ``width`` is the displayed width in CSS
    pixels (the height follows the aspect ratio)."""
    parts = [f'<img alt="{escape(alt)}"']
    if title:
        parts.append(f'title="{escape(title)}"')
    if css_class:
        parts.append(f'class="{escape(css_class)}"')
    if width is not None:
        parts.append(f'width="{int(width)}"')
    parts.append(f'src="{data_uri(png)}">')
    return " ".join(parts)


def table(
    header: Sequence[str] | None,
    rows: Iterable[Sequence[Any]],
    *,
    css_class: str | None = None,
    raw: bool = False,
    caption: str | None = None,
) -> str:
    """An HTML table. Cells are escaped text unless ``raw`` (then they are markup);
    ``header`` cells are always escaped."""
    cls = f' class="{escape(css_class)}"' if css_class else ""
    out = [f"<table{cls}>"]
    if caption:
        out.append(f"<caption>{escape(caption)}</caption>")
    if header:
        out.append(
            "<thead><tr>" + "".join(f"<th>{escape(h)}</th>" for h in header) + "</tr></thead>"
        )
    out.append("<tbody>")
    for row in rows:
        cells = (str(cell) if raw else escape(cell) for cell in row)
        out.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def key_values(items: Mapping[str, Any]) -> str:
    """A two-column table of ``key: value`` rows (values are markup: escape them first)."""
    rows = "\n".join(
        f'<tr><th scope="row">{escape(key)}</th><td>{value}</td></tr>'
        for key, value in items.items()
    )
    return f'<table class="kv">\n<tbody>\n{rows}\n</tbody></table>'


def badge(text: str, verdict: str | bool | None, *, title: str | None = None) -> str:
    """A coloured pill: green for ``"pass"`` / ``True``, red for ``"fail"`` / ``False``, grey
    otherwise."""
    if verdict is True or verdict == "pass":
        kind = "pass"
    elif verdict is False or verdict == "fail":
        kind = "fail"
    else:
        kind = "na"
    tip = f' title="{escape(title)}"' if title else ""
    return f'<span class="badge {kind}"{tip}>{escape(text)}</span>'


def fmt(value: Any, digits: int = 3) -> str:
    """A number for a table: ``digits`` decimals for floats, ``-`` for None / NaN."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.{digits}f}"
    return str(value)


def heat_cell(value: float, peak: float, text: str) -> str:
    """A ``<td>`` shaded blue in proportion to ``value / peak`` (confusion matrices)."""
    share = 0.0 if peak <= 0 else max(0.0, min(1.0, value / peak))
    colour = f"rgba(33, 102, 172, {0.85 * share:.3f})"
    ink = "#fff" if share > 0.55 else "#111"
    return f'<td style="background:{colour};color:{ink}">{escape(text)}</td>'


@dataclass(frozen=True)
class Section:
    """One ``<section id=...>`` of a page: a stable ``id``, a heading and its HTML body."""

    id: str
    title: str
    body: str

    def html(self) -> str:
        return (
            f'<section id="{escape(self.id)}">\n<h2>{escape(self.title)}</h2>\n'
            f"{self.body}\n</section>"
        )


STYLE = """
:root { --ink: #1d2733; --muted: #5b6875; --line: #d9dee4; --accent: #2166ac; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: var(--ink); margin: 0; background: #f6f7f9; }
header { background: #1d2733; color: #fff; padding: 14px 24px; }
header h1 { margin: 0 0 4px; font-size: 20px; }
header p { margin: 0; color: #c9d1da; }
nav { position: sticky; top: 0; z-index: 2; background: #fff; border-bottom: 1px solid var(--line);
      padding: 6px 24px; }
nav a { margin-right: 14px; color: var(--accent); text-decoration: none; font-weight: 600; }
main { padding: 8px 24px 40px; max-width: 1400px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 6px;
          padding: 8px 18px 16px; margin: 16px 0; overflow-x: auto; }
h2 { font-size: 17px; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
h3 { font-size: 15px; margin: 14px 0 6px; }
table { border-collapse: collapse; margin: 6px 0 10px; }
th, td { border: 1px solid var(--line); padding: 3px 7px; text-align: left; vertical-align: top; }
thead th { background: #eef1f4; }
table.kv th { background: #f3f5f7; width: 190px; font-weight: 600; }
table.num td { text-align: right; font-variant-numeric: tabular-nums; }
table.confusion td { text-align: center; min-width: 34px; }
table.gallery td { text-align: center; font-size: 12px; }
table.gallery img, img.pixel { image-rendering: pixelated; }
img { max-width: 100%; height: auto; }
img.zoomable { cursor: zoom-in; }
img.zoomed { cursor: zoom-out; width: auto; min-width: 384px; }
pre { background: #f3f5f7; padding: 8px; border-radius: 4px; overflow-x: auto; font-size: 12px; }
code { font-size: 12px; }
.note { color: var(--muted); }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px;
         font-weight: 600; margin: 1px 2px; }
.badge.pass { background: #d7f0dd; color: #14592a; }
.badge.fail { background: #f8d8d8; color: #8a1c1c; }
.badge.na { background: #e6e9ed; color: #4b5560; }
.ok { color: #14792a; font-weight: 600; }
.bad { color: #a12020; font-weight: 600; }
.best { font-weight: 700; }
figure { margin: 8px 0; }
figcaption { color: var(--muted); font-size: 12px; }
footer { color: var(--muted); padding: 0 24px 24px; font-size: 12px; }
""".strip()

# Vanilla JS, no dependencies: records whether every image decoded (body data attributes and
# the footer line, read by humans and by the headless-browser test) and lets a click enlarge
# a gallery image.
SCRIPT = """
(function () {
  function check() {
    var images = Array.prototype.slice.call(document.images);
    var broken = images.filter(function (im) { return !(im.complete && im.naturalWidth > 0); });
    var ids = Array.prototype.map.call(document.querySelectorAll("section[id]"),
                                       function (s) { return s.id; });
    document.body.dataset.imagesLoaded = (images.length - broken.length) + "/" + images.length;
    document.body.dataset.imagesBroken = broken.map(function (im) { return im.alt; }).join("|");
    document.body.dataset.sections = ids.join(" ");
    var status = document.getElementById("image-status");
    if (status) {
      status.textContent = (images.length - broken.length) + " of " + images.length +
        " images decoded" + (broken.length ? " (broken: " + broken.length + ")" : "");
    }
  }
  window.addEventListener("load", check);
  document.addEventListener("click", function (event) {
    var target = event.target;
    if (target && target.classList && target.classList.contains("zoomable")) {
      target.classList.toggle("zoomed");
    }
  });
})();
""".strip()


def page(title: str, subtitle: str, sections: Sequence[Section], footer: str = "") -> str:
    """A complete HTML document: header, a navigation bar linking every section, the
    sections, a footer (markup) and the inline stylesheet and script."""
    nav = " ".join(f'<a href="#{escape(s.id)}">{escape(s.title)}</a>' for s in sections)
    body = "\n".join(section.html() for section in sections)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>\n{STYLE}\n</style>\n</head>\n"
        f"<body>\n<header><h1>{escape(title)}</h1><p>{escape(subtitle)}</p></header>\n"
        f"<nav>{nav}</nav>\n<main>\n{body}\n</main>\n"
        f'<footer>{footer} <span id="image-status"></span></footer>\n'
        f"<script>\n{SCRIPT}\n</script>\n</body>\n</html>\n"
    )
