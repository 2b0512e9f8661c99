"""A restricted unpickler and the inert objects it builds instead of running pickled code.

Every pickle sgtriton reads goes through :func:`restricted_load`. The unpickler resolves a global
``module.name`` only through an explicit allow-list that maps it to one of *our* callables:

* containers and literals: ``collections.OrderedDict``, ``builtins.set`` / ``frozenset``,
  ``_codecs.encode`` (protocol-2 bytes), ``copyreg._reconstructor`` (only for the records below);
* tensors: ``torch._utils._rebuild_tensor_v2`` (and ``_rebuild_tensor``, ``_rebuild_parameter``,
  ``_rebuild_parameter_with_state``) rebuilt by :func:`rebuild_tensor_v2` etc. from a
  :class:`StorageData` whose bytes our own parser read (``torch_files``); storage classes
  (``torch.FloatStorage`` ...) become :class:`StorageType` markers;
* numpy arrays and scalars (``numpy.core.multiarray._reconstruct`` / ``scalar``, ``numpy.dtype``,
  ``numpy.ndarray``; numpy >= 2 spells the module ``numpy._core``) with checked arguments;
* records: ``torch_utils.persistence._reconstruct_persistent_obj`` -> :class:`PersistentRecord`
  (the embedded ``module_src`` is hashed, never executed), ``dnnlib.tflib.network.Network`` ->
  :class:`TFNetworkRecord`, ``dnnlib.util.EasyDict`` -> :class:`EasyDictRecord`,
  ``argparse.Namespace`` -> :class:`NamespaceRecord`.

Anything else -- ``os.system``, ``builtins.eval``, ``subprocess.Popen``, a class from the pickled
repository -- raises :class:`~sgtriton.checkpoints.errors.UnsafePickleError` naming the global,
before it is called.
"""

from __future__ import annotations

import _compat_pickle
import hashlib
import io
import math
import pickle
import struct
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np
import torch

from sgtriton.checkpoints.errors import CheckpointError, UnsafePickleError

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct as _np_reconstruct_impl
    from numpy._core.multiarray import scalar as _np_scalar_impl
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct as _np_reconstruct_impl
    from numpy.core.multiarray import scalar as _np_scalar_impl

Globals = Mapping[tuple[str, str], Any]

# numpy >= 2 and dnnlib spell some modules differently; the allow-list uses one spelling.
_MODULE_ALIASES = {
    "numpy._core.multiarray": "numpy.core.multiarray",
    "numpy._core.numeric": "numpy.core.numeric",
    "dnnlib": "dnnlib.util",
}


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose globals come only from ``allowed``; persistent ids only from
    ``persistent_load`` (when given)."""

    def __init__(self, file: IO[bytes], allowed: Globals, context: str,
                 persistent_load: Callable[[Any], Any] | None = None) -> None:
        # latin1 reads Python 2 byte strings (old numpy arrays) the way NVlabs' own loaders do.
        super().__init__(file, encoding="latin1")
        self._allowed = allowed
        self._context = context
        self._persistent = persistent_load

    def find_class(self, module: str, name: str) -> Any:
        # Python 2 names first (what the standard unpickler's fix_imports does), then our aliases.
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        key = (_MODULE_ALIASES.get(module, module), name)
        if key not in self._allowed:
            raise UnsafePickleError(f"{module}.{name}", self._context)
        return self._allowed[key]

    def persistent_load(self, pid: Any) -> Any:
        if self._persistent is None:
            raise CheckpointError(f"{self._context}: unexpected persistent id {_short(pid)} in a plain pickle")
        return self._persistent(pid)


def restricted_load(file: IO[bytes], allowed: Globals, context: str,
                    persistent_load: Callable[[Any], Any] | None = None) -> Any:
    """Unpickle one object from ``file`` with :class:`RestrictedUnpickler`.

    Truncation and corruption become :class:`CheckpointError` naming ``context``.
    """
    try:
        return RestrictedUnpickler(file, allowed, context, persistent_load).load()
    except CheckpointError:
        raise
    except EOFError as exc:
        raise CheckpointError(f"{context} is truncated: the pickle ends before its STOP opcode") from exc
    except (pickle.UnpicklingError, ValueError, TypeError, KeyError, IndexError, AttributeError,
            struct.error, UnicodeDecodeError, RecursionError, OverflowError, MemoryError) as exc:
        raise CheckpointError(f"{context} is corrupt: {type(exc).__name__}: {exc}") from exc


def restricted_loads(data: bytes, allowed: Globals, context: str) -> Any:
    return restricted_load(io.BytesIO(data), allowed, context)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------
# Inert records


class _Inert:
    """Base of records that pickle may BUILD: state must be a dict and is stored, never run."""

    state: dict[str, Any]

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise CheckpointError(f"{type(self).__name__}: expected a dict as pickled state, got "
                                  f"{type(state).__name__}")
        self.state = state

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, "state", {}).get(key, default)


class TFNetworkRecord(_Inert):
    """What ``dnnlib.tflib.network.Network`` unpickles into: its state, and nothing that runs.

    State keys (TF ``Network.__getstate__``): ``version``, ``name``, ``static_kwargs``,
    ``components`` (sub-networks), ``build_module_src`` (never executed), ``build_func_name``,
    ``variables`` (list of ``(name, numpy array)``, names relative to this network).
    """

    @property
    def name(self) -> str:
        return str(self.get("name", ""))

    @property
    def version(self) -> int:
        return int(self.get("version", 0))

    @property
    def static_kwargs(self) -> dict[str, Any]:
        return dict(self.get("static_kwargs") or {})

    @property
    def components(self) -> dict[str, Any]:
        return dict(self.get("components") or {})

    @property
    def build_func_name(self) -> str:
        return str(self.get("build_func_name", ""))

    @property
    def variables(self) -> dict[str, Any]:
        variables = self.get("variables") or []
        try:
            return {str(name): value for name, value in variables}
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"TensorFlow network {self.name!r}: 'variables' is not a list of "
                                  f"(name, array) pairs") from exc


class NamespaceRecord(_Inert):
    """What ``argparse.Namespace`` (rosinality's training ``args``) unpickles into."""

    def __getattr__(self, name: str) -> Any:
        state = self.__dict__.get("state", {})
        if name in state:
            return state[name]
        raise AttributeError(name)


class EasyDictRecord(dict):
    """``dnnlib.util.EasyDict``: a dict; attribute access is not needed by the readers."""


@dataclass
class PersistentRecord:
    """An object pickled by NVlabs ``torch_utils.persistence``: the class name and its ``__dict__``.

    ``module_src_sha256`` identifies the defining source file; the source itself is dropped.
    """

    class_name: str
    version: int
    state: dict[str, Any]
    module_src_sha256: str = ""

    def __setstate__(self, state: Any) -> None:
        raise CheckpointError("persistent record: unexpected BUILD state after _reconstruct_persistent_obj")

    def attr(self, name: str, default: Any = None) -> Any:
        return self.state.get(name, default)

    @property
    def parameters(self) -> Mapping[str, Any]:
        return self.state.get("_parameters") or {}

    @property
    def buffers(self) -> Mapping[str, Any]:
        return self.state.get("_buffers") or {}

    @property
    def non_persistent_buffers(self) -> set[str]:
        return set(self.state.get("_non_persistent_buffers_set") or ())

    @property
    def modules(self) -> Mapping[str, Any]:
        return self.state.get("_modules") or {}

    @property
    def init_kwargs(self) -> dict[str, Any]:
        return dict(self.state.get("_init_kwargs") or {})


def reconstruct_persistent_obj(meta: Any) -> PersistentRecord:
    """Stand-in for ``torch_utils.persistence._reconstruct_persistent_obj``: records, never execs."""
    if not isinstance(meta, dict):
        raise CheckpointError(f"persistent object: expected a meta dict, got {type(meta).__name__}")
    if meta.get("type") != "class":
        raise CheckpointError(f"persistent object: meta type={meta.get('type')!r}, expected 'class'")
    class_name, state, src = meta.get("class_name"), meta.get("state"), meta.get("module_src", "")
    if not isinstance(class_name, str) or not isinstance(state, dict):
        raise CheckpointError("persistent object: meta needs a str 'class_name' and a dict 'state'")
    digest = hashlib.sha256(src.encode("utf-8", "replace")).hexdigest() if isinstance(src, str) else ""
    return PersistentRecord(class_name, int(meta.get("version", 0) or 0), dict(state), digest)


_INERT_CLASSES = (TFNetworkRecord, NamespaceRecord, EasyDictRecord)


def safe_reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """``copyreg._reconstructor`` (protocol 0/1 objects), limited to the inert record classes."""
    if cls not in _INERT_CLASSES or base not in (object, dict):
        raise CheckpointError(f"copyreg._reconstructor: refusing to build {_short(cls)} on {_short(base)}")
    if base is dict:
        obj = dict.__new__(cls)
        if state is not None:
            dict.update(obj, state)
        return obj
    return object.__new__(cls)


# ---------------------------------------------------------------------------------------------
# Tensors and storages


@dataclass(frozen=True)
class StorageType:
    """Marker for a pickled ``torch.<Name>Storage`` class: only its element type is used."""

    name: str
    dtype: torch.dtype


STORAGE_TYPES: dict[str, StorageType] = {
    name: StorageType(name, dtype)
    for name, dtype in {
        "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
        "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
        "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
        "BoolStorage": torch.bool, "UntypedStorage": torch.uint8,
    }.items()
}


@dataclass
class StorageData:
    """A flat storage of ``numel`` elements of ``dtype``; ``tensor`` is filled by the file reader."""

    dtype: torch.dtype
    numel: int
    tensor: torch.Tensor = field(repr=False)
    filled: bool = False

    @classmethod
    def allocate(cls, dtype: torch.dtype, numel: int) -> StorageData:
        return cls(dtype, numel, torch.empty(numel, dtype=dtype))

    def fill(self, data: bytes | bytearray | memoryview, context: str) -> None:
        nbytes = self.numel * element_size(self.dtype)
        if len(data) != nbytes:
            raise CheckpointError(f"{context}: storage of {self.numel} x {self.dtype} needs {nbytes} bytes, "
                                  f"found {len(data)} (truncated or corrupt)")
        if nbytes:
            self.tensor.view(torch.uint8).copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8))
        self.filled = True


def element_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _int_tuple(value: Any, what: str) -> tuple[int, ...]:
    if isinstance(value, torch.Size):
        value = tuple(value)
    if not isinstance(value, (tuple, list)) or not all(isinstance(v, int) and not isinstance(v, bool)
                                                       for v in value):
        raise CheckpointError(f"tensor {what}: expected a tuple of ints, got {_short(value)}")
    return tuple(value)


def _tensor_view(storage: Any, offset: Any, size: Any, stride: Any) -> torch.Tensor:
    if not isinstance(storage, StorageData):
        raise CheckpointError(f"tensor storage: expected a storage read by sgtriton, got {type(storage).__name__}")
    size, stride = _int_tuple(size, "size"), _int_tuple(stride, "stride")
    if len(size) != len(stride) or not isinstance(offset, int) or offset < 0 or min(size + stride, default=0) < 0:
        raise CheckpointError(f"tensor: inconsistent size {size}, stride {stride}, offset {offset!r}")
    if math.prod(size) == 0:
        return torch.empty(size, dtype=storage.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    if last >= storage.numel:
        raise CheckpointError(f"tensor of size {list(size)}, stride {list(stride)}, offset {offset} reaches "
                              f"element {last} of a storage holding {storage.numel} (corrupt file)")
    return torch.as_strided(storage.tensor, size, stride, offset)


def rebuild_tensor_v2(storage: Any, storage_offset: Any, size: Any, stride: Any, requires_grad: Any = False,
                      backward_hooks: Any = None, metadata: Any = None) -> torch.Tensor:
    """Stand-in for ``torch._utils._rebuild_tensor_v2``: a view into a checked storage, no hooks."""
    return _tensor_view(storage, storage_offset, size, stride)


def rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any) -> torch.Tensor:
    return _tensor_view(storage, storage_offset, size, stride)


def rebuild_parameter(data: Any, requires_grad: Any = False, backward_hooks: Any = None,
                      state: Any = None) -> torch.Tensor:
    """Stand-in for ``torch._utils._rebuild_parameter(_with_state)``: the plain tensor."""
    if not isinstance(data, torch.Tensor):
        raise CheckpointError(f"parameter: expected a tensor, got {type(data).__name__}")
    return data


# ---------------------------------------------------------------------------------------------
# numpy


def _np_reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    if subtype is not np.ndarray:
        raise CheckpointError(f"numpy _reconstruct: refusing array subtype {_short(subtype)}")
    return _np_reconstruct_impl(np.ndarray, shape, dtype)


def _np_scalar(dtype: Any, data: Any = None) -> Any:
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, (bytes, str)):
        raise CheckpointError(f"numpy scalar: expected a numeric dtype and bytes, got {_short(dtype)}")
    if isinstance(data, str):  # Python 2 pickles read with latin1
        data = data.encode("latin1")
    return _np_scalar_impl(dtype, data)


def _np_dtype(obj: Any, align: Any = False, copy: Any = False) -> np.dtype:
    if not isinstance(obj, str):
        raise CheckpointError(f"numpy dtype: expected a type string, got {_short(obj)}")
    return np.dtype(obj, bool(align), bool(copy))


def _np_frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise CheckpointError(f"numpy _frombuffer: refusing dtype {_short(dtype)}")
    return np.frombuffer(bytes(buf), dtype=dtype).reshape(shape, order=order).copy()


def _codecs_encode(text: Any, encoding: Any = "utf-8", errors: Any = "strict") -> bytes:
    """``_codecs.encode``: how protocol-2 pickles spell a bytes literal (text and codec only)."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "utf-8", "ascii"):
        raise CheckpointError(f"_codecs.encode: refusing arguments {_short(text, 30)}, {encoding!r}")
    return text.encode(encoding)


# ---------------------------------------------------------------------------------------------
# Allow-list building blocks (the readers compose them)

CONTAINER_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "object"): object,
    ("builtins", "dict"): dict,
    ("copyreg", "_reconstructor"): safe_reconstructor,
    ("_codecs", "encode"): _codecs_encode,
}

NUMPY_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy.core.multiarray", "scalar"): _np_scalar,
    ("numpy.core.numeric", "_frombuffer"): _np_frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _np_dtype,
}

TENSOR_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): rebuild_parameter,
}

STORAGE_TYPE_GLOBALS: dict[tuple[str, str], Any] = {
    **{("torch", name): marker for name, marker in STORAGE_TYPES.items()},
    ("torch.storage", "UntypedStorage"): STORAGE_TYPES["UntypedStorage"],
}

RECORD_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): reconstruct_persistent_obj,
    ("dnnlib.util", "EasyDict"): EasyDictRecord,
    ("dnnlib.tflib.network", "Network"): TFNetworkRecord,
}

NAMESPACE_GLOBALS: dict[tuple[str, str], Any] = {
    ("argparse", "Namespace"): NamespaceRecord,
}
