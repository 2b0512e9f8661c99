"""sgtriton's own format: safetensors weights with the full configuration as JSON metadata.

``__metadata__`` holds ``format = "sgtriton.generator"``, ``format_version = "1"`` and ``config``
(``GeneratorConfig.to_dict()`` as JSON). The tensors are the generator's ``state_dict()`` under its
own names, so a round trip is exact, and loading needs no pickle at all.
"""

from __future__ import annotations

import json
import math
import os
import struct
from typing import IO, Any

import safetensors.torch
import torch

from sgtriton.checkpoints.assemble import build_loaded_generator
from sgtriton.checkpoints.errors import CheckpointError, quote
from sgtriton.checkpoints.safe_pickle import MAX_DIM, MAX_NDIM, element_size, nesting_depth
from sgtriton.config import GeneratorConfig
from sgtriton.files import atomic_write
from sgtriton.generator import Generator

FORMAT_NAME = "sgtriton.generator"
FORMAT_VERSION = "1"
SUFFIX = ".safetensors"
_MAX_HEADER = 100 * 1024 * 1024
#: Deepest JSON nesting accepted in the header and in the saved configuration (ours: 3).
MAX_JSON_NESTING = 32
#: safetensors dtype names -> torch dtypes (the ones a generator's state dict can hold).
DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
          "BOOL": torch.bool}
#: Suffixes that say the file is in another format; saving native weights under them is refused.
OTHER_FORMAT_SUFFIXES = (".pkl", ".pickle", ".pt", ".pth", ".ckpt", ".bin", ".npz", ".npy", ".h5", ".onnx",
                         ".json", ".png", ".jpg", ".jpeg")


def looks_like_safetensors(head: bytes) -> bool:
    """An 8-byte little-endian header length followed by the JSON header's ``{``."""
    return len(head) >= 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] < _MAX_HEADER


def encode(G: Generator) -> bytes:
    """``G`` as native-format bytes."""
    if not isinstance(G, Generator):
        raise TypeError(f"G: expected an sgtriton Generator, got {type(G).__name__}")
    try:
        config_json = json.dumps(G.config.to_dict(), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"G.config: block_kwargs must be JSON-serialisable to be saved: {exc}") from exc
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in G.state_dict().items()}
    metadata = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "config": config_json}
    return safetensors.torch.save(tensors, metadata=metadata)


def save_native(G: Generator, path_or_file: str | os.PathLike[str] | IO[bytes]) -> None:
    """Write ``G`` to a binary file object, or atomically to a path (temporary file, fsync, rename).

    A path whose suffix names another format (``x.pkl``, ``x.pt`` ...) is refused: the file would
    be safetensors whatever its name says.
    """
    if hasattr(path_or_file, "write"):
        path_or_file.write(encode(G))
        return
    path = os.fspath(path_or_file)
    suffix = os.path.splitext(path)[1].lower()
    if suffix in OTHER_FORMAT_SUFFIXES:
        raise ValueError(f"path={path!r}: the suffix {suffix!r} names another format; sgtriton saves safetensors "
                         f"(use a {SUFFIX} name)")
    atomic_write(path, encode(G))


def _json(text: bytes | str, what: str, source: str) -> Any:
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError as exc:
        raise CheckpointError(f"{source}: {what} nests deeper than Python can parse; expected at most "
                              f"{MAX_JSON_NESTING} levels") from exc
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError, over-long integers, NaN / Infinity
        raise CheckpointError(f"{source}: {what} is not valid JSON: {quote(str(exc), 160)}") from exc
    def cyclic() -> None:  # pragma: no cover - JSON cannot express cycles
        raise CheckpointError(f"{source}: {what} is cyclic")

    if nesting_depth(value, MAX_JSON_NESTING, cyclic) > MAX_JSON_NESTING:
        raise CheckpointError(f"{source}: {what} nests more than {MAX_JSON_NESTING} levels deep")
    return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a finite number")


def read_header(data: bytes | bytearray, source: str) -> tuple[dict[str, Any], int]:
    """The safetensors JSON header and where the tensor bytes start."""
    if len(data) < 8:
        raise CheckpointError(f"{source}: too short for a safetensors file")
    (size,) = struct.unpack("<Q", bytes(data[:8]))
    if size > len(data) - 8 or size > _MAX_HEADER:
        raise CheckpointError(f"{source} is truncated: its safetensors header claims {size} bytes, the file has "
                              f"{len(data) - 8}")
    header = _json(bytes(data[8 : 8 + size]), "the safetensors header", source)
    if not isinstance(header, dict):
        raise CheckpointError(f"{source}: the safetensors header is a {type(header).__name__}, expected an object")
    return header, 8 + size


def read_metadata(data: bytes | bytearray, source: str) -> dict[str, Any]:
    metadata = read_header(data, source)[0].get("__metadata__")
    return metadata if isinstance(metadata, dict) else {}


def read_tensors(data: bytearray, header: dict[str, Any], start: int, source: str) -> dict[str, torch.Tensor]:
    """Zero-copy tensor views into ``data`` after checking every entry's dtype, shape and byte range."""
    tensors: dict[str, torch.Tensor] = {}
    ranges = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict) or entry.get("dtype") not in DTYPES:
            raise CheckpointError(f"{source}: tensor {quote(name)}: expected a dtype among {sorted(DTYPES)}")
        dtype, shape, offsets = DTYPES[entry["dtype"]], entry.get("shape"), entry.get("data_offsets")
        if not isinstance(shape, list) or len(shape) > MAX_NDIM or not all(
                isinstance(n, int) and not isinstance(n, bool) and 0 <= n < MAX_DIM for n in shape):
            raise CheckpointError(f"{source}: tensor {quote(name)}: shape {quote(shape)}, expected a list of at "
                                  f"most {MAX_NDIM} ints in [0, {MAX_DIM})")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(
                isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
            raise CheckpointError(f"{source}: tensor {quote(name)}: data_offsets {quote(offsets)}, expected "
                                  f"[begin, end]")
        begin, end = offsets
        nbytes = math.prod(shape) * element_size(dtype)
        if not 0 <= begin <= end <= len(data) - start or end - begin != nbytes:
            raise CheckpointError(f"{source}: tensor {quote(name)} of shape {shape} x {dtype} needs {nbytes} bytes; "
                                  f"its data_offsets {offsets} give {end - begin} of the {len(data) - start} present "
                                  f"(truncated or corrupt)")
        ranges.append((begin, end, name))
        flat = (torch.frombuffer(data, dtype=dtype, count=math.prod(shape), offset=start + begin) if nbytes
                else torch.empty(0, dtype=dtype))
        tensors[name] = flat.reshape(shape)
    ranges.sort()
    for (_, end, first), (begin, _, second) in zip(ranges, ranges[1:], strict=False):
        if begin < end:
            raise CheckpointError(f"{source}: tensors {quote(first)} and {quote(second)} overlap in the file")
    return tensors


def generator_from_native(data: bytes | bytearray, *, source: str, backend: str | None = "auto",
                          device: torch.device | str | None = None) -> Generator:
    """Read native-format bytes into a generator (tensors are views of ``data`` until copied in)."""
    header, start = read_header(data, source)
    metadata = header.get("__metadata__")
    metadata = metadata if isinstance(metadata, dict) else {}
    if metadata.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{source}: a safetensors file without sgtriton metadata (format="
                              f"{quote(metadata.get('format'))}); sgtriton needs the configuration saved beside the "
                              f"weights (write it with sgtriton.checkpoints.save or `sgtriton convert`)")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{source}: native format version {quote(metadata.get('format_version'))}; this "
                              f"sgtriton reads version {FORMAT_VERSION}")
    if not isinstance(metadata.get("config"), str):
        raise CheckpointError(f"{source}: __metadata__.config is missing; expected the configuration as JSON text")
    try:
        config = GeneratorConfig.from_dict(_json(metadata["config"], "__metadata__.config", source))
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(f"{source}: the saved configuration is invalid: {exc}") from exc
    if not isinstance(data, bytearray):
        data = bytearray(data)
    tensors = read_tensors(data, header, start, source)
    return build_loaded_generator(config, tensors, source=source, backend=backend, device=device)
