"""Reading a report page back: its images, links and sections, statically and in a browser."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

from PIL import Image

PNG_PREFIX = "data:image/png;base64,"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


class Page(HTMLParser):
    """Everything the checks need from one HTML document: its ``<img>`` attributes, every
    ``(tag, attribute, value)`` that can reference a resource, the section ids, and the
    count of external scripts and ``<link>`` elements."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.images: list[dict[str, str | None]] = []
        self.references: list[tuple[str, str, str]] = []
        self.sections: list[str] = []
        self.scripts_with_src = 0
        self.links = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for name in ("src", "href", "srcset", "action", "poster", "data"):
            if values.get(name):
                self.references.append((tag, name, str(values[name])))
        if tag == "img":
            self.images.append(values)
        if tag == "section" and values.get("id"):
            self.sections.append(str(values["id"]))
        if tag == "script" and values.get("src"):
            self.scripts_with_src += 1
        if tag == "link":
            self.links += 1


def parse(text: str) -> Page:
    page = Page()
    page.feed(text)
    page.close()
    return page


def decode_png(uri: str) -> Image.Image:
    """The image of a ``data:image/png;base64,...`` URI, fully decoded (raises if broken)."""
    assert uri.startswith(PNG_PREFIX), uri[:40]
    data = base64.b64decode(uri[len(PNG_PREFIX) :], validate=True)
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    image.load()
    return image


def section_html(text: str, section_id: str) -> str:
    """The markup of ``<section id="section_id">`` (sections are not nested)."""
    match = re.search(rf'<section id="{re.escape(section_id)}">(.*?)</section>', text, re.S)
    assert match, f"no section {section_id!r}"
    return match.group(1)


def find_browser() -> str | None:
    """A headless-capable Chromium on this machine, or ``None``."""
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def browser_body(browser: str, page: Path, profile: Path) -> dict[str, str]:
    """Open ``page`` in headless Chromium (offline flags) and return the data attributes its
    inline script wrote on ``<body>`` after the load event (``images-loaded`` ...)."""
    command = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--dump-dom",
        page.resolve().as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    body = re.search(r"<body([^>]*)>", done.stdout)
    assert body, "no <body> in the dumped DOM"
    return dict(re.findall(r'data-([a-z-]+)="([^"]*)"', body.group(1)))
