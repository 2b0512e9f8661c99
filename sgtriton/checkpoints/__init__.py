"""Loading real StyleGAN checkpoints safely, and sgtriton's own safetensors format.

``load(path_or_file)`` recognises and reads:

* NVlabs PyTorch snapshots (stylegan2-ada-pytorch, stylegan3 ``networks_stylegan2``): ``G_ema``;
* NVlabs TensorFlow pickles: StyleGAN1 and StyleGAN2 (configs A-F, StyleGAN2-ADA-TF), no TF needed;
* rosinality/stylegan2-pytorch ``.pt`` files (``g_ema`` + ``latent_avg``);
* sgtriton's native ``.safetensors`` (weights + the configuration as JSON metadata).

Every pickle is read through an allow-list of inert globals (``safe_pickle``); embedded source
code is never executed and tensor storages are parsed by our own code, never by ``torch.load``.
A file that cannot become a generator raises :class:`CheckpointError` (:class:`UnsafePickleError`
for a refused global) naming the file, the part and what was expected, and no generator is
returned; what a file may cost is bounded before anything is allocated (see "Loading budgets" in
``safe_pickle``). ``save`` and ``convert`` write atomically.
"""

from __future__ import annotations

import contextlib
import io
import os
import struct
from collections.abc import Iterator
from typing import IO

import torch

from sgtriton.checkpoints.errors import CheckpointError, UnsafePickleError, in_source, quote
from sgtriton.checkpoints.formats import FORMATS, container_of, format_of, read_container
from sgtriton.checkpoints.native import generator_from_native, save_native
from sgtriton.checkpoints.nvlabs import generator_from_nvlabs
from sgtriton.checkpoints.rosinality import generator_from_rosinality
from sgtriton.checkpoints.safe_pickle import remaining_bytes
from sgtriton.checkpoints.tensorflow import generator_from_tensorflow
from sgtriton.generator import Generator

PathOrFile = str | os.PathLike[str] | IO[bytes]

_READERS = {
    "nvlabs": generator_from_nvlabs,
    "tensorflow": generator_from_tensorflow,
    "rosinality": generator_from_rosinality,
}

_UNEXPECTED = (ValueError, TypeError, KeyError, IndexError, AttributeError, RuntimeError, RecursionError,
               ZeroDivisionError, OverflowError, MemoryError, struct.error, UnicodeError, EOFError)

__all__ = ["FORMATS", "CheckpointError", "UnsafePickleError", "convert", "detect_format", "load", "save"]


@contextlib.contextmanager
def _opened(path_or_file: PathOrFile) -> Iterator[tuple[IO[bytes], str]]:
    """A seekable binary stream and a name for messages."""
    if isinstance(path_or_file, (str, os.PathLike)):
        try:
            f = open(path_or_file, "rb")
        except OSError as exc:
            raise CheckpointError(f"cannot open checkpoint {os.fspath(path_or_file)!r}: {exc.strerror}") from exc
        with f:
            yield f, f"checkpoint {os.fspath(path_or_file)!r}"
        return
    if not hasattr(path_or_file, "read"):
        raise TypeError(f"path_or_file: expected a path or a binary file object, got {type(path_or_file).__name__}")
    name = getattr(path_or_file, "name", None)
    source = f"checkpoint {name!r}" if isinstance(name, str) else "checkpoint <file object>"
    f = path_or_file
    seekable = getattr(f, "seekable", lambda: False)()
    if not seekable:
        f = io.BytesIO(f.read())
    yield f, source


def _read_all(f: IO[bytes], source: str) -> bytearray:
    """The rest of ``f`` in one writable buffer (one copy; tensors are then views into it)."""
    size = remaining_bytes(f)
    if size is None:
        return bytearray(f.read())
    data = bytearray(size)
    view, done = memoryview(data), 0
    while done < size:
        n = f.readinto(view[done:])
        if not n:
            raise CheckpointError(f"{source} is truncated: it shrank while being read")
        done += n
    return data


def _read(f: IO[bytes], source: str) -> tuple[str, object]:
    start = f.tell()
    head = f.read(64)
    f.seek(start)
    if not head:
        raise CheckpointError(f"{source} is empty")
    container = container_of(head)
    if container == "safetensors":
        return "native", _read_all(f, source)
    contents = read_container(f, container, source)
    return format_of(contents, source), contents


def load(path_or_file: PathOrFile, *, backend: str | None = "auto", device: torch.device | str | None = None,
         format: str | None = None) -> Generator:
    """Read a checkpoint in any supported format into an sgtriton :class:`~sgtriton.generator.Generator`.

    ``backend`` is the generator's backend (``'auto'``, ``'reference'``, ``'triton'``); ``device``
    where its weights go; ``format`` (one of :data:`FORMATS`) insists on a format instead of
    detecting it. The generator is in eval mode with ``requires_grad=False``.
    """
    if format is not None and format not in FORMATS:
        raise ValueError(f"format={format!r}: expected None or one of {FORMATS}")
    with _opened(path_or_file) as (f, source):
        try:
            detected, contents = _read(f, source)
            if format is not None and detected != format:
                raise CheckpointError(f"{source}: asked for format={format!r}, but the file is in {detected!r} "
                                      f"format")
            reader = generator_from_native if detected == "native" else _READERS[detected]
            return reader(contents, source=source, backend=backend, device=device)
        except CheckpointError as exc:
            raise in_source(exc, source) from exc
        except _UNEXPECTED as exc:
            # A last line of defence: whatever slipped past the readers' own checks is still one
            # clean error naming the file, never a traceback.
            raise CheckpointError(f"{source}: cannot be read: {type(exc).__name__}: {quote(str(exc), 200)}") from exc


def detect_format(path_or_file: PathOrFile) -> str:
    """The format of a checkpoint (one of :data:`FORMATS`); pickles are read (safely) to decide."""
    with _opened(path_or_file) as (f, source):
        try:
            return _read(f, source)[0]
        except CheckpointError as exc:
            raise in_source(exc, source) from exc
        except _UNEXPECTED as exc:
            raise CheckpointError(f"{source}: cannot be read: {type(exc).__name__}: {quote(str(exc), 200)}") from exc


def save(G: Generator, path_or_file: PathOrFile) -> None:
    """Write ``G`` in sgtriton's native format (safetensors + configuration metadata).

    A path is written atomically: a temporary file in the same folder, fsync, rename; a symlink
    there is replaced, never followed. A suffix naming another format (``.pkl``, ``.pt`` ...) is
    refused.
    """
    save_native(G, path_or_file)


def _same_file(a: PathOrFile, b: PathOrFile) -> bool:
    if not isinstance(a, (str, os.PathLike)) or not isinstance(b, (str, os.PathLike)):
        return a is b
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def convert(source: PathOrFile, destination: PathOrFile, *, format: str | None = None) -> Generator:
    """Load any supported checkpoint and write it in the native format; returns the generator.

    The destination is written only after the whole source has loaded, atomically (see
    :func:`save`); converting a file onto itself is refused.
    """
    if _same_file(source, destination):
        raise ValueError(f"destination={os.fspath(destination)!r} is the source file; write the converted "
                         f"checkpoint to another path")
    G = load(source, backend="reference", format=format)
    save(G, destination)
    return G
