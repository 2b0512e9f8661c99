"""Recognising a checkpoint: the container from its first bytes, the format from its contents.

Containers: safetensors (sgtriton's native format), a ``torch.save`` zip archive or legacy stream
(rosinality ``.pt``), or a plain pickle (NVlabs PyTorch snapshots, NVlabs TensorFlow pickles).
Pickled containers are read with the allow-list that fits them, and the unpickled contents decide
the format: persistent NVlabs records -> ``'nvlabs'``, TF ``Network`` records -> ``'tensorflow'``,
a ``g_ema`` state dict -> ``'rosinality'``.
"""

from __future__ import annotations

from typing import IO, Any

from sgtriton.checkpoints.errors import CheckpointError
from sgtriton.checkpoints.native import looks_like_safetensors
from sgtriton.checkpoints.nvlabs import is_nvlabs_snapshot
from sgtriton.checkpoints.rosinality import is_rosinality_checkpoint
from sgtriton.checkpoints.safe_pickle import (
    CONTAINER_GLOBALS,
    NAMESPACE_GLOBALS,
    NUMPY_GLOBALS,
    RECORD_GLOBALS,
    TENSOR_GLOBALS,
    restricted_load,
)
from sgtriton.checkpoints.tensorflow import is_tensorflow_pickle
from sgtriton.checkpoints.torch_files import LEGACY_PREFIX, STORAGE_BLOB_GLOBALS, ZIP_PREFIX, read_legacy, read_zip

FORMATS = ("native", "nvlabs", "tensorflow", "rosinality")

#: Plain network pickles: NVlabs persistence records, TF networks, tensors with inner storage blobs.
NETWORK_PICKLE_GLOBALS = {**CONTAINER_GLOBALS, **NUMPY_GLOBALS, **TENSOR_GLOBALS, **STORAGE_BLOB_GLOBALS,
                          **RECORD_GLOBALS}
#: ``torch.save`` files: tensors, containers, rosinality's argparse ``args``.
TORCH_FILE_GLOBALS = {**CONTAINER_GLOBALS, **NUMPY_GLOBALS, **TENSOR_GLOBALS, **NAMESPACE_GLOBALS}

_PICKLE_STARTS = (b"(", b"c", b"]", b"}", b"\x80")


def container_of(head: bytes) -> str:
    """``'safetensors'``, ``'torch-zip'``, ``'torch-legacy'``, ``'pickle'`` or ``'unknown'``."""
    if head.startswith(ZIP_PREFIX):
        return "torch-zip"
    if head.startswith(LEGACY_PREFIX):
        return "torch-legacy"
    if looks_like_safetensors(head):
        return "safetensors"
    if head[:1] in _PICKLE_STARTS and not (head[:1] == b"\x80" and head[1:2] not in (b"\x02", b"\x03", b"\x04",
                                                                                      b"\x05")):
        return "pickle"
    return "unknown"


def read_container(f: IO[bytes], container: str, source: str) -> Any:
    """Unpickle a pickled container through the allow-list that fits it."""
    if container == "torch-zip":
        return read_zip(f, TORCH_FILE_GLOBALS, source)
    if container == "torch-legacy":
        return read_legacy(f, TORCH_FILE_GLOBALS, source)
    if container == "pickle":
        return restricted_load(f, NETWORK_PICKLE_GLOBALS, source)
    raise CheckpointError(f"{source}: not a recognised checkpoint (expected an NVlabs or TensorFlow .pkl, a "
                          f"rosinality .pt or an sgtriton .safetensors file)")


def format_of(contents: Any, source: str) -> str:
    """The format an unpickled checkpoint is in (see the module docstring)."""
    if is_nvlabs_snapshot(contents) or (isinstance(contents, dict) and "G_ema" in contents):
        return "nvlabs"
    if is_tensorflow_pickle(contents):
        return "tensorflow"
    if is_rosinality_checkpoint(contents):
        return "rosinality"
    kind = type(contents).__name__
    keys = f" with keys {sorted(map(str, contents))[:10]}" if isinstance(contents, dict) else ""
    raise CheckpointError(f"{source}: unrecognised checkpoint contents (a {kind}{keys}); expected an NVlabs "
                          f"snapshot with 'G_ema', a TensorFlow (G, D, Gs) tuple or a rosinality dict with 'g_ema'")
