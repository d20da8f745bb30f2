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
"""

from __future__ import annotations

import contextlib
import json
import math
import os
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

    from xaikit.errors import XaikitConfigError

    folder = check_out(path)
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise XaikitConfigError(f"--out {folder} cannot be created: {err.strerror}") from None
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory lock
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
        yield folder
    finally:
        with contextlib.suppress(OSError):
            lock.unlink()
        os.close(fd)  # releases the lock
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty
