"""Atomic file writes: a reader never sees a half-written file, a crash leaves the old one.

Every file xaikit writes (checkpoints, cards, figures, JSON, HTML) goes through
:func:`atomic_path` or :func:`atomic_write_text`: the data is written to a temporary file in
the same folder, flushed to disk, then renamed over the target in one step.

Permissions: the temporary file is created with mode ``0o666`` passed to ``open(2)``, so the
kernel applies the process umask (and any default ACL) exactly as for an ordinary
``open(path, "w")``. xaikit never reads or sets the umask itself: ``os.umask`` can only be read
by setting it, which races with every other thread creating files.

JSON is strict: :func:`atomic_write_json` and :func:`dumps_json` write NaN and infinities as
``null`` (``json.dumps`` would write ``NaN``, which no strict parser or browser accepts) and
report where they were.

Reading: :func:`read_document` opens only regular files (a FIFO or ``/dev/zero`` is refused
at once), refuses documents over a size limit (16 MiB, ``$XAIKIT_MAX_DOCUMENT_BYTES``) or
nested deeper than 64 levels, and reports invalid UTF-8, JSON or TOML in one line; the
fields are then checked with :mod:`xaikit.schema`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# O_EXCL: never open a file that already exists (e.g. a planted symlink); O_NOFOLLOW likewise.
_CREATE_FLAGS = (
    os.O_WRONLY
    | os.O_CREAT
    | os.O_EXCL
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_NOFOLLOW", 0)
)


def _create_temporary(folder: Path, name: str) -> tuple[Path, int]:
    """A new empty file ``.<name>.<random>.tmp`` in ``folder``, mode ``0o666`` minus the umask;
    returns it and the permission bits the kernel gave it.

    Like :func:`tempfile.mkstemp`, but mkstemp's fixed ``0o600`` would have to be widened
    afterwards with a chmod that needs the umask, which cannot be read without changing it.
    """
    for _ in range(100):
        tmp = folder / f".{name}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, _CREATE_FLAGS, 0o666)
        except FileExistsError:
            continue
        try:
            mode = stat.S_IMODE(os.fstat(fd).st_mode)
        finally:
            os.close(fd)
        return tmp, mode
    raise FileExistsError(f"could not create a temporary file for {name} in {folder}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is renamed to ``path``.

    On an exception the temporary file is removed and ``path`` is left as it was. The file
    gets the permissions of an ordinary write (``0o666`` minus the umask).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp, mode = _create_temporary(target.parent, target.name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
            # A writer that replaced the file (safetensors writes its own 0o600 temporary and
            # renames it over ours) gets back the mode the kernel gave ours: umask-derived,
            # never more permissive.
            if stat.S_IMODE(os.fstat(handle.fileno()).st_mode) != mode and hasattr(os, "fchmod"):
                os.fchmod(handle.fileno(), mode)  # (POSIX; Windows has no such modes)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def finite_json(obj: Any) -> tuple[Any, list[str]]:
    """``obj`` with every NaN / infinite float replaced by ``None``, and where they were.

    Dicts, lists and tuples are walked; the places are JSON-path-like strings such as
    ``"$.images[0].score"``, for a caller that wants to flag them. Other values are kept.
    """
    where: list[str] = []

    def walk(value: Any, at: str) -> Any:
        if isinstance(value, float):  # numpy float64 too: it subclasses float
            if math.isfinite(value):
                return value
            where.append(at)
            return None
        if isinstance(value, dict):
            return {k: walk(v, f"{at}.{k}") for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [walk(v, f"{at}[{i}]") for i, v in enumerate(value)]
        return value

    return walk(obj, "$"), where


def dumps_json(obj: Any, **options: Any) -> str:
    """``json.dumps(obj, **options)`` as strict JSON: non-finite floats become ``null``."""
    clean, _ = finite_json(obj)
    return json.dumps(clean, allow_nan=False, **options)


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> list[str]:
    """Write ``obj`` as indented, strict JSON to ``path`` atomically.

    NaN and infinities are written as ``null``; returns where they were (see
    :func:`finite_json`), empty when there were none.
    """
    clean, where = finite_json(obj)
    atomic_write_text(path, json.dumps(clean, indent=2, sort_keys=False, allow_nan=False) + "\n")
    return where


# -- output folders -----------------------------------------------------------------------

LOCK_NAME = ".xaikit.lock"


def check_out(path: str | os.PathLike[str], *, file: bool = False) -> Path:
    """Refuse an ``--out`` that cannot be written, before any work; returns it as a Path.

    A folder output (the default) must not be an existing file nor lie under one, and the
    nearest existing folder above it must be writable. With ``file=True`` (``--out FILE``)
    the path must not be a folder and its parent must pass the same checks. Nothing is
    created.

    Raises:
        XaikitConfigError: one line saying why.
    """
    from xaikit.errors import XaikitConfigError

    target = Path(path)
    if file:
        if target.is_dir():
            raise XaikitConfigError(f"--out {target} is a folder; give a file name")
        folder = target.parent
    else:
        if target.exists() and not target.is_dir():
            raise XaikitConfigError(f"--out {target} is a file, not a folder")
        folder = target
    probe, missing = folder.absolute(), None
    while not probe.exists() and probe.parent != probe:
        probe, missing = probe.parent, probe
    if probe.exists() and not probe.is_dir():
        raise XaikitConfigError(f"--out {target} cannot be created: {probe} is a file")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise XaikitConfigError(f"--out {target} cannot be written: no permission in {probe}")
    from xaikit.distributed import current

    group = current()
    if group.distributed and not group.is_main:
        # Under torchrun rank 0 makes the real try: another rank's probe folder, made and
        # removed, could remove the folder rank 0 has just created.
        return target
    try:  # a real try (root passes os.access, /proc and read-only mounts do not)
        if missing is not None:
            with contextlib.suppress(FileExistsError):  # another process made it meanwhile
                os.mkdir(missing)
                os.rmdir(missing)
        else:
            os.unlink(_create_temporary(probe, "xaikit-check")[0])
    except OSError as err:
        raise XaikitConfigError(
            f"--out {target} cannot be written in {probe}: {err.strerror or err}"
        ) from None
    return target


def _holder(fd: int) -> str:
    """The lock file's ``pid … on host … (command)`` line, for the message."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
        return f"pid {info['pid']} on {info['host']} ({info['command']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


@contextlib.contextmanager
def lock_out(path: str | os.PathLike[str], command: str) -> Iterator[Path]:
    """Hold an exclusive lock on the output folder ``path`` while the block runs.

    The lock is ``fcntl.flock`` on ``<path>/.xaikit.lock``, which records the pid, host and
    command of the holder. The kernel drops it when the holder exits, however it exits, so
    the lock of a dead process never blocks. The folder is created if needed; on exit the
    lock file is removed, and so is the folder when the run left it empty.

    Raises:
        XaikitConfigError: another run holds the lock (its pid, host and command are named),
            or the folder cannot be created.
    """
    import socket
    import sys

    from xaikit.distributed import current
    from xaikit.errors import XaikitConfigError

    group = current()
    if group.distributed and not group.is_main:
        # Under torchrun rank 0 holds the lock for the run; the others wait until it has it
        # (or learn that it could not take it) before they write anything.
        group.agree()  # rank 0 has made the folder
        yield Path(path)
        return
    folder = check_out(path)
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise XaikitConfigError(f"--out {folder} cannot be created: {err.strerror}") from None
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory lock
        if group.distributed:
            group.agree()
        yield folder
        return
    lock = folder / LOCK_NAME
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    while True:
        try:
            fd = os.open(lock, flags, 0o666)
        except OSError as err:
            raise XaikitConfigError(f"--out {folder}: cannot create {lock}: {err.strerror}") from (
                None
            )
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _holder(fd)
            os.close(fd)
            raise XaikitConfigError(
                f"--out {folder} is in use by {holder}; wait for it to finish or use another --out"
            ) from None
        try:  # the file we locked may have been removed by a holder that just finished
            same = os.path.samestat(os.fstat(fd), os.stat(lock, follow_symlinks=False))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": command,
            "argv": sys.argv,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode("utf-8"), 0)
        if group.distributed:
            group.agree()  # the other ranks may start: the folder is this run's
        yield folder
    finally:
        with contextlib.suppress(OSError):
            lock.unlink()
        os.close(fd)  # releases the lock
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty


# -- reading documents ----------------------------------------------------------------------
#
# Every file xaikit reads is opened without blocking and checked to be a regular file before
# a byte is read: a FIFO would block a plain open() forever and /dev/zero (or a symlink to it)
# would be read until memory runs out. Documents have a size limit and a nesting limit, so a
# 20 MB card or a 200,000-deep `[[[[...` is refused in one line, not a MemoryError or a
# RecursionError.

#: Size limit of a JSON / TOML document (model card, recipe, history, training state).
DEFAULT_MAX_DOCUMENT_BYTES = 16 * 2**20
#: Size limit of one line of a JSON-lines journal.
MAX_JOURNAL_LINE_BYTES = 2**20
#: Lists / objects nested deeper than this are refused before parsing.
DEFAULT_MAX_DEPTH = 64
MAX_DOCUMENT_BYTES_ENV = "XAIKIT_MAX_DOCUMENT_BYTES"

_READ_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def max_document_bytes() -> int:
    """The document size limit: ``$XAIKIT_MAX_DOCUMENT_BYTES`` when set, else 16 MiB."""
    from xaikit.errors import XaikitConfigError

    raw = os.environ.get(MAX_DOCUMENT_BYTES_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_DOCUMENT_BYTES
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        value = 0
    if value < 1:
        raise XaikitConfigError(f"{MAX_DOCUMENT_BYTES_ENV} must be a positive int, got {raw!r}")
    return value


def _file_kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "a special file")


def _error(error: type[Exception] | None) -> type[Exception]:
    if error is not None:
        return error
    from xaikit.errors import DataError

    return DataError


def open_regular(
    path: str | os.PathLike[str], *, what: str = "file", error: type[Exception] | None = None
) -> int:
    """Open ``path`` for reading without blocking and return the descriptor, or raise
    ``error`` (default :class:`~xaikit.errors.DataError`) in one line when it is missing,
    unreadable or not a regular file (a folder, FIFO, device such as ``/dev/zero``, socket).
    The caller closes the descriptor."""
    fail = _error(error)
    try:
        fd = os.open(os.fspath(path), _READ_FLAGS)
    except FileNotFoundError:
        raise fail(f"{path}: {what} not found") from None
    except OSError as err:
        raise fail(f"{path}: the {what} cannot be read: {err.strerror or err}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise fail(f"{path}: the {what} is not a regular file but {_file_kind(mode)}")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)  # O_NONBLOCK was only for the open of a FIFO
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_regular_file(
    path: str | os.PathLike[str], *, what: str = "file", error: type[Exception] | None = None
) -> int:
    """Refuse ``path`` unless it is a readable regular file (see :func:`open_regular`);
    returns its size in bytes. For files a library then opens by name (safetensors)."""
    fd = open_regular(path, what=what, error=error)
    try:
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


def read_limited(
    path: str | os.PathLike[str],
    *,
    what: str = "file",
    max_bytes: int | None = None,
    error: type[Exception] | None = None,
) -> bytes:
    """The bytes of the regular file ``path``, refused in one line when over ``max_bytes``
    (default :func:`max_document_bytes`), checked before reading and while reading (a file
    that grows is cut at the limit)."""
    fail = _error(error)
    limit = max_document_bytes() if max_bytes is None else max_bytes
    fd = open_regular(path, what=what, error=error)
    try:
        size = os.fstat(fd).st_size
        if size > limit:
            raise fail(f"{path}: the {what} is {size:,} bytes, more than the limit of {limit:,}")
        chunks, total = [], 0
        while total <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as err:
        raise fail(f"{path}: the {what} cannot be read: {err.strerror or err}") from None
    finally:
        os.close(fd)
    if total > limit:
        raise fail(f"{path}: the {what} is more than the limit of {limit:,} bytes")
    return b"".join(chunks)


# Unrolled, without possessive quantifiers (Python 3.11+ only): no runaway backtracking either.
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def json_too_deep(text: str, limit: int) -> bool:
    """Whether arrays / objects in the JSON ``text`` nest deeper than ``limit`` (strings
    skipped). Works on the text, so ``json.loads`` never sees a document deep enough to
    exhaust the stack; counted per 4 KiB chunk, bracket by bracket only near the limit."""
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    depth, step = 0, 4096
    for start in range(0, len(brackets), step):
        chunk = brackets[start : start + step]
        opens = chunk.count("[") + chunk.count("{")
        if depth + opens > limit:  # the chunk may cross the limit: walk it
            for char in chunk:
                depth += 1 if char in "[{" else -1
                if depth > limit:
                    return True
        else:
            depth += opens - (len(chunk) - opens)
    return False


def loads_document(
    data: bytes | str,
    *,
    where: str,
    kind: str = "json",
    max_depth: int = DEFAULT_MAX_DEPTH,
    error: type[Exception] | None = None,
) -> Any:
    """Parse JSON or TOML ``data``, refusing invalid UTF-8, invalid syntax and nesting deeper
    than ``max_depth`` in one line each, e.g. ``"<where> is not valid JSON (...)"``; ``where``
    names the text (``"runs/a/m.json: the model card"``, ``"results.jsonl line 3"``). For a
    journal's lines too (check their length against :data:`MAX_JOURNAL_LINE_BYTES` first)."""
    fail = _error(error)
    label = "TOML" if kind == "toml" else "JSON"
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as err:
            raise fail(
                f"{where} is not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start})"
            ) from None
    else:
        text = data
    if kind == "toml":
        import sys

        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover
            import tomli as tomllib
        try:
            document = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise fail(f"{where} is not valid TOML ({_one_line(err)})") from None
        except RecursionError:  # tomllib recurses into nested arrays and inline tables
            raise fail(f"{where} nests deeper than {max_depth} levels") from None
        from xaikit.schema import too_deep

        if too_deep(document, max_depth):
            raise fail(f"{where} nests deeper than {max_depth} levels")
        return document
    if json_too_deep(text, max_depth):
        raise fail(f"{where} nests deeper than {max_depth} levels")
    try:
        return json.loads(text)
    except RecursionError:  # pragma: no cover - the depth check comes first
        raise fail(f"{where} nests deeper than {max_depth} levels") from None
    except ValueError as err:  # JSONDecodeError, and ints longer than Python converts
        raise fail(f"{where} is not valid {label} ({_one_line(err)})") from None


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())[:200] or type(err).__name__


def read_document(
    path: str | os.PathLike[str],
    *,
    what: str = "document",
    max_bytes: int | None = None,
    max_depth: int = DEFAULT_MAX_DEPTH,
    kind: str | None = None,
    error: type[Exception] | None = None,
) -> Any:
    """Read and parse the JSON (or, by suffix or ``kind``, TOML) document at ``path``.

    Only a regular file is opened (a FIFO or ``/dev/zero`` is refused at once), at most
    ``max_bytes`` (default :func:`max_document_bytes`) are read, and nesting deeper than
    ``max_depth`` is refused before parsing. Every failure is one line raising ``error``
    (default :class:`~xaikit.errors.DataError`) that starts with ``path``; ``what`` names
    the document in it (``"model card"``, ``"recipe"``).
    """
    if kind is None:
        kind = "toml" if os.fspath(path).lower().endswith(".toml") else "json"
    data = read_limited(path, what=what, max_bytes=max_bytes, error=error)
    where = f"{path}: the {what}"
    return loads_document(data, where=where, kind=kind, max_depth=max_depth, error=error)
