"""Reading ``torch.save`` files with our own code: the legacy stream format and the zip format.

Legacy format (``torch.save(..., _use_new_zipfile_serialization=False)``; also every storage blob
inside an NVlabs pickle, via ``torch.storage._load_from_bytes``) is a sequence of pickles::

    magic number 0x1950a86a20f9469cfc6c | protocol 1001 | sys-info dict
    | the object, whose persistent ids are ('storage', <Storage class>, key, location, numel[, view])
    | the list of storage keys | per key: int64 element count, then the raw little-endian bytes

Zip format (``torch.save`` default since 1.6; rosinality ``.pt`` files): ``<archive>/data.pkl``
holds the object with persistent ids ``('storage', <Storage class>, key, location, numel)`` and
``<archive>/data/<key>`` the raw bytes of each storage.

Every pickle here goes through :func:`~sgtriton.checkpoints.safe_pickle.restricted_load`;
``torch.load`` is never called.
"""

from __future__ import annotations

import io
import os
import struct
import zipfile
from typing import IO, Any

from sgtriton.checkpoints.errors import CheckpointError
from sgtriton.checkpoints.safe_pickle import (
    STORAGE_TYPE_GLOBALS,
    Globals,
    StorageData,
    StorageType,
    element_size,
    restricted_load,
)

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001
#: How a legacy file starts: protocol-2 pickle of the magic number as a 10-byte LONG1.
LEGACY_PREFIX = b"\x80\x02\x8a\x0a" + LEGACY_MAGIC_NUMBER.to_bytes(10, "little")
ZIP_PREFIX = b"PK\x03\x04"

_HEADER_GLOBALS: Globals = {}


def _remaining_bytes(f: IO[bytes]) -> int | None:
    try:
        pos = f.tell()
        end = f.seek(0, os.SEEK_END)
        f.seek(pos)
        return end - pos
    except (OSError, AttributeError, ValueError):
        return None


def _parse_storage_id(pid: Any, context: str) -> tuple[StorageType, str, int, Any]:
    if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
        kind = pid[0] if isinstance(pid, tuple) and pid else type(pid).__name__
        raise CheckpointError(f"{context}: unsupported persistent id of kind {kind!r} (only tensor storages "
                              f"are read; pickled modules or other objects are refused)")
    if len(pid) < 5:
        raise CheckpointError(f"{context}: malformed storage id {pid!r}")
    storage_type, key, _location, numel = pid[1:5]
    view = pid[5] if len(pid) > 5 else None
    if not isinstance(storage_type, StorageType):
        raise CheckpointError(f"{context}: storage id names {storage_type!r}, not a torch storage class")
    if not isinstance(key, str) or not isinstance(numel, int) or isinstance(numel, bool) or numel < 0:
        raise CheckpointError(f"{context}: malformed storage id {pid!r}")
    return storage_type, key, numel, view


def read_legacy(f: IO[bytes], allowed: Globals, context: str) -> Any:
    """Read one legacy-format ``torch.save`` stream from ``f`` (see the module docstring)."""
    if restricted_load(f, _HEADER_GLOBALS, context) != LEGACY_MAGIC_NUMBER:
        raise CheckpointError(f"{context}: not a torch legacy file (bad magic number)")
    protocol = restricted_load(f, _HEADER_GLOBALS, context)
    if protocol != LEGACY_PROTOCOL_VERSION:
        raise CheckpointError(f"{context}: torch legacy protocol {protocol!r}, expected {LEGACY_PROTOCOL_VERSION}")
    sys_info = restricted_load(f, _HEADER_GLOBALS, context)
    if not isinstance(sys_info, dict) or not sys_info.get("little_endian", False):
        raise CheckpointError(f"{context}: written on a big-endian machine or without sys info; not supported")

    budget = _remaining_bytes(f)
    storages: dict[str, StorageData] = {}

    def persistent_load(pid: Any) -> StorageData:
        storage_type, key, numel, view = _parse_storage_id(pid, context)
        if key not in storages:
            if budget is not None and numel * element_size(storage_type.dtype) > budget:
                raise CheckpointError(f"{context}: storage {key!r} claims {numel} elements, more than the file holds")
            storages[key] = StorageData.allocate(storage_type.dtype, numel)
        storage = storages[key]
        if storage.dtype != storage_type.dtype or storage.numel != numel:
            raise CheckpointError(f"{context}: storage {key!r} is declared twice with different types or sizes")
        if view is not None:
            raise CheckpointError(f"{context}: storage views (torch < 1.0 files) are not supported")
        return storage

    obj = restricted_load(f, {**allowed, **STORAGE_TYPE_GLOBALS}, context, persistent_load)
    keys = restricted_load(f, _HEADER_GLOBALS, context)
    if not isinstance(keys, list) or sorted(map(str, keys)) != sorted(storages):
        raise CheckpointError(f"{context}: the storage key list does not match the storages the object uses")
    for key in keys:
        storage = storages[key]
        header = f.read(8)
        if len(header) != 8:
            raise CheckpointError(f"{context} is truncated: storage {key!r} has no size header")
        (count,) = struct.unpack("<q", header)
        if count != storage.numel:
            raise CheckpointError(f"{context}: storage {key!r} holds {count} elements, its id says {storage.numel}")
        storage.fill(f.read(count * element_size(storage.dtype)), f"{context}, storage {key!r}")
    return obj


def load_storage_from_bytes(blob: Any) -> StorageData:
    """Stand-in for ``torch.storage._load_from_bytes``: parse the inner legacy blob ourselves."""
    if not isinstance(blob, (bytes, bytearray)):
        raise CheckpointError(f"storage blob: expected bytes, got {type(blob).__name__}")
    storage = read_legacy(io.BytesIO(bytes(blob)), {}, "an inner tensor storage blob")
    if not isinstance(storage, StorageData):
        raise CheckpointError(f"an inner tensor storage blob holds a {type(storage).__name__}, not a storage")
    return storage


STORAGE_BLOB_GLOBALS: Globals = {("torch.storage", "_load_from_bytes"): load_storage_from_bytes}


def read_zip(f: IO[bytes], allowed: Globals, context: str) -> Any:
    """Read a zip-format ``torch.save`` archive (see the module docstring)."""
    try:
        archive = zipfile.ZipFile(f)
        names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise CheckpointError(f"{context} is not a readable zip archive (truncated or corrupt): {exc}") from exc
    pickles = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
    if len(pickles) != 1:
        raise CheckpointError(f"{context}: expected one data.pkl in the torch zip archive, found {len(pickles)}")
    prefix = pickles[0][: -len("data.pkl")]
    if f"{prefix}byteorder" in names and archive.read(f"{prefix}byteorder").strip() != b"little":
        raise CheckpointError(f"{context}: written with big-endian byte order; not supported")
    storages: dict[str, StorageData] = {}

    def persistent_load(pid: Any) -> StorageData:
        storage_type, key, numel, _view = _parse_storage_id(pid, context)
        if key not in storages:
            name = f"{prefix}data/{key}"
            try:
                info = archive.getinfo(name)
                if info.file_size != numel * element_size(storage_type.dtype):
                    raise CheckpointError(f"{context}: storage {key!r} has {info.file_size} bytes, its id says "
                                          f"{numel} x {storage_type.dtype}")
                data = archive.read(name)
            except KeyError as exc:
                raise CheckpointError(f"{context}: the archive lacks storage record {name!r}") from exc
            except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
                raise CheckpointError(f"{context}: storage record {name!r} is corrupt: {exc}") from exc
            storage = StorageData.allocate(storage_type.dtype, numel)
            storage.fill(data, f"{context}, storage {key!r}")
            storages[key] = storage
        return storages[key]

    try:
        with archive.open(pickles[0]) as data_pkl:
            return restricted_load(io.BytesIO(data_pkl.read()), {**allowed, **STORAGE_TYPE_GLOBALS}, context,
                                   persistent_load)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise CheckpointError(f"{context}: data.pkl is corrupt: {exc}") from exc
