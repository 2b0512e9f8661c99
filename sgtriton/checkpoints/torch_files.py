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
``torch.load`` is never called. Budgets (see ``safe_pickle``'s "Loading budgets"): all storages
of a legacy stream together must fit in the bytes that remain after its object pickle; a zip
storage record must be exactly its declared size, and no record may expand more than
:data:`MAX_ZIP_RATIO` times (``torch.save`` stores records uncompressed, ratio 1); ``data.pkl`` is
at most :data:`MAX_DATA_PKL` bytes. Each storage is read once, straight into its tensor.
"""

from __future__ import annotations

import io
import re
import struct
import zipfile
from typing import IO, Any

from sgtriton.checkpoints.errors import CheckpointError, quote
from sgtriton.checkpoints.safe_pickle import (
    STORAGE_TYPE_GLOBALS,
    Globals,
    StorageData,
    StorageType,
    element_size,
    remaining_bytes,
    restricted_load,
)

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001
#: How a legacy file starts: protocol-2 pickle of the magic number as a 10-byte LONG1.
LEGACY_PREFIX = b"\x80\x02\x8a\x0a" + LEGACY_MAGIC_NUMBER.to_bytes(10, "little")
ZIP_PREFIX = b"PK\x03\x04"
#: Most a zip record may expand (uncompressed / compressed size); ``torch.save`` writes ratio 1.
MAX_ZIP_RATIO = 16
#: Largest ``data.pkl`` (the object without its storages; a 1024^2 generator's is ~100 kB).
MAX_DATA_PKL = 64 * 1024 * 1024
_STORAGE_KEY = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, IndexError, KeyError,
               NotImplementedError, RuntimeError, OverflowError, struct.error, UnicodeDecodeError)

_HEADER_GLOBALS: Globals = {}


def _parse_storage_id(pid: Any, context: str) -> tuple[StorageType, str, int, Any]:
    if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
        kind = pid[0] if isinstance(pid, tuple) and pid else type(pid).__name__
        raise CheckpointError(f"{context}: unsupported persistent id of kind {quote(kind, 40)} (only tensor storages "
                              f"are read; pickled modules or other objects are refused)")
    if len(pid) < 5:
        raise CheckpointError(f"{context}: malformed storage id {quote(pid)}")
    storage_type, key, _location, numel = pid[1:5]
    view = pid[5] if len(pid) > 5 else None
    if not isinstance(storage_type, StorageType):
        raise CheckpointError(f"{context}: storage id names {quote(storage_type)}, not a torch storage class")
    if not isinstance(key, str) or not _STORAGE_KEY.fullmatch(key):
        raise CheckpointError(f"{context}: storage key {quote(key)} is not a plain name (letters, digits, _ . -)")
    if not isinstance(numel, int) or isinstance(numel, bool) or numel < 0:
        raise CheckpointError(f"{context}: storage {key!r} has element count {quote(numel)}, expected an int >= 0")
    return storage_type, key, numel, view


def read_legacy(f: IO[bytes], allowed: Globals, context: str) -> Any:
    """Read one legacy-format ``torch.save`` stream from ``f`` (see the module docstring)."""
    if restricted_load(f, _HEADER_GLOBALS, context) != LEGACY_MAGIC_NUMBER:
        raise CheckpointError(f"{context}: not a torch legacy file (bad magic number)")
    protocol = restricted_load(f, _HEADER_GLOBALS, context)
    if protocol != LEGACY_PROTOCOL_VERSION:
        raise CheckpointError(f"{context}: torch legacy protocol {quote(protocol)}, expected {LEGACY_PROTOCOL_VERSION}")
    sys_info = restricted_load(f, _HEADER_GLOBALS, context)
    if not isinstance(sys_info, dict) or sys_info.get("little_endian") is not True:
        raise CheckpointError(f"{context}: written on a big-endian machine or without sys info; not supported")

    budget = remaining_bytes(f)
    storages: dict[str, StorageData] = {}
    claimed = 0

    def persistent_load(pid: Any) -> StorageData:
        nonlocal claimed
        storage_type, key, numel, view = _parse_storage_id(pid, context)
        if view is not None:
            raise CheckpointError(f"{context}: storage views (torch < 1.0 files) are not supported")
        if key not in storages:
            nbytes = numel * element_size(storage_type.dtype)
            if budget is not None and claimed + nbytes + 8 > budget:
                raise CheckpointError(f"{context}: storage {key!r} claims {numel} x {storage_type.dtype} "
                                      f"({nbytes} bytes); with the storages before it that is more than the "
                                      f"{budget} bytes left in the file (truncated or corrupt)")
            claimed += nbytes + 8
            storages[key] = StorageData.allocate(storage_type.dtype, numel)
        storage = storages[key]
        if storage.dtype != storage_type.dtype or storage.numel != numel:
            raise CheckpointError(f"{context}: storage {key!r} is declared twice with different types or sizes")
        return storage

    obj = restricted_load(f, {**allowed, **STORAGE_TYPE_GLOBALS}, context, persistent_load)
    keys = restricted_load(f, _HEADER_GLOBALS, context)
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys) or sorted(keys) != sorted(storages):
        raise CheckpointError(f"{context}: the storage key list does not match the storages the object uses")
    for key in keys:
        storage = storages[key]
        header = f.read(8)
        if len(header) != 8:
            raise CheckpointError(f"{context} is truncated: storage {key!r} has no size header")
        (count,) = struct.unpack("<q", header)
        if count != storage.numel:
            raise CheckpointError(f"{context}: storage {key!r} holds {count} elements, its id says {storage.numel}")
        storage.fill_from(f, f"{context}, storage {key!r}")
    return obj


def load_storage_from_bytes(blob: Any) -> StorageData:
    """Stand-in for ``torch.storage._load_from_bytes``: parse the inner legacy blob ourselves."""
    if not isinstance(blob, (bytes, bytearray)):
        raise CheckpointError(f"storage blob: expected bytes, got {type(blob).__name__}")
    storage = read_legacy(io.BytesIO(blob), {}, "an inner tensor storage blob")
    if not isinstance(storage, StorageData):
        raise CheckpointError(f"an inner tensor storage blob holds a {type(storage).__name__}, not a storage")
    return storage


STORAGE_BLOB_GLOBALS: Globals = {("torch.storage", "_load_from_bytes"): load_storage_from_bytes}


def _checked_record(archive: zipfile.ZipFile, name: str, expected: int | None, context: str) -> zipfile.ZipInfo:
    info = archive.getinfo(name)
    if expected is not None and info.file_size != expected:
        raise CheckpointError(f"{context}: zip record {name!r} has {info.file_size} bytes, expected {expected}")
    if info.file_size > MAX_ZIP_RATIO * max(info.compress_size, 1) + 4096:
        raise CheckpointError(f"{context}: zip record {name!r} expands {info.compress_size} -> {info.file_size} "
                              f"bytes, more than {MAX_ZIP_RATIO}x (a zip bomb, or not written by torch.save)")
    return info


def read_zip(f: IO[bytes], allowed: Globals, context: str) -> Any:
    """Read a zip-format ``torch.save`` archive (see the module docstring)."""
    try:
        archive = zipfile.ZipFile(f)
        names = archive.namelist()
    except _ZIP_ERRORS as exc:
        raise CheckpointError(f"{context} is not a readable zip archive (truncated or corrupt): {exc}") from exc
    pickles = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
    if len(pickles) != 1:
        raise CheckpointError(f"{context}: expected one data.pkl in the torch zip archive, found {len(pickles)}")
    prefix = pickles[0][: -len("data.pkl")]
    if prefix.count("/") > 1 or prefix.startswith("/") or ".." in prefix or "\\" in prefix:
        raise CheckpointError(f"{context}: torch archive folder {prefix!r} is not a plain name")
    storages: dict[str, StorageData] = {}

    def persistent_load(pid: Any) -> StorageData:
        storage_type, key, numel, _view = _parse_storage_id(pid, context)
        if key not in storages:
            name = f"{prefix}data/{key}"
            storage = None
            try:
                _checked_record(archive, name, numel * element_size(storage_type.dtype), context)
                storage = StorageData.allocate(storage_type.dtype, numel)
                with archive.open(name) as record:
                    storage.fill_from(record, f"{context}, storage {key!r}")
            except KeyError as exc:
                raise CheckpointError(f"{context}: the archive lacks storage record {name!r}") from exc
            except CheckpointError:
                raise
            except _ZIP_ERRORS as exc:
                raise CheckpointError(f"{context}: storage record {name!r} is corrupt: {exc}") from exc
            storages[key] = storage
        storage = storages[key]
        if storage.dtype != storage_type.dtype or storage.numel != numel:
            raise CheckpointError(f"{context}: storage {key!r} is declared twice with different types or sizes")
        return storage

    try:
        if f"{prefix}byteorder" in names:
            _checked_record(archive, f"{prefix}byteorder", None, context)
            if archive.read(f"{prefix}byteorder")[:64].strip() != b"little":
                raise CheckpointError(f"{context}: written with big-endian byte order; not supported")
        info = _checked_record(archive, pickles[0], None, context)
        if info.file_size > MAX_DATA_PKL:
            raise CheckpointError(f"{context}: data.pkl is {info.file_size} bytes, more than the {MAX_DATA_PKL} a "
                                  f"checkpoint's object needs")
        with archive.open(pickles[0]) as data_pkl:
            data = data_pkl.read(MAX_DATA_PKL + 1)
    except CheckpointError:
        raise
    except _ZIP_ERRORS as exc:
        raise CheckpointError(f"{context}: data.pkl is corrupt: {exc}") from exc
    return restricted_load(io.BytesIO(data), {**allowed, **STORAGE_TYPE_GLOBALS}, context, persistent_load)
