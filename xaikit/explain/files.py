"""Explain image files and folders of any size, streaming every result to disk.

:func:`explain_files` is the pipeline behind ``xaikit explain``: it lists the images
(folders recursively), loads them in batches with the model card's channels, size and
normalization, runs :func:`xaikit.explain.api.explain` once per batch for every method and
target, and writes each image's outputs as soon as its batch is done. Only one batch of
images and maps is ever in memory, so a folder of any size streams with bounded memory
(about ``batch_size`` x the largest image, kept as uint8 for the overlays, and scaled down to
:data:`~xaikit.viz.overlay.MAX_OVERLAY_SIDE` px on its longer side when it is larger).

Output layout under ``out``::

    results.json                 the run, every image and every error (written at the end)
    results.jsonl                the journal: one JSON line per image, appended as it is done
    <key>/                       one folder per image (key: see below)
        <method>.<target>.png          heatmap over the image at the image's ORIGINAL size,
                                       uint8 RGB, nothing else drawn (pixel-exact); images
                                       larger than 2048 px on a side are drawn scaled down
                                       to 2048 px on the longer side (bounded memory)
        <method>.<target>.figure.png   the same with a title "name (p=0.97) — method" and a
                                       colour bar (longer side scaled into 256..768 px)
        <method>.<target>.npy          float32 (H, W): the normalized map in [0, 1] at the
                                       model's input resolution (the card's input_shape)
        <method>.<target>.raw.npy      float32: the signed, unnormalized map - at the target
                                       layer's resolution (h, w) for CAM methods (before the
                                       ReLU), at the input resolution for gradient methods

Gradient methods (saliency, ig, ...) are drawn in the PNGs from their raw map by
:func:`xaikit.viz.colormaps.display_map`: ``|a|`` (or ``max(a, 0)``) clipped at its 99th
percentile on a sequential colormap, or with ``sign="all"`` the signed map on a diverging
colormap centred on zero; the figure's title names the rule ("cat (p=0.97) — ig,
|attribution|, clipped at 99th pct"). CAM-family maps are drawn from the ``[0, 1]`` map on
``cmap`` (jet) as always. The ``.npy`` files are the data either way.

``<target>`` is ``<index>-<class name>`` (or ``<index>`` when the model has no class names).
An image ``cat.jpg`` given directly has the key ``cat.jpg``; an image found in a folder
``imgs`` given as input has the key ``imgs/<path inside imgs>`` (e.g. ``imgs/sub/cat.jpg``).
Names from outside are made safe first (:mod:`xaikit.names`): each part of a key, and the
class name in ``<target>``, loses path separators, control characters, undecodable bytes
(``_`` instead) and leading dots, and is at most 100 bytes of UTF-8 (a longer name is cut and
ends with 8 hex digits of its SHA-256; ``<target>`` at most 64 bytes), so no output file name
is longer than 100 bytes. The full names are in the records: ``source`` is the path as text,
a byte that is not UTF-8 written ``\\xNN`` (``b"caf\\xe9.png"`` -> ``"caf\\\\xe9.png"`` in the
JSON), with ``source_bytes`` (the path's exact bytes, hex) added for such a name; ``name``
is the whole class name. Class names must be strings (numbers are read as text; anything
else, or a name over 1,000 characters, is refused in one line); titles show at most 60
characters of one, as plain text (no mathtext).
Keys that would collide get ``~2``, ``~3``, ... appended; so does a key whose first part is
one of the run's own names (``results.json``, ``results.jsonl``, ``.xaikit.lock``): an image
given as ``results.json`` is written to ``results.json~2/``. ``out`` may not be an input
folder nor lie inside one (refused before any work). One run at a time holds ``out`` (the
command line locks ``out/.xaikit.lock``; a second run exits 2 naming the holder).

Crash safety: every file is written atomically (a temporary file renamed into place). The
journal ``results.jsonl`` starts with one ``{"kind": "run", ...}`` line (the settings) and
gets one ``{"kind": "image", ...}`` or ``{"kind": "error", ...}`` line per input, appended
(and flushed) only after all of that image's files exist, and fsynced every ``2 x
batch_size`` images and at the end. A kill leaves at worst a cut-off last line, which is
ignored. ``results.json`` is rewritten atomically from the journal when the run ends, so it
is always either complete or absent (a run that stops early leaves only the journal; resume
it). With ``resume=True`` an input is skipped when its last journal record is an image
record whose files all check out: each path relative, inside ``out`` once resolved (no
``..``, no absolute path, no symlink leading out), a regular file, of the byte size the
record's ``sizes`` gives it (a record without sizes, e.g. hand-edited or from an older
xaikit, counts as not done), and every field of the record has its type (see
``_checked_outputs``: a size that is a string, outputs that are a number, a target that is
not an int ... count as not done; a line that is no JSON object is skipped). Anything
else is explained again; bad files are tried again.
Resuming with other settings (model, methods, target, layer, score, input shape,
normalization, colours, figures) is refused.

Several processes (``torchrun --nproc-per-node N -m xaikit explain ...``, see
:mod:`xaikit.distributed`): the inputs are cut into fixed batches of ``batch_size`` in input
order (bad files keep their place), dealt round robin to the ranks; rank ``r`` writes its
images' files and its own journal ``results.rank<r>.jsonl``, and when every rank is done
rank 0 folds the journals into ``results.jsonl`` (one record per input, input order) and
writes ``results.json``. Every image is explained beside the same images whatever the number
of ranks, and after a resume (a batch with images still to do is explained whole; only
those are written), so with the same threads per process (torchrun gives each rank one) the
files are the same bytes as one uninterrupted process writes. ``resume`` reads every
journal in ``out`` (``results.jsonl`` and any rank's), so a run killed on any rank resumes
with any number of ranks; a resume also removes the temporary files a kill left in the
folders of the images it writes. ``out`` must be one folder every rank sees (a shared file
system across machines).

Speed: the files of one batch are encoded and written by a few threads while the next batch
is read and explained (PNG encoding, resizing and fsync release the GIL); the titled figures
are drawn by matplotlib in the calling thread, reusing one figure per picture size, and are
the slowest part (``figures=False`` / ``--no-figure`` skips them).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import re
import stat
import warnings
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn
from tqdm.auto import tqdm

from xaikit import distributed
from xaikit._names import JOURNAL, RESULTS
from xaikit._version import __version__
from xaikit.data.images import IMAGE_EXTENSIONS, list_images, read_image_with_preview
from xaikit.data.normalization import Normalization, check_normalization, normalize
from xaikit.errors import DataError, XaikitConfigError, XaikitError
from xaikit.explain.adapter import ExplainWarning
from xaikit.explain.api import explain
from xaikit.explain.cam import CAM_METHODS
from xaikit.explain.engine import SCORE_CAM_METHODS, check_methods, route_options
from xaikit.explain.result import Explanation
from xaikit.io import LOCK_NAME, atomic_path, atomic_write_text, dumps_json
from xaikit.names import (
    FILE_NAME_LIMIT,
    bound,
    check_class_names,
    file_key,
    json_safe,
    printable,
    short_label,
    source_bytes,
)
from xaikit.viz.colormaps import check_sign, display_family, display_map, get_colormap
from xaikit.viz.overlay import MAX_OVERLAY_SIDE, display_pixels, overlay, overlay_figure

TargetSpec = str | int | Sequence[int | str]

_FIGURE_MIN, _FIGURE_MAX, _FIGURE_DPI = 256, 768, 100
_UNSAFE = re.compile(r"[^\w.+-]+")
#: Methods outside the CAM registry that explain a layer too.
_OTHER_LAYER_METHODS = (*SCORE_CAM_METHODS, "guided-gradcam")


#: Names in the output folder that belong to the run itself. An input whose output folder
#: would take one of them (an image given as ``results.json``, a folder named
#: ``results.jsonl``) gets ``~2`` appended to that name instead: ``out/results.json~2/``.
RESERVED_NAMES = frozenset({RESULTS, JOURNAL, LOCK_NAME})

#: The journal of rank ``r`` of a run under torchrun: ``results.rank<r>.jsonl``. Rank 0
#: merges them into ``results.jsonl`` at the end (and removes them).
RANK_JOURNAL = re.compile(r"results\.rank(\d+)\.jsonl")


def rank_journal_name(rank: int) -> str:
    """``results.rank<rank>.jsonl``: where rank ``rank`` of a distributed run journals."""
    return f"results.rank{rank}.jsonl"


def _reserved(name: str) -> bool:
    return name in RESERVED_NAMES or RANK_JOURNAL.fullmatch(name) is not None


@dataclass(frozen=True)
class ImageSource:
    """One input: the file, the folder its outputs go to, and a problem found while listing.

    Attributes:
        path: the file (absolute).
        key: its output folder, relative to ``out`` (POSIX separators).
        problem: why it cannot be used, when known before reading (e.g. an empty folder).
    """

    path: Path
    key: str
    problem: str | None = None

    @property
    def name(self) -> str:
        """The path as text for records and messages (undecodable bytes as ``\\xNN``)."""
        return printable(str(self.path))

    @property
    def ident(self) -> tuple[str, str | None]:
        """What identifies the file in the journal: its :attr:`name` and, for a name that
        is not valid UTF-8, the hex of its exact bytes."""
        return self.name, source_bytes(str(self.path))

    def fields(self) -> dict[str, str]:
        """``{"source": name}``, with ``"source_bytes"`` for a non-UTF-8 name."""
        name, raw = self.ident
        return {"source": name, **({"source_bytes": raw} if raw is not None else {})}


@dataclass
class FilesSummary:
    """What :func:`explain_files` did.

    Attributes:
        out: the output folder.
        results: the ``results.json`` path.
        total: inputs considered (images, bad files, empty folders).
        explained: images explained by this call.
        skipped: images skipped as already done (``resume``).
        errors: ``(source, reason)`` for every input that could not be used in this call.
        degenerate: maps that came out constant (saved as zeros, flagged in the results).
        warnings: other warnings of the explanation, each once.
    """

    out: Path
    results: Path
    total: int = 0
    explained: int = 0
    skipped: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)
    degenerate: int = 0
    warnings: list[str] = field(default_factory=list)


# -- listing ------------------------------------------------------------------------------


def collect_images(
    inputs: Iterable[str | os.PathLike[str]], *, exclude: str | os.PathLike[str] | None = None
) -> list[ImageSource]:
    """The images named by ``inputs`` (files, or folders searched recursively), in order.

    Duplicates (the same file reached twice) are dropped; files under ``exclude`` (the
    output folder, when it lies inside an input folder) are left out. A path that does not
    exist is kept (it fails, with its reason, when read); a folder without images becomes a
    source with a ``problem``.

    Raises:
        DataError: ``inputs`` is empty.
    """
    excluded = Path(exclude).resolve() if exclude is not None else None
    sources: list[ImageSource] = []
    seen: set[Path] = set()
    keys: set[str] = set()

    def add(path: Path, parts: Sequence[str], problem: str | None = None) -> None:
        resolved = path.resolve()
        if resolved in seen:
            return
        seen.add(resolved)
        key = file_key(parts)  # every part a safe, bounded file name (xaikit.names)
        head, sep, rest = key.partition("/")
        if _reserved(head):  # the run's own files: out/results.json/ would collide
            key = f"{head}~2{sep}{rest}"
        unique, n = key, 1
        while unique in keys:
            n += 1
            folder, slash, last = key.rpartition("/")
            suffix = f"~{n}"
            unique = f"{folder}{slash}{bound(last, FILE_NAME_LIMIT - len(suffix))}{suffix}"
        keys.add(unique)
        sources.append(ImageSource(resolved, unique, problem))

    given = [Path(p) for p in inputs]
    if not given:
        raise DataError("no input images given; pass image files or folders")
    for path in given:
        if not path.is_dir():
            add(path, [path.name or str(path)])
            continue
        prefix = path.resolve().name or "root"
        found = list_images(path, recursive=True)
        if excluded is not None and excluded.is_relative_to(path.resolve()):
            found = [f for f in found if not f.resolve().is_relative_to(excluded)]
        if not found:
            add(
                path,
                [prefix],
                f"folder {printable(str(path))} holds no image files (looked for "
                f"{', '.join(IMAGE_EXTENSIONS)}, subfolders included)",
            )
        for file in found:
            add(file, [prefix, *file.relative_to(path).parts])
    return sources


def check_out_of_inputs(
    inputs: Iterable[str | os.PathLike[str]], out: str | os.PathLike[str]
) -> None:
    """Refuse an output folder that is an input folder or lies inside one (its outputs
    would be read back as inputs), and one that is an input file.

    Raises:
        XaikitConfigError: naming the input folder.
    """
    target = Path(out).resolve()
    for given in inputs:
        path = Path(given)
        if not path.exists():
            continue
        folder = path.resolve()
        if target == folder or (path.is_dir() and target.is_relative_to(folder)):
            where = "is" if target == folder else "lies inside"
            raise XaikitConfigError(
                f"--out {out} {where} the input {given}; write the outputs to a folder "
                "outside the inputs"
            )


# -- loading ------------------------------------------------------------------------------


@dataclass
class _Loaded:
    source: ImageSource
    input: torch.Tensor  # (C, H, W) normalized model input
    display: torch.Tensor  # (c, H', W') uint8, the file's channels, at most MAX_OVERLAY_SIDE
    original_size: tuple[int, int]  # (H0, W0) of the file
    write: bool = True  # False: done by an earlier run, in the batch only to keep it whole


def load_for_model(
    path: str | os.PathLike[str],
    input_shape: Sequence[int],
    normalization: Normalization | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Read an image once for both uses: the model input and the picture to draw on.

    Returns ``(input, display)``: ``input`` ``(C, H, W)`` float32 with the card's channels,
    size and normalization (the same values as :func:`xaikit.data.images.load_image`);
    ``display`` ``(c, H0, W0)`` uint8 at the file's own size and channels, scaled down to
    :data:`~xaikit.viz.overlay.MAX_OVERLAY_SIDE` on the longer side when larger.

    Raises:
        DataError: the file is missing or cannot be read (the message names it).
    """
    image, display, _ = _read_for_model(path, input_shape, normalization)
    return image, display


def _read_for_model(
    path: str | os.PathLike[str],
    input_shape: Sequence[int],
    normalization: Normalization | None = None,
) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    """:func:`load_for_model` and the file's ``(H0, W0)``."""
    channels, height, width = (int(v) for v in input_shape)
    # Bounded: a 7000 x 7000 file keeps a 2048 px picture, not 150 MB of uint8 per image, and is
    # never held as a full-size float32 copy (the same input values as load_image).
    read = read_image_with_preview(
        path, channels=channels, size=(height, width), preview_side=MAX_OVERLAY_SIDE
    )
    image = read.image
    if normalization is not None:
        image = normalize(image, normalization)
    return image.contiguous(), display_pixels(read.preview), read.original_size


# -- targets and names --------------------------------------------------------------------


def _batch_target(target: TargetSpec, n: int) -> Any:
    """A target for a batch of ``n``: a list of classes means 'these classes for every
    image', which :func:`explain` spells as one list per input."""
    if isinstance(target, (str, int)):
        return target
    return [list(target) for _ in range(n)]


#: The longest class-name part of an output file name, in bytes of UTF-8: with the method
#: and ``.figure.png`` every file name stays within :data:`xaikit.names.FILE_NAME_LIMIT`.
TAG_LIMIT = 64


def target_tag(index: int, name: str | None) -> str:
    """The target part of an output file name: ``"2-triangle"``, or ``"417"`` unnamed.

    Characters other than letters, digits, ``.``, ``+`` and ``-`` become ``_``; a name over
    :data:`TAG_LIMIT` bytes is cut and ends with 8 hex digits of its SHA-256
    (:func:`xaikit.names.bound`). The full name is in the records."""
    if not name:
        return str(index)
    return f"{index}-{bound(_UNSAFE.sub('_', name).strip('._') or '_', TAG_LIMIT, original=name)}"


def _stem(method: str, tag: str) -> str:
    """``<method>.<target>``, bounded so that ``<stem>.figure.png`` is a short file name."""
    return bound(f"{_UNSAFE.sub('_', method)}.{tag}", FILE_NAME_LIMIT - len(".figure.png"))


def _title(name: str | None, index: int, probability: float, method: str, rule: str = "") -> str:
    """``"cat (p=0.97) — ig, |attribution|, clipped at 99th pct"``: ``rule`` is the
    :attr:`~xaikit.viz.colormaps.DisplayMap.suffix` (empty for CAMs). A long class name is
    shortened (:func:`xaikit.names.short_label`); titles are drawn without mathtext."""
    label = short_label(name) if name else f"class {index}"
    return f"{label} (p={probability:.2f}) — {method}{rule}"


# -- journal ------------------------------------------------------------------------------


class _Journal:
    """``results.jsonl``: a run line, then one line per input, appended as inputs finish.

    Keeps only the byte offset of each source's last record in memory, by the source's
    :attr:`ImageSource.ident`. Every string is written through :func:`xaikit.names.json_safe`
    (valid UTF-8 whatever the file names).
    """

    def __init__(
        self,
        path: Path,
        header: dict[str, Any],
        resume: bool,
        others: Sequence[Path] = (),
    ) -> None:
        self.path = path
        self.offsets: dict[tuple[str, str | None], int] = {}
        # Journals of other ranks (or of an earlier run with another number of ranks), read
        # only: a source done there is done. ``(file index, offset)`` of its records there,
        # later files' records after earlier ones'.
        self.other_paths = list(others)
        self.other_offsets: dict[tuple[str, str | None], list[tuple[int, int]]] = {}
        self.others: list[IO[bytes]] = []
        if resume:
            for n, other in enumerate(self.other_paths):
                for ident, offset in self._scan(other, header):
                    self.other_offsets.setdefault(ident, []).append((n, offset))
            self.others = [open(p, "rb") for p in self.other_paths]  # noqa: SIM115
        self.resumed = resume and (
            (path.is_file() and path.stat().st_size > 0) or bool(self.other_offsets)
        )
        if resume and path.is_file() and path.stat().st_size > 0:
            for ident, offset in self._scan(path, header):
                self.offsets[ident] = offset
            self.handle: IO[bytes] = open(path, "ab")  # noqa: SIM115 - closed in close()
            if not self._ends_with_newline():
                self.handle.write(b"\n")  # a cut-off last line stays a line of its own
        else:
            atomic_write_text(path, dumps_json(header) + "\n")
            self.handle = open(path, "ab")  # noqa: SIM115 - closed in close()
        self.reader: IO[bytes] = open(path, "rb")  # noqa: SIM115 - closed in close()

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as handle:
            handle.seek(-1, os.SEEK_END)
            return handle.read(1) == b"\n"

    @staticmethod
    def _scan(path: Path, header: dict[str, Any]) -> Iterator[tuple[tuple[str, str | None], int]]:
        """``(source ident, byte offset)`` of every record of the journal ``path``, in order,
        after checking that its first line is a run with the same settings as ``header``."""
        offset = 0
        first = True
        with open(path, "rb") as handle:
            for line in handle:
                record = _parse(line)
                if first:
                    first = False
                    settings = record.get("settings") if record is not None else None
                    if (
                        record is None
                        or record.get("kind") != "run"
                        or not isinstance(settings, dict)
                    ):
                        raise XaikitConfigError(
                            f"{printable(str(path))} is not an xaikit explain journal; "
                            "remove it or use another --out"
                        )
                    _check_same_settings(path, settings, header)
                elif record is not None and record.get("kind") in ("image", "error"):
                    ident = _record_ident(record)
                    if ident is not None:  # a record naming no source is not used
                        yield ident, offset
                offset += len(line)

    def record(self, source: tuple[str, str | None]) -> dict[str, Any] | None:
        """The last record of the source ``(name, bytes)`` (see :attr:`ImageSource.ident`),
        from this run or an earlier one, if any (this journal's, else the other journals'
        latest)."""
        candidates = self.records(source)
        return candidates[0] if candidates else None

    def records(self, source: tuple[str, str | None]) -> list[dict[str, Any]]:
        """Every record kept of the source: this journal's last one first, then the other
        journals' records, newest (last file, last line) first."""
        found: list[dict[str, Any]] = []
        offset = self.offsets.get(source)
        if offset is not None:
            self.handle.flush()
            self.reader.seek(offset)
            record = _parse(self.reader.readline())
            if record is not None:
                found.append(record)
        for n, where in reversed(self.other_offsets.get(source, [])):
            self.others[n].seek(where)
            record = _parse(self.others[n].readline())
            if record is not None:
                found.append(record)
        return found

    def append(self, record: dict[str, Any]) -> None:
        record = json_safe(record)
        ident = _record_ident(record)
        if ident is not None:
            self.offsets[ident] = self.handle.tell()
        self.handle.write(dumps_json(record, ensure_ascii=False).encode("utf-8") + b"\n")
        self.handle.flush()

    def sync(self) -> None:
        self.handle.flush()
        os.fsync(self.handle.fileno())

    def close(self) -> None:
        self.handle.close()
        self.reader.close()
        for handle in self.others:
            handle.close()


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        record = json.loads(line.decode("utf-8"))
    except (ValueError, RecursionError):  # bad UTF-8 or JSON, a huge int, deep nesting
        return None
    return record if isinstance(record, dict) else None


def _record_ident(record: Mapping[str, Any]) -> tuple[str, str | None] | None:
    """The ``(source, source_bytes)`` a record is about, or None when they are not text."""
    source, raw = record.get("source"), record.get("source_bytes")
    if not isinstance(source, str) or not (raw is None or isinstance(raw, str)):
        return None
    return source, raw


def _check_same_settings(path: Path, before: Mapping[str, Any], header: Mapping[str, Any]) -> None:
    now = json.loads(dumps_json(header["settings"]))  # the same JSON round trip as `before`
    changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
    if changed:
        details = "; ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in changed)
        raise XaikitConfigError(
            f"cannot resume: {path} was written with other settings ({details}); rerun "
            "without --resume to start over, or use another --out"
        )


def _output_names(record: Mapping[str, Any]) -> list[str] | None:
    """The output file names of an image record, or None when the record is malformed."""
    outputs = record.get("outputs")
    if not isinstance(outputs, dict):
        return None
    names: list[str] = []
    for entries in outputs.values():
        if not isinstance(entries, list):
            return None
        for entry in entries:
            if not isinstance(entry, dict):
                return None
            for key in _OUTPUT_KEYS:
                if key in entry:
                    if not isinstance(entry[key], str):
                        return None
                    names.append(entry[key])
    return names


def _inside(out: Path, name: str) -> Path | None:
    """``out / name`` when ``name`` is a relative path that stays inside ``out`` (no ``..``,
    no absolute path, no symlink leading out), else None."""
    rel = Path(name)
    if not name or rel.is_absolute() or ".." in rel.parts or "\\" in name:
        return None
    path = out / rel
    try:
        if not path.resolve().is_relative_to(out.resolve()):
            return None
    except (OSError, RuntimeError):
        return None
    return path


def _count(value: Any, low: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _number(value: Any) -> bool:
    """A score or probability as the journal holds it: a number, or null (NaN, inf)."""
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def _checked_outputs(
    record: Mapping[str, Any], methods: Sequence[str] | None, figures: bool | None
) -> list[str] | None:
    """The output file names of a well-formed image record, or None.

    Well-formed: ``kind`` ``"image"``; ``source`` (and ``source_bytes`` when present) text;
    ``output_dir`` non-empty text; ``original_size`` two positive ints; ``targets`` a list of
    ``{"index": int >= 0, "name": text or null, "score": number or null, "probability":
    number or null}``; ``outputs`` one list per method of the run (``methods``), one entry
    per target, each ``{"target": that index, "degenerate": bool, "overlay"/"map"/"raw"
    (and "figure" when the run draws figures): text naming a file in output_dir}``; ``sizes``
    an int >= 0 for every file. Anything else - a hand edit, a bit flip, another version's
    record - is not trusted."""
    if record.get("kind") != "image" or _record_ident(record) is None:
        return None
    folder, size, targets = (
        record.get("output_dir"),
        record.get("original_size"),
        record.get("targets"),
    )
    if not isinstance(folder, str) or not folder:
        return None
    if not isinstance(size, list) or len(size) != 2 or not all(_count(v, 1) for v in size):
        return None
    if not isinstance(targets, list) or not all(
        isinstance(t, dict)
        and {"index", "name", "score", "probability"} <= set(t)
        and _count(t["index"])
        and (t["name"] is None or isinstance(t["name"], str))
        and _number(t["score"])
        and _number(t["probability"])
        for t in targets
    ):
        return None
    outputs = record.get("outputs")
    if not isinstance(outputs, dict) or (methods is not None and set(outputs) != set(methods)):
        return None
    required = {"overlay", "map", "raw"} | ({"figure"} if figures else set())
    for entries in outputs.values():
        if not isinstance(entries, list) or len(entries) != len(targets):
            return None
        for entry, target in zip(entries, targets):
            if (
                not isinstance(entry, dict)
                or entry.get("target") != target["index"]
                or not _count(entry.get("target"))
                or not isinstance(entry.get("degenerate"), bool)
                or not required <= set(entry)
                or (figures is False and "figure" in entry)
                or not all(
                    isinstance(entry[k], str) and entry[k].startswith(f"{folder}/")
                    for k in _OUTPUT_KEYS
                    if k in entry
                )
            ):
                return None
    names = _output_names(record)
    sizes = record.get("sizes")
    if names is None or not isinstance(sizes, dict):
        return None
    if not all(_count(sizes.get(name)) for name in names):
        return None
    return names


def _is_done(
    record: dict[str, Any] | None,
    out: Path,
    methods: Sequence[str] | None = None,
    figures: bool | None = None,
    key: str | None = None,
) -> bool:
    """Whether a journal record proves its image done: it is well-formed (every field of
    the type it should have, see :func:`_checked_outputs`), and every output path lies
    inside ``out``, is a regular file there, and has the size the record's ``sizes`` gives
    it. Anything else (a hand-edited path such as ``/etc/passwd``, a missing or resized
    file, a record without sizes, a field of the wrong type) means the image is explained
    again; a record is never trusted on its word, and never raises. With ``key``, the
    record's ``output_dir`` must be it (the folder this run gives the source)."""
    if record is None or (key is not None and record.get("output_dir") != key):
        return False
    names = _checked_outputs(record, methods, figures)
    if names is None:
        return False
    sizes = record["sizes"]
    for name in names:
        path = _inside(out, name)
        size = sizes.get(name)
        if path is None:
            return False
        try:
            st = path.lstat()
        except OSError:
            return False
        if not stat.S_ISREG(st.st_mode) or st.st_size != size:
            return False
    return True


def _add_sizes(record: dict[str, Any], out: Path) -> dict[str, Any]:
    """``record`` with ``sizes``: the byte size of each of its output files (the journal
    keeps them so that ``--resume`` can tell a complete file from a replaced one)."""
    sizes: dict[str, int] = {}
    for name in _output_names(record) or []:
        with contextlib.suppress(OSError):
            sizes[name] = (out / name).stat().st_size
    record["sizes"] = sizes
    return record


_OUTPUT_KEYS = ("overlay", "figure", "map", "raw")


# -- writing ------------------------------------------------------------------------------


def _save_png(path: Path, rgb: np.ndarray) -> None:
    from PIL import Image  # PIL only at the edge, to encode the pictures

    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        Image.fromarray(np.ascontiguousarray(rgb)).save(handle, format="PNG")


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, np.ascontiguousarray(array, dtype=np.float32))


def _save_overlay(
    path: Path, display: torch.Tensor, heat: np.ndarray, cmap: str, alpha: float
) -> None:
    _save_png(path, overlay(display, heat, cmap=cmap, alpha=alpha))


def _figure_size(height: int, width: int) -> tuple[int, float]:
    """The figure's longer image side in pixels and its image height in inches."""
    longer = max(height, width)
    target = min(max(longer, _FIGURE_MIN), _FIGURE_MAX)
    scale = target / longer
    return target, max(1, round(height * scale)) / _FIGURE_DPI


class _Figures:
    """Titled overlay figures with a colour bar, drawn to RGB arrays; one matplotlib figure
    is reused per picture size (building a figure costs more than drawing it), at most
    ``keep`` sizes. matplotlib is not thread-safe: call from one thread only."""

    def __init__(self, cmap: str, alpha: float, keep: int = 4) -> None:
        self.cmap, self.alpha, self.keep = cmap, alpha, keep
        self.figures: OrderedDict[tuple[Any, ...], Figure] = OrderedDict()

    def render(
        self,
        display: torch.Tensor,
        heat: np.ndarray,
        title: str,
        cmap: str | None = None,
        colour_range: tuple[float, float] = (0.0, 1.0),
    ) -> np.ndarray:
        """``(c, H0, W0)`` image and ``(h, w)`` map in ``[0, 1]`` -> the figure as
        ``(H', W', 3)`` uint8; ``cmap`` (default: the run's) and ``colour_range`` (what the
        colour bar reads) come from the method's display rule."""
        cmap = self.cmap if cmap is None else cmap
        long_side, height = _figure_size(*display.shape[-2:])
        rgb = overlay(display, heat, cmap=cmap, alpha=self.alpha, size=long_side)
        # The colour bar is drawn once per figure: one figure per size, colormap and range.
        key = (int(rgb.shape[0]), int(rgb.shape[1]), cmap, *colour_range)
        figure = self.figures.get(key)
        axes = figure.axes[0] if figure is not None and figure.axes else None
        if figure is not None and axes is not None and axes.images:
            axes.images[0].set_data(rgb)
            axes.title.set_text(title)
            self.figures.move_to_end(key)
        else:
            figure = overlay_figure(
                display,
                heat,
                title=title,
                cmap=cmap,
                colorbar_range=colour_range,
                alpha=self.alpha,
                size=long_side,
                height=height,
            )
            figure.set_dpi(_FIGURE_DPI)
            self.figures[key] = figure
            if len(self.figures) > self.keep:
                self.figures.popitem(last=False)
        figure.canvas.draw()
        return np.array(figure.canvas.buffer_rgba())[..., :3]  # type: ignore[attr-defined]


class _Sink:
    """Writes files on background threads (PNG encoding, resizing and fsync release the GIL)
    and appends each image's journal record once all its files are in place, in input order.
    At most ``limit`` images wait for their files, which bounds the memory they hold."""

    def __init__(self, journal: _Journal, workers: int, limit: int, out: Path) -> None:
        self.journal = journal
        self.out = out
        self.limit = max(1, limit)
        self.pool = ThreadPoolExecutor(workers, "xaikit-write") if workers > 0 else None
        self.pending: deque[tuple[dict[str, Any], list[Future[None]]]] = deque()
        self.unsynced = 0

    def submit(self, job: Callable[..., None], *args: Any) -> Future[None]:
        if self.pool is not None:
            return self.pool.submit(job, *args)
        done: Future[None] = Future()
        job(*args)
        done.set_result(None)
        return done

    def add(self, record: dict[str, Any], jobs: list[Future[None]]) -> None:
        self.pending.append((record, jobs))
        self._drain(wait=False)
        while len(self.pending) > self.limit:
            self._pop()

    def _pop(self) -> None:
        record, jobs = self.pending.popleft()
        for job in jobs:
            job.result()  # an error while writing (e.g. a full disk) is raised here
        self.journal.append(_add_sizes(record, self.out))
        self.unsynced += 1
        if self.unsynced >= self.limit:
            self.journal.sync()
            self.unsynced = 0

    def _drain(self, wait: bool) -> None:
        while self.pending and (wait or all(job.done() for job in self.pending[0][1])):
            self._pop()

    def finish(self) -> None:
        """Wait for every file, record every image, sync the journal."""
        self._drain(wait=True)
        self.journal.sync()

    def close(self) -> None:
        """Let the queued files be written (at most ``limit`` images), stop the threads and
        record the images whose files all got written - e.g. after an interrupt."""
        if self.pool is not None:
            self.pool.shutdown(wait=True)
        while self.pending and all(_written(job) for job in self.pending[0][1]):
            self.journal.append(_add_sizes(self.pending.popleft()[0], self.out))
        self.pending.clear()
        self.journal.sync()


def _written(job: Future[None]) -> bool:
    return job.done() and not job.cancelled() and job.exception() is None


@dataclass
class _Writer:
    out: Path
    cmap: str
    alpha: float
    figures: _Figures | None
    sink: _Sink
    sign: str = "auto"
    tidy: bool = False  # a resumed run: remove what a killed run left half-written

    def image(self, item: _Loaded, i: int, results: Mapping[str, _Cpu]) -> None:
        """Queue every output of input ``i`` of the batch, and its journal record."""
        first = next(iter(results.values()))
        labels = first.class_names or []
        folder = self.out / item.source.key
        if self.tidy:
            _remove_temporaries(folder)
        targets: list[dict[str, Any]] = []
        kept: list[int] = []
        for k in range(first.targets.shape[1]):
            if not bool(first.valid[i, k]):
                continue
            index = int(first.targets[i, k])
            name = labels[index] if index < len(labels) else None
            targets.append(
                {
                    "index": index,
                    "name": name,
                    "score": float(first.scores[i, k]),
                    "probability": float(first.probabilities[i, k]),
                }
            )
            kept.append(k)
        jobs: list[Future[None]] = []
        outputs: dict[str, list[dict[str, Any]]] = {}
        for method, res in results.items():
            entries = []
            for k, target in zip(kept, targets):
                stem = _stem(method, target_tag(target["index"], target["name"]))
                heat = res.maps[i, k].numpy()
                cmap, colour_range, rule = self.cmap, (0.0, 1.0), ""
                picture_map = heat
                if display_family(method) != "cam":
                    # Gradient maps: drawn from the raw signed map by the method's rule (the
                    # .npy files keep the data); CAM maps are drawn as before.
                    shown = display_map(res.raw[i, k].numpy(), method, sign=self.sign)
                    picture_map, rule = shown.colour_values, shown.suffix
                    cmap, colour_range = shown.cmap or self.cmap, shown.colour_range
                entry: dict[str, Any] = {
                    "target": target["index"],
                    "degenerate": bool(res.degenerate[i, k]),
                }
                path = folder / f"{stem}.png"
                args = (path, item.display, picture_map, cmap, self.alpha)
                jobs.append(self.sink.submit(_save_overlay, *args))
                entry["overlay"] = f"{item.source.key}/{stem}.png"
                if self.figures is not None:
                    title = _title(
                        target["name"], target["index"], target["probability"], method, rule
                    )
                    picture = self.figures.render(
                        item.display, picture_map, title, cmap, colour_range
                    )
                    jobs.append(self.sink.submit(_save_png, folder / f"{stem}.figure.png", picture))
                    entry["figure"] = f"{item.source.key}/{stem}.figure.png"
                jobs.append(self.sink.submit(_save_npy, folder / f"{stem}.npy", heat))
                entry["map"] = f"{item.source.key}/{stem}.npy"
                raw = res.raw[i, k].numpy()
                jobs.append(self.sink.submit(_save_npy, folder / f"{stem}.raw.npy", raw))
                entry["raw"] = f"{item.source.key}/{stem}.raw.npy"
                entries.append(entry)
            outputs[method] = entries
        record = {
            "kind": "image",
            **item.source.fields(),
            "output_dir": item.source.key,
            "original_size": list(item.original_size),
            "targets": targets,
            "outputs": outputs,
        }
        self.sink.add(record, jobs)


def _remove_temporaries(folder: Path) -> None:
    """Remove the temporary files (``.<name>.<8 hex>.tmp``, :func:`xaikit.io.atomic_path`)
    that a run killed while writing this image's files left in its folder."""
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            if _TEMPORARY.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


_TEMPORARY = re.compile(r"\..+\.[0-9a-f]{8}\.tmp")


@dataclass
class _Cpu:
    """The parts of an :class:`Explanation` the writer reads, on the CPU."""

    maps: torch.Tensor
    raw: torch.Tensor
    targets: torch.Tensor
    valid: torch.Tensor
    scores: torch.Tensor
    probabilities: torch.Tensor
    degenerate: torch.Tensor
    class_names: list[str] | None

    @classmethod
    def of(cls, res: Explanation) -> _Cpu:
        def cpu(t: torch.Tensor) -> torch.Tensor:
            return t.detach().float().cpu() if t.is_floating_point() else t.detach().cpu()

        return cls(
            maps=cpu(res.maps),
            raw=cpu(res.raw),
            targets=cpu(res.targets),
            valid=cpu(res.valid),
            scores=cpu(res.scores),
            probabilities=cpu(res.probabilities),
            degenerate=cpu(res.degenerate),
            class_names=res.class_names,
        )


def _write_results(
    path: Path, journal: _Journal, sources: Sequence[ImageSource], run: Mapping[str, Any]
) -> None:
    """Write ``results.json`` from the journal, streaming (one record in memory at a time)."""

    def records(kind: str) -> Iterator[dict[str, Any]]:
        for source in sources:
            record = journal.record(source.ident)
            if record is not None and record.get("kind") == kind:
                record = dict(record)
                record.pop("kind", None)
                record.pop("sizes", None)  # journal bookkeeping, not a result
                yield record

    def block(obj: Any) -> str:
        return dumps_json(json_safe(obj), indent=2, ensure_ascii=False).replace("\n", "\n    ")

    counts = {"images": 0, "errors": 0}
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        head = dumps_json(json_safe(run), indent=2, ensure_ascii=False).replace("\n", "\n  ")
        handle.write('{\n  "run": ' + head + ",\n")
        for kind, name in (("image", "images"), ("error", "errors")):
            handle.write(f'  "{name}": [')
            for n, record in enumerate(records(kind)):
                handle.write(("," if n else "") + "\n    " + block(record))
                counts[name] += 1
            handle.write("\n  ],\n" if counts[name] else "],\n")
        handle.write(f'  "counts": {json.dumps(counts)}\n}}\n')


# -- the pipeline -------------------------------------------------------------------------


def _layers(
    model: nn.Module,
    methods: list[str],
    target: TargetSpec,
    layer: str,
    score: str,
    input_shape: Sequence[int],
    class_names: Sequence[str] | None,
    reshape: str = "auto",
) -> dict[str, str | None]:
    """Check the settings on one blank input before touching any file: unknown layers,
    targets out of range or unknown names raise :class:`XaikitConfigError` here. Returns
    the layer each method explains (``None`` for methods on the input)."""
    uses_layer = [m for m in methods if m in CAM_METHODS or m in _OTHER_LAYER_METHODS]
    probe = "gradcam" if uses_layer else "saliency"
    # A seeded noise image, not zeros: the layer chooser's dry backward pass must not meet
    # ReLUs that are dead on a blank input (its choice is cached for the real images).
    blank = torch.rand(
        1, *[int(v) for v in input_shape], generator=torch.Generator().manual_seed(0)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExplainWarning)
        res = explain(
            model,
            blank,
            method=probe,
            target=_batch_target(target, 1),
            layer=layer,
            reshape=reshape,
            score=score,
            class_names=class_names,
            quiet=True,
            return_result=True,
        )
    assert isinstance(res, Explanation)
    return {m: (res.layer if m in uses_layer else None) for m in methods}


def explain_files(
    model: nn.Module,
    inputs: Iterable[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    method: str | Sequence[str] = "gradcam",
    target: TargetSpec = "predicted",
    layer: str = "auto",
    reshape: str = "auto",
    score: str = "logit",
    input_shape: Sequence[int],
    normalization: Normalization | None = None,
    class_names: Sequence[str] | None = None,
    batch_size: int = 16,
    resume: bool = False,
    cmap: str = "jet",
    alpha: float = 0.5,
    figures: bool = True,
    sign: str = "auto",
    model_info: Mapping[str, Any] | None = None,
    quiet: bool = False,
    on_error: Callable[[str, str], None] | None = None,
    workers: int | None = None,
    options: Mapping[str, Any] | None = None,
) -> FilesSummary:
    """Explain image files and folders, writing overlays, maps and ``results.json`` to ``out``.

    See the module docstring for the output layout and crash safety. Files are read with
    :func:`xaikit.data.images.read_image`, resized to ``input_shape`` ``(C, H, W)`` and
    normalized with ``normalization`` (a model card's), ``batch_size`` images per call of
    :func:`xaikit.explain.api.explain`.

    Args:
        model: the classifier (its device is used).
        inputs: image files and folders (searched recursively).
        out: the output folder (created).
        method: a method name or several (see :func:`xaikit.explain.api.explain`).
        target: ``"predicted"``, ``"positive"``, ``"all"``, a class index or name, or a list
            of indices / names (those classes for every image).
        layer: the CAM layer, ``"auto"`` or a dotted module name.
        reshape: how the layer's output reads as a map (``"auto"``, ``"nchw"``, ``"nhwc"``,
            ``"tokens"``; see :mod:`xaikit.explain.layouts`).
        score: ``"logit"`` or ``"prob"``: what is differentiated.
        input_shape: ``(C, H, W)`` the model takes.
        normalization: ``{"mean": [...], "std": [...]}`` applied to the ``[0, 1]`` image.
        class_names: label names (targets by name, titles, file names).
        batch_size: images per batch (memory is bounded by one batch).
        resume: skip inputs already done by an earlier run into ``out`` with the same settings.
        cmap, alpha: overlay colormap and weight of the colour layer.
        figures: also write the titled figure with a colour bar per map.
        sign: how gradient-method maps are drawn in the PNGs (``"auto"``, ``"absolute"``,
            ``"positive"``, ``"all"``; see :func:`xaikit.viz.colormaps.display_map`): from
            the raw map, clipped at its 99th percentile, on a sequential colormap, or signed
            on a diverging one; ``cmap`` then applies to CAM-family methods only. The
            ``.npy`` files are the same whatever ``sign``.
        model_info: how the model was named (``model``, ``architecture``, ...): recorded in
            the results, and must match when resuming. Its ``model_source`` entry (the
            card's ``source``: absolute path and SHA-256 of the weights read) is recorded as
            ``run.model_source`` but not compared on resume.
        quiet: no progress bar.
        on_error: called with ``(source, reason)`` for each input that cannot be used.
        options: method options (``steps=``, ``composite=``, ``segments=``, ...), as
            :func:`xaikit.explain.api.explain` takes them; recorded in the settings a resume
            must match. An option no requested method takes is refused before any file.
        workers: threads that encode and write the files while the next batch is explained
            (default: up to 4; 0 writes in the calling thread).

    Returns:
        a :class:`FilesSummary`; bad inputs are listed there and in ``results.json``
        (``"errors"``), the good ones are processed.

    Raises:
        XaikitConfigError: bad settings (method, layer, target, batch size, colormap, alpha,
            input shape), found before any file is read or written; or a resume with other
            settings.
        DataError: no inputs.
    """
    methods = check_methods(method)
    if batch_size < 1:
        raise XaikitConfigError(f"batch size must be at least 1, got {batch_size}")
    if not 0.0 <= alpha <= 1.0:
        raise XaikitConfigError(f"alpha must lie in [0, 1], got {alpha}")
    get_colormap(cmap)
    check_sign(sign)
    shape = [int(v) for v in input_shape]
    if len(shape) != 3 or min(shape) < 1 or shape[0] not in (1, 3):
        raise XaikitConfigError(
            f"explaining image files needs an input shape (C, H, W) with 1 or 3 channels; "
            f"got {shape} (pass --input-shape C,H,W)"
        )
    if normalization is not None:
        check_normalization(normalization, shape[0])
    if not isinstance(target, (str, int)) and len(target) == 0:
        raise XaikitConfigError("the target list is empty")
    names = check_class_names(class_names)  # strs, bounded; refused in one line otherwise
    layers = _layers(model, methods, target, layer, score, shape, names, reshape)

    out_dir = Path(out)
    check_out_of_inputs(inputs, out_dir)
    for own in (RESULTS, JOURNAL):
        if (out_dir / own).is_symlink() or (
            (out_dir / own).exists() and not (out_dir / own).is_file()
        ):
            raise XaikitConfigError(
                f"{out_dir / own} is not a regular file; remove it or use another --out"
            )
    method_options = dict(options or {})
    route_options(check_methods(methods), method_options)  # an unknown option: refused now
    if normalization is not None and "normalization" not in method_options:
        # The inputs are normalized before the call; methods that place a baseline or bounds
        # in pixel space (IG's black image, LRP's z-box) need to know how, whichever methods
        # come along, so every method that takes the card's normalization gets it.
        with_card = {**method_options, "normalization": dict(normalization)}
        try:
            route_options(check_methods(methods), with_card)
            method_options = with_card
        except XaikitConfigError:
            pass  # none of these methods takes a normalization
    sources = collect_images(inputs, exclude=out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    info = dict(model_info or {})
    # Which file the weights came from. Kept out of the settings a resume must match: the same
    # weights (weights_sha256 is compared) may be resumed from another copy or install.
    model_source = info.pop("model_source", None)
    settings = {
        "model": info,
        "methods": methods,
        "target": target if isinstance(target, (str, int)) else list(target),
        "layer": layer,
        "reshape": reshape,
        "layers": layers,
        "score": score,
        "normalize": "minmax",
        "input_shape": shape,
        "normalization": dict(normalization) if normalization is not None else None,
        "cmap": cmap,
        "alpha": alpha,
        "figures": figures,
        "sign": sign,
    }
    if options:  # only when given, so the settings of earlier runs still match
        settings["options"] = dict(options)  # the card's normalization is recorded above
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    header = json_safe({"kind": "run", "settings": settings, "xaikit_version": __version__})
    results_path = out_dir / RESULTS
    # Under torchrun each rank journals its own inputs; rank 0 merges them at the end.
    group = distributed.current()
    own = out_dir / (rank_journal_name(group.rank) if group.distributed else JOURNAL)
    if group.is_main and not resume:
        results_path.unlink(missing_ok=True)  # a stale one must not sit beside a new journal
        for stale in _rank_journals(out_dir):  # an earlier distributed run's
            stale.unlink()
        if group.distributed:
            (out_dir / JOURNAL).unlink(missing_ok=True)
    group.agree()  # the folder is this run's before any rank reads or writes a journal
    others = (
        [p for p in (out_dir / JOURNAL, *_rank_journals(out_dir)) if p != own and p.is_file()]
        if resume
        else []
    )
    journal = _Journal(own, header, resume, others)
    group.agree()  # every rank has read the journals before any rank appends to its own
    summary = FilesSummary(out=out_dir, results=results_path, total=len(sources))
    # Writer threads share the machine's cores with the other ranks on it (torchrun sets
    # LOCAL_WORLD_SIZE): two ranks on two cores do not each start two writers.
    per_rank = (os.cpu_count() or 1) // max(1, _local_world_size())
    threads = max(1, min(4, per_rank)) if workers is None else workers
    sink = _Sink(journal, threads, limit=2 * batch_size, out=out_dir)
    writer = _Writer(
        out_dir,
        cmap,
        alpha,
        _Figures(cmap, alpha) if figures else None,
        sink,
        sign=sign,
        tidy=resume,
    )
    seen_warnings: set[str] = set()

    def fail(source: ImageSource, reason: str) -> None:
        reason = printable(reason)
        journal.append({"kind": "error", **source.fields(), "error": reason})
        summary.errors.append((source.name, reason))
        if on_error is not None:
            on_error(source.name, reason)

    def flush(batch: list[_Loaded]) -> None:
        x = torch.stack([item.input for item in batch])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            results = explain(
                model,
                x,
                method=methods,
                target=_batch_target(target, len(batch)),
                layer=layer,
                reshape=reshape,
                score=score,
                class_names=names,
                quiet=True,
                return_result=True,
                **method_options,
            )
        for warning in caught:
            text = str(warning.message)
            if not text.startswith("constant heatmaps") and text not in seen_warnings:
                seen_warnings.add(text)
                summary.warnings.append(text)
        assert isinstance(results, dict)
        cpu = {name: _Cpu.of(res) for name, res in results.items()}
        del results
        for i, item in enumerate(batch):
            if not item.write:
                continue  # done before: explained again only to keep the batch as it was
            summary.degenerate += sum(
                int((res.degenerate[i] & res.valid[i]).sum()) for res in cpu.values()
            )
            writer.image(item, i, cpu)
            summary.explained += 1
            bar.update(1)
        batch.clear()

    def is_done(source: ImageSource) -> bool:
        return resume and any(
            _is_done(record, out_dir, methods, figures, source.key)
            for record in journal.records(source.ident)
        )

    # Batches are fixed chunks of the input list, dealt round robin to the ranks: whatever
    # the number of ranks, and after a resume, every image is explained beside the same
    # images as in one uninterrupted run, so its maps are the same bits.
    chunks = group.chunks(len(sources), batch_size)
    mine = sum(len(chunk) for chunk in chunks)
    bar = tqdm(total=mine, desc="explain", unit="image", disable=quiet, leave=False)
    try:
        for chunk in chunks:
            members = [sources[i] for i in chunk]
            done = [is_done(source) for source in members]
            summary.skipped += sum(done)
            bar.update(sum(done))
            if all(done):
                continue
            batch: list[_Loaded] = []
            for source, finished in zip(members, done):
                if source.problem is not None:
                    if not finished:
                        fail(source, source.problem)
                        bar.update(1)
                    continue
                try:
                    image, display, size = _read_for_model(source.path, shape, normalization)
                except XaikitError as err:
                    if not finished:
                        fail(source, str(err))
                        bar.update(1)
                    continue
                batch.append(_Loaded(source, image, display, size, write=not finished))
            if any(item.write for item in batch):  # else every readable one is done
                flush(batch)
        sink.finish()
        shards = group.agree(
            (
                summary.explained,
                summary.skipped,
                summary.errors,
                summary.degenerate,
                summary.warnings,
            )
        )
        if group.distributed:
            _combine(summary, shards, group.rank, sources, on_error)
        if group.is_main:
            finished_at = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
            run = {
                **settings,
                **({"model_source": model_source} if model_source is not None else {}),
                "class_names": names,
                "batch_size": batch_size,
                "device": str(next(model.parameters(), torch.empty(0)).device),
                **({"world_size": group.world} if group.distributed else {}),
                "xaikit_version": __version__,
                "started": started,
                "finished": finished_at,
                "resumed": journal.resumed,
            }
            if group.distributed or others:
                merged = _merge_journals(out_dir, header, sources, batch_size, group.world)
                try:
                    _write_results(results_path, merged, sources, run)
                finally:
                    merged.close()
            else:
                _write_results(results_path, journal, sources, run)
    finally:
        bar.close()
        sink.close()
        journal.close()
    return summary


def _local_world_size() -> int:
    """Ranks on this machine (torchrun's ``LOCAL_WORLD_SIZE``; 1 without torchrun)."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


def _rank_journals(out: Path) -> list[Path]:
    """The rank journals (``results.rank<r>.jsonl``) in ``out``, by rank.

    Raises:
        XaikitConfigError: one that is not a regular file (a symlink, a folder).
    """
    found: list[tuple[int, Path]] = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(out):
            match = RANK_JOURNAL.fullmatch(entry.name)
            if match is None:
                continue
            if not entry.is_file(follow_symlinks=False):
                raise XaikitConfigError(
                    f"{out / entry.name} is not a regular file; remove it or use another --out"
                )
            found.append((int(match.group(1)), Path(entry.path)))
    return [path for _, path in sorted(found)]


def _combine(
    summary: FilesSummary,
    shards: Sequence[tuple[int, int, list[tuple[str, str]], int, list[str]]],
    rank: int,
    sources: Sequence[ImageSource],
    on_error: Callable[[str, str], None] | None,
) -> None:
    """Make ``summary`` the run's, from every rank's counts; other ranks' bad inputs are
    reported here (on rank 0, the one that prints), in input order."""
    order = {source.name: n for n, source in enumerate(sources)}
    summary.explained = sum(s[0] for s in shards)
    summary.skipped = sum(s[1] for s in shards)
    summary.degenerate = sum(s[3] for s in shards)
    summary.warnings = list(dict.fromkeys(w for s in shards for w in s[4]))
    theirs = [e for r, s in enumerate(shards) if r != rank for e in s[2]]
    if on_error is not None:
        for name, reason in theirs:
            on_error(name, reason)
    summary.errors = sorted(
        [*summary.errors, *theirs], key=lambda error: order.get(error[0], len(order))
    )


def _merge_journals(
    out: Path,
    header: dict[str, Any],
    sources: Sequence[ImageSource],
    batch_size: int,
    world: int,
) -> _Journal:
    """Fold every journal in ``out`` (``results.jsonl`` and the rank journals) into one
    ``results.jsonl`` with one record per input, in input order, then remove the rank
    journals; returns the merged journal, opened for reading.

    Each input's record: a record proving it done (any journal), else the last record in
    the journal of the rank that had it in this run, else the newest found elsewhere. The
    merged file replaces ``results.jsonl`` atomically before any rank journal is removed,
    so a crash here loses nothing (the next ``--resume`` reads both).
    """
    paths = [p for p in (out / JOURNAL, *_rank_journals(out)) if p.is_file()]
    offsets = [dict(_Journal._scan(path, header)) for path in paths]
    handles = [open(path, "rb") for path in paths]  # noqa: SIM115 - closed below
    methods, figures = header["settings"]["methods"], header["settings"]["figures"]

    def read(n: int, ident: tuple[str, str | None]) -> dict[str, Any] | None:
        where = offsets[n].get(ident)
        if where is None:
            return None
        handles[n].seek(where)
        return _parse(handles[n].readline())

    try:
        with atomic_path(out / JOURNAL) as tmp, open(tmp, "wb") as merged:
            merged.write(dumps_json(header).encode("utf-8") + b"\n")
            for index, source in enumerate(sources):
                owner_name = (
                    JOURNAL if world == 1 else rank_journal_name((index // batch_size) % world)
                )
                order = sorted(range(len(paths)), key=lambda n: (paths[n].name != owner_name, -n))
                found = [r for r in (read(n, source.ident) for n in order) if r is not None]
                done = [r for r in found if _is_done(r, out, methods, figures, source.key)]
                chosen = (done or found or [None])[0]
                if chosen is not None:
                    line = dumps_json(json_safe(chosen), ensure_ascii=False)
                    merged.write(line.encode("utf-8") + b"\n")
            merged.flush()
            os.fsync(merged.fileno())
    finally:
        for handle in handles:
            handle.close()
    for path in paths:
        if path.name != JOURNAL:
            path.unlink(missing_ok=True)
    return _Journal(out / JOURNAL, header, resume=True)
