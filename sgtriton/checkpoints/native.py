"""sgtriton's own format: safetensors weights with the full configuration as JSON metadata.

``__metadata__`` holds ``format = "sgtriton.generator"``, ``format_version = "1"`` and ``config``
(``GeneratorConfig.to_dict()`` as JSON). The tensors are the generator's ``state_dict()`` under its
own names, so a round trip is exact, and loading needs no pickle at all.
"""

from __future__ import annotations

import json
import os
import struct
from typing import IO, Any

import safetensors.torch
import torch

from sgtriton.checkpoints.assemble import build_loaded_generator
from sgtriton.checkpoints.errors import CheckpointError
from sgtriton.config import GeneratorConfig
from sgtriton.generator import Generator

FORMAT_NAME = "sgtriton.generator"
FORMAT_VERSION = "1"
_MAX_HEADER = 100 * 1024 * 1024


def looks_like_safetensors(head: bytes) -> bool:
    """An 8-byte little-endian header length followed by the JSON header's ``{``."""
    return len(head) >= 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] < _MAX_HEADER


def encode(G: Generator) -> bytes:
    """``G`` as native-format bytes."""
    if not isinstance(G, Generator):
        raise TypeError(f"G: expected an sgtriton Generator, got {type(G).__name__}")
    try:
        config_json = json.dumps(G.config.to_dict(), sort_keys=True)
    except TypeError as exc:
        raise ValueError(f"G.config: block_kwargs must be JSON-serialisable to be saved: {exc}") from exc
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in G.state_dict().items()}
    metadata = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "config": config_json}
    return safetensors.torch.save(tensors, metadata=metadata)


def save_native(G: Generator, path_or_file: str | os.PathLike[str] | IO[bytes]) -> None:
    data = encode(G)
    if hasattr(path_or_file, "write"):
        path_or_file.write(data)
    else:
        with open(path_or_file, "wb") as f:
            f.write(data)


def read_metadata(data: bytes, source: str) -> dict[str, Any]:
    if len(data) < 8:
        raise CheckpointError(f"{source}: too short for a safetensors file")
    (size,) = struct.unpack("<Q", data[:8])
    if size > len(data) - 8:
        raise CheckpointError(f"{source} is truncated: its safetensors header claims {size} bytes")
    try:
        header = json.loads(data[8 : 8 + size])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{source}: the safetensors header is not valid JSON: {exc}") from exc
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    return metadata if isinstance(metadata, dict) else {}


def generator_from_native(data: bytes, *, source: str, backend: str | None = "auto",
                          device: torch.device | str | None = None) -> Generator:
    """Read native-format bytes into a generator."""
    metadata = read_metadata(data, source)
    if metadata.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{source}: a safetensors file without sgtriton metadata (format="
                              f"{metadata.get('format')!r}); sgtriton needs the configuration saved beside the "
                              f"weights (write it with sgtriton.checkpoints.save or `sgtriton convert`)")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{source}: native format version {metadata.get('format_version')!r}; this sgtriton "
                              f"reads version {FORMAT_VERSION}")
    try:
        config = GeneratorConfig.from_dict(json.loads(metadata["config"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{source}: the saved configuration is missing or invalid: {exc}") from exc
    try:
        tensors = safetensors.torch.load(data)
    except Exception as exc:  # safetensors raises its own SafetensorError for corrupt data
        raise CheckpointError(f"{source}: corrupt safetensors data: {exc}") from exc
    return build_loaded_generator(config, tensors, source=source, backend=backend, device=device)
