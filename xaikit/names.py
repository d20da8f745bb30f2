"""Names from outside (file names, class names) made safe to store, show and name files after.

One place for the rules, torch-free (the command line imports it before any heavy module):

* **Text** (:func:`display`): a file name that is not valid UTF-8 reaches Python as a ``str``
  with lone surrogates (``os.fsdecode``'s ``surrogateescape``: the byte ``0xE9`` becomes
  ``"\\udce9"``). Such a ``str`` cannot be written as UTF-8 (JSON, terminals), so it is stored
  and printed with each undecodable byte written as ``\\xNN`` (``b"caf\\xe9.png"`` ->
  ``"caf\\\\xe9.png"``, Python's ``backslashreplace``); any other lone surrogate as
  ``\\udNNN``. :func:`source_bytes` gives the exact bytes (hex) for the records that need
  them. :func:`json_safe` applies :func:`display` to every string of a JSON value.
* **File names** (:func:`file_component`): a name used as a file or folder name loses path
  separators (``/``, ``\\``), control characters and undecodable bytes (each becomes
  ``_``), and leading dots (``.`` -> ``_``: no hidden files, no ``..``); a name longer than
  :data:`FILE_NAME_LIMIT` bytes of UTF-8 is cut (at a character boundary, keeping a short
  extension) and gets ``_`` and 8 hex digits of the SHA-256 of the whole name, so two long
  names that share their beginning stay apart. The full name stays in the records.
* **Class names** (:func:`check_class_names`): a list (or tuple) of strings. Numbers become
  their ``str`` (``1`` -> ``"1"``); ``None``, booleans, dicts, lists and other objects are
  refused with one line naming the index, and so is a name longer than
  :data:`MAX_CLASS_NAME` characters (a 10 MB name cost minutes and gigabytes to draw).
  Figures show at most :data:`DISPLAY_LIMIT` characters of a name (:func:`short_label`),
  never parsed as matplotlib mathtext.
"""

from __future__ import annotations

import hashlib
import math
import numbers
import re
import unicodedata
from collections.abc import Iterable
from typing import Any

#: Longest output file or folder name made from an outside name, in bytes of UTF-8 (file
#: systems allow 255; the rest is left for suffixes such as ``.figure.png`` or ``~2``).
FILE_NAME_LIMIT = 100
#: Longest class name accepted, in characters.
MAX_CLASS_NAME = 1000
#: Longest part of a class name shown in a figure title, in characters.
DISPLAY_LIMIT = 60

_SURROGATES = re.compile("[\ud800-\udfff]")
_FILE_UNSAFE = re.compile("[/\\\\\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_EXTENSION = re.compile(r"\.[A-Za-z0-9]{1,8}$")


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"


def display(text: str) -> str:
    """``text`` as valid Unicode: each undecodable byte of a file name (a ``surrogateescape``
    surrogate) as ``\\xNN``, any other lone surrogate as ``\\uNNNN``; other text unchanged."""
    if not _SURROGATES.search(text):
        return text
    return _SURROGATES.sub(lambda m: _escape(m.group()), text)


#: :func:`display` under a name that does not clash with pictures called ``display``.
printable = display


def source_bytes(text: str) -> str | None:
    """The hex of a path's bytes when :func:`display` changes it (a non-UTF-8 file name), so
    the record still names the file exactly; ``None`` for ordinary names."""
    if not _SURROGATES.search(text):
        return None
    return text.encode("utf-8", "surrogateescape" if _only_escapes(text) else "surrogatepass").hex()


def _only_escapes(text: str) -> bool:
    return all(0xDC80 <= ord(c) <= 0xDCFF for c in _SURROGATES.findall(text))


def json_safe(value: Any) -> Any:
    """A JSON value with :func:`display` applied to every string (keys too): it can always be
    encoded as UTF-8."""
    if isinstance(value, str):
        return display(value)
    if isinstance(value, dict):
        return {(display(k) if isinstance(k, str) else k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def _digest(text: str) -> str:
    data = text.encode("utf-8", "surrogatepass")
    return hashlib.sha256(data).hexdigest()[:8]


def _cut(text: str, limit: int) -> str:
    """The longest prefix of ``text`` of at most ``limit`` bytes of UTF-8."""
    return text.encode("utf-8")[: max(0, limit)].decode("utf-8", "ignore")


def bound(name: str, limit: int = FILE_NAME_LIMIT, *, original: str | None = None) -> str:
    """``name`` when it has at most ``limit`` bytes of UTF-8; else cut, with ``_`` and 8 hex
    digits of the SHA-256 of ``original`` (default ``name``) before a short extension."""
    if len(name.encode("utf-8")) <= limit:
        return name
    ext = _EXTENSION.search(name)
    suffix = ext.group() if ext else ""
    tag = "_" + _digest(name if original is None else original)
    return _cut(name[: len(name) - len(suffix)], limit - len(tag) - len(suffix)) + tag + suffix


def file_component(name: str, limit: int = FILE_NAME_LIMIT) -> str:
    """``name`` made into one file or folder name: no path separators, control characters
    or undecodable bytes (``_`` instead), no leading dot, at most ``limit`` bytes (see
    :func:`bound`). ``"cat.png"`` stays ``"cat.png"``."""
    safe = _FILE_UNSAFE.sub("_", name)
    dots = len(safe) - len(safe.lstrip("."))
    safe = "_" * dots + safe[dots:]
    return bound(safe or "_", limit, original=name)


def file_key(parts: Iterable[str], limit: int = FILE_NAME_LIMIT) -> str:
    """A relative POSIX path whose every part went through :func:`file_component`."""
    return "/".join(file_component(part, limit) for part in parts)


# -- class names -----------------------------------------------------------------------------


def _class_error(message: str) -> Exception:
    from xaikit.errors import XaikitConfigError

    return XaikitConfigError(message)


def class_name(value: Any, index: int) -> str:
    """One class name as a ``str``: strings as they are, numbers as their ``str``.

    Raises:
        XaikitConfigError: ``None``, a bool, a dict, list or other object, a NaN, or a name
            longer than :data:`MAX_CLASS_NAME` characters; the message names ``index``.
    """
    where = f"class_names[{index}]"
    if isinstance(value, str):
        if len(value) > MAX_CLASS_NAME:
            raise _class_error(
                f"{where} is {len(value):,} characters long; a class name may have at most "
                f"{MAX_CLASS_NAME:,} characters (shorten it in the model card)"
            )
        return value
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        if isinstance(value, numbers.Integral):
            return str(int(value))
        number = float(value)
        if math.isfinite(number):
            return repr(number)
    raise _class_error(
        f"{where} is {_describe(value)}; every class name must be a string (numbers are "
        "accepted and read as text)"
    )


def _describe(value: Any) -> str:
    """``null``, ``a dict``, ``True (a bool)``: what a refused value is, briefly."""
    if value is None:
        return "null"
    kind = type(value).__name__
    if isinstance(value, (dict, list, tuple, set, str, bytes)):
        return f"a {kind} of length {len(value)}" if not isinstance(value, str) else "a string"
    text = repr(value)
    text = text if len(text) <= 40 else text[:37] + "..."
    return f"{text} (a {kind})"


def check_class_names(names: Any) -> list[str] | None:
    """``names`` as a list of ``str`` (see :func:`class_name`), or ``None`` for ``None``.

    Raises:
        XaikitConfigError: ``names`` is not a list or tuple (a string, a dict, a number), or
            one entry is refused by :func:`class_name`; one line.
    """
    if names is None:
        return None
    if isinstance(names, (str, bytes, dict)) or not isinstance(names, (list, tuple)):
        raise _class_error(
            f"class_names must be a list of names, one per class; got {_describe(names)}"
        )
    return [class_name(value, i) for i, value in enumerate(names)]


def short_label(name: str, limit: int = DISPLAY_LIMIT) -> str:
    """``name`` for a figure: valid Unicode, control characters as spaces, at most ``limit``
    characters (cut with ``...``). Draw it with mathtext off (``parse_math=False``)."""
    text = display(name[: limit * 4] if len(name) > limit * 4 else name)
    text = "".join(" " if unicodedata.category(c) == "Cc" else c for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."
