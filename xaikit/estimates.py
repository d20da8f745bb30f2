"""How big a run will be, announced before it starts, and the limits past which the CLI asks.

The estimates are rough but honest: file counts are exact (they follow the output layout),
bytes are upper-bound-ish guesses from the image sizes, and time comes from a one-unit probe
where one is cheap (``None`` where it is not). A command prints the estimate when the run
is notable (over a tenth of a limit, or over a minute); past any limit below it refuses
with exit code 2 and one line, unless it is given ``--yes``.

Limits (each can be lowered or raised with its environment variable, e.g. for a test or a
big machine):

=====================  ==================  ======================================
limit                  default             environment variable
=====================  ==================  ======================================
files to write         more than 1,000     ``XAIKIT_LIMIT_FILES``
bytes to write         more than 200 MB    ``XAIKIT_LIMIT_BYTES``
estimated time         more than 600 s     ``XAIKIT_LIMIT_SECONDS``
=====================  ==================  ======================================

This module imports neither torch nor numpy, so the CLI's ``--help`` stays fast.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

LIMIT_FILES = 1_000
LIMIT_BYTES = 200_000_000
LIMIT_SECONDS = 600.0
# Runs longer than this (estimated) are announced even under the limits.
ANNOUNCE_SECONDS = 60.0

# A titled figure PNG (matplotlib, about 5 x 4 inches at 100 dpi) is about this large.
FIGURE_BYTES = 100_000
# Maps written per target and method by `xaikit explain`: overlay, figure, map, raw map.
FILES_PER_MAP = 4


def limits() -> tuple[int, int, float]:
    """``(files, bytes, seconds)``: the limits, from the environment or the defaults."""

    def read(name: str, default: float) -> float:
        text = os.environ.get(name, "").strip()
        try:
            return float(text) if text else default
        except ValueError:
            return default

    return (
        int(read("XAIKIT_LIMIT_FILES", LIMIT_FILES)),
        int(read("XAIKIT_LIMIT_BYTES", LIMIT_BYTES)),
        read("XAIKIT_LIMIT_SECONDS", LIMIT_SECONDS),
    )


def human_bytes(count: float) -> str:
    """``1234567`` -> ``"1.2 MB"`` (powers of 1000)."""
    for unit in ("B", "kB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} GB"  # pragma: no cover


def human_seconds(seconds: float) -> str:
    """``4000`` -> ``"1 h 07 min"``, ``75`` -> ``"1 min 15 s"``, ``9.5`` -> ``"10 s"``."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{math.ceil(seconds)} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


@dataclass(frozen=True)
class Estimate:
    """The size of a run.

    Attributes:
        what: the run, e.g. ``"explain"``.
        units: the units of work (maps, channels, masked batches).
        unit: their name, plural.
        steps: optimization or forward steps in all (``None`` when not meaningful).
        files: files the run writes, exactly.
        bytes: bytes it writes, roughly.
        seconds: estimated wall time (``None``: no cheap probe).
        note: more detail for the line, e.g. Score-CAM's masked batches.
    """

    what: str
    units: int
    unit: str
    steps: int | None
    files: int
    bytes: int
    seconds: float | None = None
    note: str = ""

    def line(self) -> str:
        """One line: ``"explain: 4000 maps, 4002 files, about 540.0 MB"``."""
        parts = [f"{self.units} {self.unit}"]
        if self.steps is not None:
            parts.append(f"{self.steps} steps")
        parts.append(f"{self.files} files")
        parts.append(f"about {human_bytes(self.bytes)}")
        if self.seconds is not None:
            parts.append(f"about {human_seconds(self.seconds)}")
        if self.note:
            parts.append(self.note)
        return f"{self.what}: " + ", ".join(parts)

    def notable(self) -> bool:
        """Worth announcing: over a tenth of a limit (files, bytes) or over
        :data:`ANNOUNCE_SECONDS`. Small runs stay silent."""
        files, size, _seconds = limits()
        return (
            self.files > files / 10
            or self.bytes > size / 10
            or (self.seconds is not None and self.seconds > ANNOUNCE_SECONDS)
        )

    def over(self) -> list[str]:
        """The limits this run exceeds, as phrases (empty: none)."""
        files, size, seconds = limits()
        reasons = []
        if self.files > files:
            reasons.append(f"{self.files} files > {files}")
        if self.bytes > size:
            reasons.append(f"{human_bytes(self.bytes)} > {human_bytes(size)}")
        if self.seconds is not None and self.seconds > seconds:
            reasons.append(f"{human_seconds(self.seconds)} > {human_seconds(seconds)}")
        return reasons

    def refusal(self, yes: bool, hint: str = "") -> str | None:
        """The one-line refusal when the run exceeds a limit and ``yes`` is false, else
        ``None``. ``hint`` says how to make the run smaller."""
        reasons = self.over()
        if yes or not reasons:
            return None
        tail = f"; {hint}" if hint else ""
        return (
            f"xaikit: error: this run is large ({', '.join(reasons)}); pass --yes to run it{tail}"
        )


def explain_estimate(
    images: int,
    targets: int,
    methods: int,
    *,
    figures: bool = True,
    input_pixels: int = 224 * 224,
    image_pixels: int | None = None,
) -> Estimate:
    """``xaikit explain``: ``images x targets x methods`` maps, each an overlay PNG, a figure
    (unless ``figures=False``), a map and a raw map; plus ``results.json`` and the journal.

    Bytes: the map and the raw map at most ``4 * input_pixels + 128`` each, the overlay
    ``3 * image_pixels`` (the original image's size; default: the input size), the figure
    :data:`FIGURE_BYTES`.
    """
    maps = images * targets * methods
    per_map = FILES_PER_MAP - (0 if figures else 1)
    pixels = image_pixels if image_pixels is not None else input_pixels
    size = 2 * (4 * input_pixels + 128) + 3 * pixels + (FIGURE_BYTES if figures else 0)
    return Estimate("explain", maps, "maps", None, maps * per_map + 2, maps * size)


def maximize_estimate(
    channels: int,
    batch_size: int,
    steps: int,
    side: int,
    *,
    in_channels: int = 3,
    seconds_per_step: float | None = None,
) -> Estimate:
    """``xaikit filters --mode maximize``: one PNG and one ``.npy`` per channel, the grid
    figure, ``index.json`` and the journal. ``seconds_per_step``: the probe's time for one
    step of a full batch (``None``: no time estimate)."""
    batches = -(-channels // max(1, batch_size))
    pixels = side * side * in_channels
    size = channels * (pixels + 4 * pixels + 128) + FIGURE_BYTES
    seconds = None if seconds_per_step is None else seconds_per_step * steps * batches
    return Estimate(
        "maximize", channels, "channels", steps * batches, 2 * channels + 3, size, seconds
    )


def concepts_estimate(
    n_concepts: int,
    images: int,
    batch_size: int,
    steps: int,
    side: int,
    *,
    in_channels: int = 3,
    seconds_per_batch: float | None = None,
    seconds_per_step: float | None = None,
) -> Estimate:
    """``xaikit filters --mode concepts``: the bank (two files), its figure, one exemplar
    grid per concept, ``index.json`` and the run record. ``seconds_per_batch``: the probe's
    time for one forward and backward pass of a batch (the activation pass over the images
    and the importance estimate are a few such passes per batch); ``seconds_per_step``: one
    maximization step of all concepts (``steps`` of them)."""
    pixels = side * side * in_channels
    size = n_concepts * (8 * pixels + 4096) + 2 * FIGURE_BYTES
    seconds = None
    if seconds_per_batch is not None:
        batches = -(-images // max(1, batch_size))
        seconds = 3 * batches * seconds_per_batch + steps * (seconds_per_step or 0.0)
    return Estimate(
        "concepts", n_concepts, "concepts", steps or None, n_concepts + 5, size, seconds
    )


def scorecam_batches(
    images: int, channels: int, batch_size: int, image_batch: int | None = None
) -> int:
    """Masked forward passes of Score-CAM: ``ceil(images * channels / batch_size)``, summed
    over the image batches of ``image_batch`` images when given (each its own masked pass)."""
    step = max(1, batch_size)
    if image_batch is None or image_batch >= images:
        return -(-images * channels // step)
    full, rest = divmod(images, image_batch)
    return full * -(-image_batch * channels // step) + -(-rest * channels // step)
