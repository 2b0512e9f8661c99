"""Atomic file output: every file sgtriton writes appears complete or not at all.

:func:`atomic_write` writes to a temporary file in the destination's own folder (so the final
``os.replace`` never crosses a file system), flushes and ``fsync``\\ s it, then renames it over the
destination. A reader, a crash or ``kill -9`` at any point sees either the old file or the new
one, never a partial one. A destination that is a symbolic link is *replaced* by the new file,
never followed, so a link planted in an output folder cannot redirect a write elsewhere. The new
file's permissions follow the process umask, as a plain ``open(path, "w")`` would give.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


def _umask_mode() -> int:
    """The mode ``open()`` gives a new regular file under the current umask (``0o666 & ~umask``)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (best effort: some file systems refuse ``fsync`` on folders)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing; on a clean exit it replaces ``path``.

    ``mode`` is ``'wb'`` or ``'w'`` (text, ``encoding`` default UTF-8). On an exception the
    temporary file is removed and ``path`` is left exactly as it was.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"mode={mode!r}: expected 'wb' or 'w'")
    dest = Path(path)
    folder = dest.parent if str(dest.parent) else Path(".")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=folder)
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, _umask_mode())
        if mode == "w":
            handle = os.fdopen(fd, "w", encoding=encoding or "utf-8", newline="")
        else:
            handle = os.fdopen(fd, "wb")
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        # os.replace on a symlink replaces the link itself; it never writes through it.
        os.replace(tmp, dest)
    except BaseException:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        raise
    _fsync_folder(folder)


def atomic_write(path: str | os.PathLike, data: bytes | str | Callable[[IO], None]) -> Path:
    """Write ``data`` (bytes, str, or a callable that writes into a binary file object) to ``path``
    atomically (see the module docstring) and return ``path`` as a :class:`~pathlib.Path`."""
    if isinstance(data, str):
        with atomic_open(path, "w") as handle:
            handle.write(data)
    else:
        with atomic_open(path, "wb") as handle:
            if callable(data):
                data(handle)
            else:
                handle.write(data)
    return Path(path)
