"""Encoding and writing images off the generator's critical path.

:class:`ImageWriter` hands each image to a bounded thread pool (PIL's encoders and zlib release
the GIL, so threads encode in parallel while the main thread runs the next batch). Back-pressure:
:meth:`ImageWriter.submit` blocks while more than ``max_pending`` batches are unfinished, so memory
stays bounded and a crash loses at most the batch being generated and the one being written. When
the last image of a batch is on disk, its manifest part is written (``on_batch_done``), so a batch
counts as done only once all of its files are complete.

Every file goes through :func:`sgtriton.files.atomic_write`. Encoders are deterministic (the same
pixels give the same bytes), which is what makes files byte-identical across runs:

=====  ===========  ==================================================================
name   extension    encoding
=====  ===========  ==================================================================
png    ``.png``     PIL PNG, default settings (exactly what ``sgtriton generate`` always wrote)
jpg    ``.jpg``     PIL JPEG, quality 95, 4:4:4 (no chroma subsampling); lossy
webp   ``.webp``    PIL WebP, lossless
npz    ``.npz``     uncompressed ``.npz`` with one array ``image`` ``[H, W, C]`` uint8, fixed zip times
=====  ===========  ==================================================================
"""

from __future__ import annotations

import hashlib
import io
import threading
import zipfile
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sgtriton.files import atomic_write


@dataclass(frozen=True)
class ImageFormat:
    name: str
    extension: str
    pil_format: str | None  # None: written as .npz
    pil_options: tuple[tuple[str, Any], ...] = ()


FORMATS: dict[str, ImageFormat] = {f.name: f for f in (
    ImageFormat("png", ".png", "PNG"),
    ImageFormat("jpg", ".jpg", "JPEG", (("quality", 95), ("subsampling", 0))),
    ImageFormat("webp", ".webp", "WEBP", (("lossless", True),)),
    ImageFormat("npz", ".npz", None),
)}

#: Zip member times are part of an .npz file's bytes; a fixed time keeps them reproducible.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def image_format(name: str) -> ImageFormat:
    if name not in FORMATS:
        raise ValueError(f"format={name!r}: expected one of {', '.join(FORMATS)}")
    return FORMATS[name]


def encode(array, fmt: ImageFormat) -> bytes:
    """``[H, W, C]`` uint8 -> the bytes of the file in ``fmt``."""
    buffer = io.BytesIO()
    if fmt.pil_format is None:
        import numpy as np

        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
            with archive.open(zipfile.ZipInfo("image.npy", date_time=_ZIP_EPOCH), "w") as member:
                np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)
    else:
        from sgtriton.images import to_pil

        to_pil(array).save(buffer, format=fmt.pil_format, **dict(fmt.pil_options))
    return buffer.getvalue()


def decode(data: bytes, fmt: ImageFormat):
    """The ``[H, W, C]`` uint8 pixels of a file written by :func:`encode` (for ``jpg``: the decoded,
    lossy pixels)."""
    import numpy as np
    from PIL import Image

    if fmt.pil_format is None:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            return archive["image"]
    array = np.asarray(Image.open(io.BytesIO(data)))
    return array[..., None] if array.ndim == 2 else array


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class WrittenImage:
    """What the manifest records about one file."""

    item: int
    file: str
    sha256: str
    shape: tuple[int, ...]


class _PendingBatch:
    def __init__(self, index: int, count: int) -> None:
        self.index = index
        self.remaining = count
        self.written: list[WrittenImage] = []
        self.done = threading.Event()
        if count == 0:
            self.done.set()


class ImageWriter:
    """A bounded pool that encodes and atomically writes images, batch by batch.

    ``submit(index, [(item, file_name, array), ...])`` queues one batch; ``on_batch_done(index,
    written)`` runs (in a worker thread) once every file of the batch is complete. ``close()``
    waits for everything and re-raises the first error any worker hit.
    """

    def __init__(self, outdir: Path, fmt: ImageFormat, *, workers: int = 4, max_pending: int = 1,
                 on_batch_done: Callable[[int, list[WrittenImage]], None] | None = None) -> None:
        if workers < 1 or max_pending < 1:
            raise ValueError(f"workers={workers}, max_pending={max_pending}: expected both >= 1")
        self.outdir = Path(outdir)
        self.fmt = fmt
        self.max_pending = max_pending
        self.on_batch_done = on_batch_done
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sgtriton-writer")
        self._pending: deque[_PendingBatch] = deque()
        self._lock = threading.Lock()
        self._error: BaseException | None = None

    def submit(self, index: int, images: list[tuple[int, str, Any]]) -> None:
        self._raise_if_failed()
        while len(self._pending) >= self.max_pending:
            self._pending[0].done.wait()
            self._pending.popleft()
            self._raise_if_failed()
        batch = _PendingBatch(index, len(images))
        self._pending.append(batch)
        if not images and self.on_batch_done is not None:
            self.on_batch_done(index, [])
        for item, name, array in images:
            future = self._pool.submit(self._write_one, item, name, array)
            future.add_done_callback(lambda f, batch=batch: self._finish_one(batch, f))

    def close(self) -> None:
        """Wait for every queued file and manifest part; re-raise the first failure."""
        self._pool.shutdown(wait=True)
        self._pending.clear()
        self._raise_if_failed()

    def __enter__(self) -> ImageWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:  # already failing: finish what is queued but keep the original error
            self._pool.shutdown(wait=True, cancel_futures=True)

    def _write_one(self, item: int, name: str, array) -> WrittenImage:
        data = encode(array, self.fmt)
        atomic_write(self.outdir / name, data)
        return WrittenImage(item, name, sha256(data), tuple(int(n) for n in array.shape))

    def _finish_one(self, batch: _PendingBatch, future: Future) -> None:
        try:
            written = future.result()
        except BaseException as exc:  # noqa: BLE001  (handed to the main thread)
            with self._lock:
                self._error = self._error or exc
            batch.done.set()
            return
        with self._lock:
            batch.written.append(written)
            batch.remaining -= 1
            last = batch.remaining == 0
        if not last:
            return
        try:
            if self.on_batch_done is not None:
                self.on_batch_done(batch.index, sorted(batch.written, key=lambda w: w.item))
        except BaseException as exc:  # noqa: BLE001
            with self._lock:
                self._error = self._error or exc
        finally:
            batch.done.set()

    def _raise_if_failed(self) -> None:
        with self._lock:
            error = self._error
        if error is not None:
            raise error
