"""Warnings that point at the user's line, however deep inside xaikit they are raised."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

_PACKAGE = str(Path(__file__).resolve().parent)


def warn_user(message: str | Warning, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn`` with the stack level of the first frame outside xaikit (a
    ``Warning`` instance as ``message`` is its own category and keeps its attributes).

    A fixed ``stacklevel`` is wrong as soon as one entry point wraps another (the callable
    ``xaikit.explain`` package, the evaluation suite, the CLI); counting our own frames is not.
    """
    level, frame = 2, sys._getframe(1)  # level 1 is this function, 2 its caller
    while frame is not None and str(Path(frame.f_code.co_filename).resolve()).startswith(_PACKAGE):
        level += 1
        frame = frame.f_back
    warnings.warn(message, category, stacklevel=level)
