"""Declarative checks of the documents xaikit reads (model cards, recipes, training states,
histories), so a file of the wrong shape is refused in one line that names the field.

A spec is built from a few field kinds::

    spec = Table(
        {
            "lr": Number(low=0, low_open=True),
            "batch_size": Int(low=1),
            "betas": List(Number(low=0, high=1, high_open=True), length=2),
            "scheduler": Str(choices=("step", "cosine"), optional=True),
        },
        required=("lr",),
    )
    check(document, spec, where="recipe.toml", style="toml")

and a mismatch raises ``error`` (a :class:`~xaikit.errors.XaikitError` subclass) with a
message like ``recipe.toml: [train.options] lr must be a positive number, got 'abc'``.

Ints are ints: ``True`` and ``2.5`` (or ``2.0``) are not; numbers are ints or floats, never
bools, NaN or infinities. The walk follows the spec, not the data, so it never recurses
deeper than the spec does (:func:`too_deep` checks a parsed object's depth without
recursion). This module imports no torch, numpy or other heavy package.
"""

from __future__ import annotations

import math
import reprlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from xaikit.errors import XaikitConfigError, XaikitError

FieldPath = tuple[str | int, ...]

_SHOW = reprlib.Repr()
_SHOW.maxlevel, _SHOW.maxstring, _SHOW.maxother = 2, 40, 40
_SHOW.maxlist = _SHOW.maxtuple = _SHOW.maxdict = _SHOW.maxset = 4


def show(value: Any) -> str:
    """A short, one-line ``repr`` of ``value`` for a message (long values are cut)."""
    text = " ".join(_SHOW.repr(value).split())
    return text if len(text) <= 80 else text[:76] + " ..."


class Mismatch(Exception):
    """Raised inside a spec's check; :func:`check` turns it into the caller's error."""

    def __init__(self, path: FieldPath, message: str) -> None:
        super().__init__(message)
        self.path, self.message = path, message


class Spec:
    """A field kind. ``optional`` accepts ``None`` (JSON ``null``); ``describe`` replaces
    the generated "must be ..." text."""

    def __init__(self, *, optional: bool = False, describe: str | None = None) -> None:
        self.optional = optional
        self.describe = describe

    def expected(self, style: str) -> str:
        text = self.describe or self._expected(style)
        return f"{text} or null" if self.optional and style == "json" else text

    def _expected(self, style: str) -> str:  # pragma: no cover - every kind overrides it
        raise NotImplementedError

    def validate(self, value: Any, path: FieldPath, style: str) -> Any:
        if value is None and self.optional:
            return None
        return self._validate(value, path, style)

    def _validate(self, value: Any, path: FieldPath, style: str) -> Any:  # pragma: no cover
        raise NotImplementedError

    def refuse(self, value: Any, path: FieldPath, style: str) -> Mismatch:
        return Mismatch(path, f"must be {self.expected(style)}, got {show(value)}")


def is_int(value: Any) -> bool:
    """An int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite int or float, not a bool."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value)


def _range_text(low: Any, high: Any, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f" in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if low is not None:
        return f" {'>' if low_open else '>='} {low}"
    if high is not None:
        return f" {'<' if high_open else '<='} {high}"
    return ""


def _in_range(value: Any, low: Any, high: Any, low_open: bool, high_open: bool) -> bool:
    if low is not None and (value <= low if low_open else value < low):
        return False
    return not (high is not None and (value >= high if high_open else value > high))


class Int(Spec):
    """An int (not a bool, not a float) in ``[low, high]``."""

    def __init__(self, low: int | None = None, high: int | None = None, **options: Any) -> None:
        super().__init__(**options)
        self.low, self.high = low, high

    def _expected(self, style: str) -> str:
        if self.low == 1 and self.high is None:
            return "a positive int"
        return "an int" + _range_text(self.low, self.high, False, False)

    def _validate(self, value: Any, path: FieldPath, style: str) -> Any:
        if not is_int(value) or not _in_range(value, self.low, self.high, False, False):
            raise self.refuse(value, path, style)
        return value


class Number(Spec):
    """A finite int or float (not a bool) in the range; ``*_open`` excludes the bound."""

    def __init__(
        self,
        low: float | None = None,
        high: float | None = None,
        *,
        low_open: bool = False,
        high_open: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.low, self.high, self.low_open, self.high_open = low, high, low_open, high_open

    def _expected(self, style: str) -> str:
        if self.low == 0 and self.low_open and self.high is None:
            return "a positive number"
        text = _range_text(self.low, self.high, self.low_open, self.high_open)
        return "a number" + text if text else "a finite number"

    def _validate(self, value: Any, path: FieldPath, style: str) -> Any:
        if not is_number(value) or not _in_range(
            value, self.low, self.high, self.low_open, self.high_open
        ):
            raise self.refuse(value, path, style)
        return value


class Str(Spec):
    """A string; with ``choices`` one of them (case-insensitively with ``casefold``)."""

    def __init__(
        self,
        choices: Iterable[str] | None = None,
        *,
        nonempty: bool = True,
        casefold: bool = False,
        max_len: int = 10_000,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.choices = tuple(choices) if choices is not None else None
        self.nonempty, self.casefold, self.max_len = nonempty, casefold, max_len

    def _expected(self, style: str) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        return "a non-empty string" if self.nonempty else "a string"

    def _validate(self, value: Any, path: FieldPath, style: str) -> Any:
        if not isinstance(value, str) or (self.nonempty and not value.strip()):
            raise self.refuse(value, path, style)
        if len(value) > self.max_len:
            raise Mismatch(path, f"is a string of {len(value)} characters (at most {self.max_len})")
        if self.choices is not None:
            key = value.lower() if self.casefold else value
            if key not in self.choices:
                raise self.refuse(value, path, style)
        return value


class Bool(Spec):
    """``true`` or ``false`` (not 0, 1 or a string)."""

    def _expected(self, style: str) -> str:
        return "true or false"

    def _validate(self, value: Any, path: FieldPath, style: str) -> Any:
        if not isinstance(value, bool):
            raise self.refuse(value, path, style)
        return value


class List(Spec):
    """A list (or tuple) of ``items``, with ``length`` or ``min_len``..``max_len`` entries."""

    def __init__(
        self,
        items: Spec | None = None,
        *,
        length: int | None = None,
        min_len: int = 0,
        max_len: int | None = None,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.items, self.length, self.min_len, self.max_len = items, length, min_len, max_len

    def _expected(self, style: str) -> str:
        if self.length is not None:
            size = f" of {self.length} items"
        elif self.max_len is not None and self.min_len:
            size = f" of {self.min_len} to {self.max_len} items"
        elif self.max_len is not None:
            size = f" of at most {self.max_len} items"
        elif self.min_len:
            size = f" of at least {self.min_len} item{'s' if self.min_len > 1 else ''}"
        else:
            size = ""
        what = "an array" if style == "json" else "a list"
        each = f" (each {self.items.expected(style)})" if self.items is not None else ""
        return what + size + each

    def _validate(self, value: Any, path: FieldPath, style: str) -> Any:
        if not isinstance(value, (list, tuple)):
            raise self.refuse(value, path, style)
        n = len(value)
        if (
            (self.length is not None and n != self.length)
            or n < self.min_len
            or (self.max_len is not None and n > self.max_len)
        ):
            raise Mismatch(
                path,
                f"must be {self.expected(style)}, got {n} item{'' if n == 1 else 's'}: "
                f"{show(value)}",
            )
        if self.items is not None:
            for i, item in enumerate(value):
                self.items.validate(item, (*path, i), style)
        return value


class Table(Spec):
    """A dict with string keys: ``fields`` by name, ``required`` ones present; other keys are
    refused unless ``extra`` (``True`` for anything, or a spec every other value must fit)."""

    def __init__(
        self,
        fields: Mapping[str, Spec] | None = None,
        *,
        required: Iterable[str] = (),
        extra: bool | Spec = False,
        max_keys: int | None = None,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.fields = dict(fields or {})
        self.required = tuple(required)
        self.extra = True if fields is None and extra is False else extra
        self.max_keys = max_keys

    def _expected(self, style: str) -> str:
        return "an object (dict)" if style == "json" else "a table"

    def _validate(self, value: Any, path: FieldPath, style: str) -> Any:
        if not isinstance(value, Mapping):
            raise self.refuse(value, path, style)
        if self.max_keys is not None and len(value) > self.max_keys:
            raise Mismatch(path, f"has {len(value)} keys (at most {self.max_keys})")
        for name in self.required:
            if name not in value:
                spec = self.fields.get(name)
                hint = f" (it must be {spec.expected(style)})" if spec is not None else ""
                raise Mismatch((*path, name), f"is missing{hint}")
        for key, item in value.items():
            if not isinstance(key, str):
                raise Mismatch(path, f"has a key that is not a string: {show(key)}")
            spec = self.fields.get(key)
            if spec is not None:
                spec.validate(item, (*path, key), style)
            elif isinstance(self.extra, Spec):
                self.extra.validate(item, (*path, key), style)
            elif not self.extra:
                known = ", ".join(self.fields) or "none"
                raise Mismatch((*path, key), f"is not a known field (known: {known})")
        return value


class OneOf(Spec):
    """Any of several specs (e.g. a string or an int)."""

    def __init__(self, *choices: Spec, **options: Any) -> None:
        super().__init__(**options)
        self.choices = choices

    def _expected(self, style: str) -> str:
        return " or ".join(c.expected(style) for c in self.choices)

    def _validate(self, value: Any, path: FieldPath, style: str) -> Any:
        for choice in self.choices:
            try:
                return choice.validate(value, path, style)
            except Mismatch:
                continue
        raise self.refuse(value, path, style)


class Anything(Spec):
    """Any value (checked elsewhere, or free-form)."""

    def _expected(self, style: str) -> str:
        return "any value"

    def _validate(self, value: Any, path: FieldPath, style: str) -> Any:
        return value


class Where(Spec):
    """``spec`` plus a test: ``test(value)`` returns ``None`` or the reason it fails."""

    def __init__(self, spec: Spec, test: Callable[[Any], str | None], **options: Any) -> None:
        super().__init__(**options)
        self.spec, self.test = spec, test

    def _expected(self, style: str) -> str:
        return self.spec.expected(style)

    def _validate(self, value: Any, path: FieldPath, style: str) -> Any:
        self.spec.validate(value, path, style)
        reason = self.test(value)
        if reason:
            raise Mismatch(path, reason)
        return value


# --- checking ----------------------------------------------------------------------------


def field_name(path: Sequence[str | int], style: str = "json") -> str:
    """How a message names a field: ``[train.options] lr`` (TOML) or ``config.widths[0]``."""
    if not path:
        return "the document"
    keys = [i for i, part in enumerate(path) if isinstance(part, str)]
    if (
        style == "toml"
        and keys
        and keys[-1] > 0
        and all(isinstance(p, str) for p in path[: keys[-1]])
    ):
        table = ".".join(str(p) for p in path[: keys[-1]])
        return f"[{table}] " + _dotted(path[keys[-1] :])
    return _dotted(path)


def _dotted(path: Sequence[str | int]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def check(
    document: Any,
    spec: Spec,
    *,
    where: str,
    error: type[XaikitError] = XaikitConfigError,
    style: str = "json",
    path: FieldPath = (),
) -> Any:
    """Check ``document`` against ``spec``; return it unchanged, or raise ``error`` with
    ``"<where>: <field> must be <expected>, got <value>"`` (one line).

    Args:
        where: what the message starts with, usually the file (``recipe.toml``).
        style: ``"toml"`` names fields as ``[table] key``, ``"json"`` as ``a.b[0]``.
        path: where ``document`` sits in a larger one (for the field names).
    """
    try:
        return spec.validate(document, tuple(path), style)
    except Mismatch as bad:
        raise error(f"{where}: {field_name(bad.path, style)} {bad.message}") from None


def too_deep(obj: Any, max_depth: int) -> bool:
    """Whether lists / dicts nest deeper than ``max_depth`` levels in ``obj`` (no recursion)."""
    stack: list[tuple[Any, int]] = [(obj, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, Mapping):
            children: Iterable[Any] = value.values()
        elif isinstance(value, (list, tuple)):
            children = value
        else:
            continue
        if depth + 1 > max_depth:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


__all__ = [
    "Anything",
    "Bool",
    "Int",
    "List",
    "Mismatch",
    "Number",
    "OneOf",
    "Spec",
    "Str",
    "Table",
    "Where",
    "check",
    "field_name",
    "is_int",
    "is_number",
    "show",
    "too_deep",
]
