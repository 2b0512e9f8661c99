"""Loading real StyleGAN checkpoints safely, and sgtriton's own safetensors format.

``load(path_or_file)`` recognises and reads:

* NVlabs PyTorch snapshots (stylegan2-ada-pytorch, stylegan3 ``networks_stylegan2``): ``G_ema``;
* NVlabs TensorFlow pickles: StyleGAN1 and StyleGAN2 (configs A-F, StyleGAN2-ADA-TF), no TF needed;
* rosinality/stylegan2-pytorch ``.pt`` files (``g_ema`` + ``latent_avg``);
* sgtriton's native ``.safetensors`` (weights + the configuration as JSON metadata).

Every pickle is read through an allow-list of inert globals (``safe_pickle``); embedded source
code is never executed and tensor storages are parsed by our own code, never by ``torch.load``.
A file that cannot become a generator raises :class:`CheckpointError` (:class:`UnsafePickleError`
for a refused global) and no generator is returned.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from typing import IO

import torch

from sgtriton.checkpoints.errors import CheckpointError, UnsafePickleError
from sgtriton.checkpoints.formats import FORMATS, container_of, format_of, read_container
from sgtriton.checkpoints.native import generator_from_native, save_native
from sgtriton.checkpoints.nvlabs import generator_from_nvlabs
from sgtriton.checkpoints.rosinality import generator_from_rosinality
from sgtriton.checkpoints.tensorflow import generator_from_tensorflow
from sgtriton.generator import Generator

PathOrFile = str | os.PathLike[str] | IO[bytes]

_READERS = {
    "nvlabs": generator_from_nvlabs,
    "tensorflow": generator_from_tensorflow,
    "rosinality": generator_from_rosinality,
}

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


def _read(f: IO[bytes], source: str) -> tuple[str, object]:
    start = f.tell()
    head = f.read(64)
    f.seek(start)
    if not head:
        raise CheckpointError(f"{source} is empty")
    container = container_of(head)
    if container == "safetensors":
        return "native", f.read()
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
        detected, contents = _read(f, source)
    if format is not None and detected != format:
        raise CheckpointError(f"{source}: asked for format={format!r}, but the file is in {detected!r} format")
    if detected == "native":
        return generator_from_native(contents, source=source, backend=backend, device=device)
    return _READERS[detected](contents, source=source, backend=backend, device=device)


def detect_format(path_or_file: PathOrFile) -> str:
    """The format of a checkpoint (one of :data:`FORMATS`); pickles are read (safely) to decide."""
    with _opened(path_or_file) as (f, source):
        return _read(f, source)[0]


def save(G: Generator, path_or_file: PathOrFile) -> None:
    """Write ``G`` in sgtriton's native format (safetensors + configuration metadata)."""
    save_native(G, path_or_file)


def convert(source: PathOrFile, destination: PathOrFile, *, format: str | None = None) -> Generator:
    """Load any supported checkpoint and write it in the native format; returns the generator."""
    G = load(source, backend="reference", format=format)
    save(G, destination)
    return G
