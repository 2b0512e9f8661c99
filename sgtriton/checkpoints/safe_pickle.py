"""A restricted unpickler and the inert objects it builds instead of running pickled code.

Every pickle sgtriton reads goes through :func:`restricted_load`. The unpickler resolves a global
``module.name`` only through an explicit allow-list that maps it to one of *our* callables or
immutable markers:

* containers and literals: ``collections.OrderedDict``, ``builtins.set`` / ``frozenset`` / ``dict``,
  ``_codecs.encode`` (protocol-2 bytes), ``copyreg._reconstructor`` (only for the records below);
* tensors: ``torch._utils._rebuild_tensor_v2`` (and ``_rebuild_tensor``, ``_rebuild_parameter``,
  ``_rebuild_parameter_with_state``) rebuilt by :func:`rebuild_tensor_v2` etc. from a
  :class:`StorageData` whose bytes our own parser read (``torch_files``), with every size, stride
  and offset checked against the elements the storage holds; storage classes (``torch.FloatStorage``
  ...) become immutable :class:`StorageType` markers;
* numpy arrays and scalars (``numpy.core.multiarray._reconstruct`` / ``scalar``, ``numpy.dtype``,
  ``numpy.core.numeric._frombuffer``; numpy >= 2 spells the module ``numpy._core``) with checked
  arguments; ``numpy.ndarray`` is only a marker for ``_reconstruct``, never called;
* records: ``torch_utils.persistence._reconstruct_persistent_obj`` -> :class:`PersistentRecord`
  (the embedded ``module_src`` is hashed, never executed), ``dnnlib.tflib.network.Network`` ->
  :class:`TFNetworkRecord`, ``dnnlib.util.EasyDict`` -> :class:`EasyDictRecord`,
  ``argparse.Namespace`` -> :class:`NamespaceRecord`.

Anything else -- ``os.system``, ``builtins.eval``, ``subprocess.Popen``, a class from the pickled
repository -- raises :class:`~sgtriton.checkpoints.errors.UnsafePickleError` naming the global,
before it is called.

The allow-list holds by construction, not by name alone: the unpickler is our own subclass of the
pure-Python one, whose object-building opcodes are narrowed. ``REDUCE`` / ``NEWOBJ`` call only
values the allow-list handed out; ``BUILD`` (``__setstate__``) runs only on objects this load
created and whose state we validate: our inert records, numpy arrays (shape x itemsize must equal
the bytes given) and numpy dtypes (always fresh copies, never numpy's shared singletons).
``BUILD`` on a tensor, a storage marker, a function or a class is refused, so no pickle can grow a
tensor past its file's bytes or rewrite state another load will see. ``SETITEMS`` / ``APPENDS`` /
``ADDITEMS`` act only on plain dicts, lists and sets; extension codes and ``INST`` / ``OBJ`` of
anything but the allow-list are refused.

Loading budgets
---------------
A checkpoint is held to what it contains before anything is allocated:

* reads never ask for more bytes than remain in the file (a length prefix that lies is a
  truncation error, not an allocation);
* memo indices must be below the number of opcodes read so far (the memo is a dict, so an index
  costs nothing, and an honest pickler never skips ahead);
* a storage's declared element count times its element size must fit in the bytes that remain
  (legacy files: all storages together) or equal its zip record's size; a zip record may not
  expand more than :data:`MAX_ZIP_RATIO` times its compressed size; each storage is read once,
  straight into its tensor;
* tensor views: non-negative sizes below :data:`MAX_DIM`, at most :data:`MAX_NDIM` dims, no more
  elements than the storage holds, last element inside it;
* numpy arrays and ``_frombuffer``: shape x itemsize must equal the bytes supplied;
* unpickled structures are at most :data:`MAX_NESTING` levels deep and acyclic; the native
  format's JSON header at most :data:`~sgtriton.checkpoints.native.MAX_JSON_NESTING`;
* configuration values are validated (types, ranges, finiteness, limits) before anything is built,
  and the weights a configuration implies (from its graph, no tensors) must not exceed the tensor
  elements the file holds, so the generator built next costs about what the file does; its
  state-dict names and shapes are then compared exactly (``assemble``).
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

from sgtriton.checkpoints.errors import CheckpointError, UnsafePickleError, in_source, quote

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct as _np_reconstruct_impl
    from numpy._core.multiarray import scalar as _np_scalar_impl
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct as _np_reconstruct_impl
    from numpy.core.multiarray import scalar as _np_scalar_impl

Globals = Mapping[tuple[str, str], Any]

#: Deepest nesting of containers and records an unpickled checkpoint may have (real ones: ~20).
MAX_NESTING = 100
#: Most dimensions, and largest size of one dimension, of a pickled tensor or array.
MAX_NDIM = 8
MAX_DIM = 2**31

# numpy >= 2 and dnnlib spell some modules differently; the allow-list uses one spelling.
_MODULE_ALIASES = {
    "numpy._core.multiarray": "numpy.core.multiarray",
    "numpy._core.numeric": "numpy.core.numeric",
    "dnnlib": "dnnlib.util",
}


class _BoundedReader:
    """A file view that never reads past ``limit`` bytes from where it starts.

    The unpickler asks for as many bytes as a length prefix claims; clamping the request to what
    remains turns a lying prefix into a short read (a truncation error) instead of an allocation.
    """

    def __init__(self, file: IO[bytes], limit: int | None) -> None:
        self._file = file
        self._left = limit

    def read(self, n: int = -1) -> bytes:
        if self._left is None:
            return self._file.read(n)
        n = self._left if n is None or n < 0 else min(n, self._left)
        data = self._file.read(n)
        self._left -= len(data)
        return data

    def readline(self) -> bytes:
        if self._left is None:
            return self._file.readline()
        data = self._file.readline(self._left)
        self._left -= len(data)
        return data


def remaining_bytes(f: IO[bytes]) -> int | None:
    """Bytes between ``f``'s position and its end (``None`` when it cannot seek)."""
    try:
        pos = f.tell()
        end = f.seek(0, io.SEEK_END)
        f.seek(pos)
        return end - pos
    except (OSError, AttributeError, ValueError):
        return None


def _name(obj: Any) -> str:
    """How an error names a value a pickle tried to call: its qualified name, else a short repr."""
    name = getattr(obj, "__qualname__", None)
    return f"{type(obj).__name__} {name}" if isinstance(name, str) else quote(obj, 40)


_UnpicklerBase: type = pickle._Unpickler  # the pure-Python unpickler, whose opcodes we can narrow
_OP = {name: code[0] for name, code in vars(pickle).items()
       if name.isupper() and isinstance(code, bytes) and len(code) == 1}


class RestrictedUnpickler(_UnpicklerBase):
    """An unpickler whose globals come only from ``allowed``, persistent ids only from
    ``persistent_load`` (when given), and whose object-building opcodes are narrowed (see the
    module docstring). Everything it remembers is per load."""

    dispatch = dict(_UnpicklerBase.dispatch)

    def __init__(self, file: IO[bytes], allowed: Globals, context: str,
                 persistent_load: Callable[[Any], Any] | None = None) -> None:
        # latin1 reads Python 2 byte strings (old numpy arrays) the way NVlabs' own loaders do.
        super().__init__(_BoundedReader(file, remaining_bytes(file)), encoding="latin1")
        self._allowed = allowed
        self._callables = {id(v): v for v in allowed.values() if callable(v) and not isinstance(v, _Marker)}
        self._context = context
        self._persistent = persistent_load
        self._opcodes = 0
        # Objects this load made whose state BUILD may set once: id -> object (kept alive here).
        self._buildable: dict[int, Any] = {}

    # -- globals and persistent ids ---------------------------------------------------------

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
            raise CheckpointError(f"{self._context}: unexpected persistent id {quote(pid)} in a plain pickle")
        return self._persistent(pid)

    # -- calls --------------------------------------------------------------------------------

    def _call(self, func: Any, args: Any, opcode: str) -> Any:
        if id(func) not in self._callables:
            raise CheckpointError(f"{self._context}: {opcode} on {quote(func, 40)}, which the allow-list did not "
                                  f"provide as a callable")
        if not isinstance(args, tuple):
            raise CheckpointError(f"{self._context}: {opcode} arguments must be a tuple, got {type(args).__name__}")
        result = func(*args)
        if func is _np_reconstruct or func is _np_dtype or func is safe_reconstructor or func in _INERT_CLASSES:
            self._buildable[id(result)] = result
        return result

    def _load_reduce(self) -> None:
        args = self.stack.pop()
        self.stack[-1] = self._call(self.stack[-1], args, "REDUCE")

    def _load_newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        if cls not in _INERT_CLASSES or args:
            raise CheckpointError(f"{self._context}: NEWOBJ of {_name(cls)}; only sgtriton's inert records "
                                  f"are built this way")
        obj = cls.__new__(cls)
        self._buildable[id(obj)] = obj
        self.append(obj)

    def _load_refused(self) -> None:
        raise CheckpointError(f"{self._context}: uses a pickle opcode sgtriton never needs (INST / OBJ / NEWOBJ_EX / "
                              f"EXT); refused")

    def _load_inst(self) -> None:
        module = self.readline()[:-1].decode("ascii")
        name = self.readline()[:-1].decode("ascii")
        self.append(self._call(self.find_class(module, name), tuple(self.pop_mark()), "INST"))

    def _load_obj(self) -> None:
        args = self.pop_mark()
        if not args:
            raise CheckpointError(f"{self._context}: OBJ without a class")
        self.append(self._call(args[0], tuple(args[1:]), "OBJ"))

    # -- state ------------------------------------------------------------------------------

    def _load_build(self) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        kind = type(inst)
        if kind in (dict, OrderedDict) and isinstance(state, dict):
            return  # torch state dicts carry '_metadata' (per-module versions); nothing we use
        if self._buildable.pop(id(inst), None) is not inst:
            raise CheckpointError(f"{self._context}: BUILD (setting pickled state) on a {kind.__name__} is refused; "
                                  f"only inert records, numpy arrays and dtypes this load created take state")
        if kind in _INERT_CLASSES:
            inst.__setstate__(state)
        elif kind is np.ndarray:
            inst.__setstate__(_checked_array_state(state))
        elif isinstance(inst, np.dtype):
            inst.__setstate__(_checked_dtype_state(state))
        else:  # pragma: no cover - _buildable holds only the kinds above
            raise CheckpointError(f"{self._context}: BUILD on a {kind.__name__} is refused")

    # -- containers ---------------------------------------------------------------------------

    def _target(self, kinds: tuple[type, ...], opcode: str) -> Any:
        target = self.stack[-1]
        if type(target) not in kinds:
            raise CheckpointError(f"{self._context}: {opcode} on a {type(target).__name__}; expected "
                                  f"{' or '.join(k.__name__ for k in kinds)}")
        return target

    def _load_setitem(self) -> None:
        value = self.stack.pop()
        key = self.stack.pop()
        self._target(_DICTS, "SETITEM")[key] = value

    def _load_setitems(self) -> None:
        items = self.pop_mark()
        target = self._target(_DICTS, "SETITEMS")
        if len(items) % 2:
            raise CheckpointError(f"{self._context}: SETITEMS with an odd number of items")
        for i in range(0, len(items), 2):
            target[items[i]] = items[i + 1]

    def _load_append(self) -> None:
        value = self.stack.pop()
        self._target((list,), "APPEND").append(value)

    def _load_appends(self) -> None:
        items = self.pop_mark()
        self._target((list,), "APPENDS").extend(items)

    def _load_additems(self) -> None:
        items = self.pop_mark()
        self._target((set,), "ADDITEMS").update(items)

    # -- memo ---------------------------------------------------------------------------------

    def _memo_put(self, index: int) -> None:
        if not 0 <= index <= self._opcodes:
            raise CheckpointError(f"{self._context}: memo index {index} after {self._opcodes} opcodes (an honest "
                                  f"pickler never skips ahead); corrupt file")
        self.memo[index] = self.stack[-1]

    def _load_put(self) -> None:
        self._memo_put(int(self.readline()[:-1]))

    def _load_binput(self) -> None:
        self._memo_put(self.read(1)[0])

    def _load_long_binput(self) -> None:
        (index,) = struct.unpack("<I", self.read(4))
        self._memo_put(index)

    def _load_memoize(self) -> None:
        self._memo_put(len(self.memo))

    def load(self) -> Any:
        # Count opcodes for the memo budget by wrapping the table's lookups.
        counted = {}
        for code, handler in self.dispatch.items():
            counted[code] = self._counting(handler)
        self.dispatch = counted
        return super().load()

    def _counting(self, handler: Callable[[Any], None]) -> Callable[[Any], None]:
        def step(unpickler: RestrictedUnpickler) -> None:
            unpickler._opcodes += 1
            handler(unpickler)
        return step


_D = RestrictedUnpickler.dispatch
_D[_OP["REDUCE"]] = RestrictedUnpickler._load_reduce
_D[_OP["NEWOBJ"]] = RestrictedUnpickler._load_newobj
_D[_OP["INST"]] = RestrictedUnpickler._load_inst
_D[_OP["OBJ"]] = RestrictedUnpickler._load_obj
_D[_OP["BUILD"]] = RestrictedUnpickler._load_build
_D[_OP["SETITEM"]] = RestrictedUnpickler._load_setitem
_D[_OP["SETITEMS"]] = RestrictedUnpickler._load_setitems
_D[_OP["APPEND"]] = RestrictedUnpickler._load_append
_D[_OP["APPENDS"]] = RestrictedUnpickler._load_appends
_D[_OP["ADDITEMS"]] = RestrictedUnpickler._load_additems
_D[_OP["PUT"]] = RestrictedUnpickler._load_put
_D[_OP["BINPUT"]] = RestrictedUnpickler._load_binput
_D[_OP["LONG_BINPUT"]] = RestrictedUnpickler._load_long_binput
_D[_OP["MEMOIZE"]] = RestrictedUnpickler._load_memoize
for _refused in ("NEWOBJ_EX", "EXT1", "EXT2", "EXT4"):
    _D[_OP[_refused]] = RestrictedUnpickler._load_refused
del _D, _refused

_CORRUPT = (pickle.UnpicklingError, ValueError, TypeError, KeyError, IndexError, AttributeError, struct.error,
            UnicodeDecodeError, RecursionError, OverflowError, MemoryError, ZeroDivisionError, RuntimeError)


def restricted_load(file: IO[bytes], allowed: Globals, context: str,
                    persistent_load: Callable[[Any], Any] | None = None) -> Any:
    """Unpickle one object from ``file`` with :class:`RestrictedUnpickler`.

    Truncation and corruption become :class:`CheckpointError` naming ``context``; the result is
    checked to be acyclic and at most :data:`MAX_NESTING` deep.
    """
    try:
        result = RestrictedUnpickler(file, allowed, context, persistent_load).load()
    except CheckpointError as exc:
        raise in_source(exc, context) from exc
    except EOFError as exc:
        raise CheckpointError(f"{context} is truncated: the pickle ends before its STOP opcode") from exc
    except _CORRUPT as exc:
        if "truncated" in str(exc) or "exhausted" in str(exc):
            raise CheckpointError(f"{context} is truncated: {exc}") from exc
        raise CheckpointError(f"{context} is corrupt: {type(exc).__name__}: {quote(str(exc), 200)}") from exc
    check_nesting(result, context)
    return result


def restricted_loads(data: bytes, allowed: Globals, context: str) -> Any:
    return restricted_load(io.BytesIO(data), allowed, context)


_CONTAINERS = (dict, list, tuple, set, frozenset)


def _children(obj: Any) -> list[Any]:
    if isinstance(obj, dict):  # dict, OrderedDict, EasyDictRecord
        return [*obj.keys(), *obj.values()]
    if isinstance(obj, (list, tuple, set, frozenset)):
        return list(obj)
    if isinstance(obj, (_Inert, PersistentRecord)):
        state = obj.__dict__.get("state")
        return [state] if isinstance(state, dict) else []
    return []


def _is_container(obj: Any) -> bool:
    return isinstance(obj, (*_CONTAINERS, _Inert, PersistentRecord))


def nesting_depth(root: Any, limit: int, on_cycle: Callable[[], None]) -> int:
    """The number of containers on the longest path down from ``root`` (a scalar is 0).

    Iterative post-order walk with memoisation, so shared sub-structures cost once and deep ones
    never touch Python's recursion limit; returns early once the depth passes ``limit``, and calls
    ``on_cycle`` when a container is reached again from below itself.
    """
    if not _is_container(root):
        return 0
    done: dict[int, int] = {}
    deepest_below = {id(root): 0}
    stack = [(root, iter(_children(root)))]
    while stack:
        obj, kids = stack[-1]
        for kid in kids:
            if not _is_container(kid):
                continue
            key = id(kid)
            if key in deepest_below:  # on the current path
                on_cycle()
            if key in done:
                deepest_below[id(obj)] = max(deepest_below[id(obj)], done[key])
                continue
            deepest_below[key] = 0
            stack.append((kid, iter(_children(kid))))
            if len(stack) > limit:
                return len(stack)
            break
        else:
            stack.pop()
            depth = done[id(obj)] = deepest_below.pop(id(obj)) + 1
            if stack:
                parent = id(stack[-1][0])
                deepest_below[parent] = max(deepest_below[parent], depth)
    return done[id(root)]


def check_nesting(obj: Any, context: str, limit: int = MAX_NESTING) -> None:
    """Refuse structures deeper than ``limit`` or cyclic (the readers walk them recursively)."""
    def cyclic() -> None:
        raise CheckpointError(f"{context}: a container refers to itself (a cyclic structure); a checkpoint is a "
                              f"tree of containers")

    if nesting_depth(obj, limit, cyclic) > limit:
        raise CheckpointError(f"{context}: containers nested more than {limit} deep; a checkpoint needs about 20")


# ---------------------------------------------------------------------------------------------
# Inert records


class _Inert:
    """Base of records that pickle may BUILD: state must be a dict and is stored, never run."""

    state: dict[str, Any]

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict) or "state" in self.__dict__:
            raise CheckpointError(f"{type(self).__name__}: expected one dict as pickled state, got "
                                  f"{type(state).__name__}")
        self.__dict__["state"] = state

    def get(self, key: str, default: Any = None) -> Any:
        return self.__dict__.get("state", {}).get(key, default)


class TFNetworkRecord(_Inert):
    """What ``dnnlib.tflib.network.Network`` unpickles into: its state, and nothing that runs.

    State keys (TF ``Network.__getstate__``): ``version``, ``name``, ``static_kwargs``,
    ``components`` (sub-networks), ``build_module_src`` (never executed), ``build_func_name``,
    ``variables`` (list of ``(name, numpy array)``, names relative to this network).
    """

    def _field(self, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
        value = self.get(key, default)
        if value is None:
            return default
        if not isinstance(value, kind):
            raise CheckpointError(f"TensorFlow network {self.name!r}: {key!r} is a {type(value).__name__}, expected "
                                  f"{getattr(kind, '__name__', kind)}")
        return value

    @property
    def name(self) -> str:
        value = self.get("name", "")
        return value if isinstance(value, str) else quote(value, 40)

    @property
    def version(self) -> int:
        return self._field("version", int, 0)

    @property
    def static_kwargs(self) -> dict[str, Any]:
        kwargs = dict(self._field("static_kwargs", dict, {}))
        bad = [k for k in kwargs if not isinstance(k, str)]
        if bad:
            raise CheckpointError(f"TensorFlow network {self.name!r}: static_kwargs key {quote(bad[0], 40)} is not "
                                  f"a str")
        return kwargs

    @property
    def components(self) -> dict[str, Any]:
        return dict(self._field("components", dict, {}))

    @property
    def build_func_name(self) -> str:
        return str(self._field("build_func_name", str, ""))

    @property
    def variables(self) -> dict[str, Any]:
        variables = self._field("variables", (list, tuple), [])
        out = {}
        for item in variables:
            if not (isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], str)):
                raise CheckpointError(f"TensorFlow network {self.name!r}: 'variables' holds {quote(item, 40)}, "
                                      f"expected (name, array) pairs")
            out[item[0]] = item[1]
        return out


class NamespaceRecord(_Inert):
    """What ``argparse.Namespace`` (rosinality's training ``args``) unpickles into."""

    def __getattr__(self, name: str) -> Any:
        state = self.__dict__.get("state", {})
        if name in state:
            return state[name]
        raise AttributeError(name)


class EasyDictRecord(dict):
    """``dnnlib.util.EasyDict``: a dict; attribute access is not needed by the readers."""

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, (dict, type(None))):
            raise CheckpointError(f"EasyDict: expected a dict as pickled state, got {type(state).__name__}")


@dataclass
class PersistentRecord:
    """An object pickled by NVlabs ``torch_utils.persistence``: the class name and its ``__dict__``.

    ``module_src_sha256`` identifies the defining source file; the source itself is dropped.
    Accessors check the types of what they return, so a malformed record is a clean error.
    """

    class_name: str
    version: int
    state: dict[str, Any]
    module_src_sha256: str = ""

    def attr(self, name: str, default: Any = None) -> Any:
        return self.state.get(name, default)

    def _mapping(self, name: str) -> Mapping[str, Any]:
        value = self.state.get(name)
        if value is None:
            return {}
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise CheckpointError(f"{self.class_name}.{name} is a {type(value).__name__}, expected a dict with str "
                                  f"keys")
        return value

    @property
    def parameters(self) -> Mapping[str, Any]:
        return self._mapping("_parameters")

    @property
    def buffers(self) -> Mapping[str, Any]:
        return self._mapping("_buffers")

    @property
    def non_persistent_buffers(self) -> set[str]:
        value = self.state.get("_non_persistent_buffers_set") or ()
        if not isinstance(value, (set, frozenset, list, tuple)) or not all(isinstance(v, str) for v in value):
            raise CheckpointError(f"{self.class_name}._non_persistent_buffers_set is a {type(value).__name__}, "
                                  f"expected a set of names")
        return set(value)

    @property
    def modules(self) -> Mapping[str, Any]:
        return self._mapping("_modules")

    @property
    def init_kwargs(self) -> dict[str, Any]:
        return dict(self._mapping("_init_kwargs"))


def reconstruct_persistent_obj(meta: Any) -> PersistentRecord:
    """Stand-in for ``torch_utils.persistence._reconstruct_persistent_obj``: records, never execs."""
    if not isinstance(meta, dict):
        raise CheckpointError(f"persistent object: expected a meta dict, got {type(meta).__name__}")
    if meta.get("type") != "class":
        raise CheckpointError(f"persistent object: meta type={quote(meta.get('type'))}, expected 'class'")
    class_name, state, src = meta.get("class_name"), meta.get("state"), meta.get("module_src", "")
    if not isinstance(class_name, str) or not isinstance(state, dict):
        raise CheckpointError("persistent object: meta needs a str 'class_name' and a dict 'state'")
    version = meta.get("version", 0) or 0
    if isinstance(version, bool) or not isinstance(version, int) or not 0 <= version < 2**31:
        raise CheckpointError(f"persistent object {class_name!r}: meta version={quote(version)}, expected an int")
    digest = hashlib.sha256(src.encode("utf-8", "replace")).hexdigest() if isinstance(src, str) else ""
    return PersistentRecord(class_name, version, dict(state), digest)


_INERT_CLASSES = (TFNetworkRecord, NamespaceRecord, EasyDictRecord)
_DICTS = (dict, OrderedDict, EasyDictRecord)


def safe_reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """``copyreg._reconstructor`` (protocol 0/1 objects), limited to the inert record classes."""
    if cls not in _INERT_CLASSES or base not in (object, dict):
        raise CheckpointError(f"copyreg._reconstructor: refusing to build {quote(cls)} on {quote(base)}")
    if base is dict:
        if state is not None and not isinstance(state, dict):
            raise CheckpointError(f"copyreg._reconstructor: dict state expected, got {type(state).__name__}")
        obj = dict.__new__(cls)
        if state is not None:
            dict.update(obj, state)
        return obj
    return object.__new__(cls)


# ---------------------------------------------------------------------------------------------
# Tensors and storages


class _Marker:
    """An immutable stand-in for a pickled class: it has no ``__dict__``, takes no attributes and
    cannot be called, so a pickle can neither run it nor change it for a later load."""

    __slots__ = ()

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __reduce__(self) -> Any:
        raise TypeError(f"{type(self).__name__} is not picklable")


class StorageType(_Marker):
    """Marker for a pickled ``torch.<Name>Storage`` class: only its element type is used."""

    __slots__ = ("name", "dtype")

    def __init__(self, name: str, dtype: torch.dtype) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "dtype", dtype)

    def __repr__(self) -> str:
        return f"torch.{self.name}"


class _ArrayType(_Marker):
    """Marker for the global ``numpy.ndarray``, which pickles name only as ``_reconstruct``'s first
    argument; calling it (an uninitialised array of any shape) is never allowed."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "numpy.ndarray"


NDARRAY = _ArrayType()

_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool, "UntypedStorage": torch.uint8,
}
STORAGE_TYPES: Mapping[str, StorageType] = {name: StorageType(name, dtype) for name, dtype in _STORAGE_DTYPES.items()}


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

    @property
    def nbytes(self) -> int:
        return self.numel * element_size(self.dtype)

    def fill(self, data: bytes | bytearray | memoryview, context: str) -> None:
        if len(data) != self.nbytes:
            raise CheckpointError(f"{context}: storage of {self.numel} x {self.dtype} needs {self.nbytes} bytes, "
                                  f"found {len(data)} (truncated or corrupt)")
        if self.nbytes:
            self.tensor.view(torch.uint8).numpy()[:] = np.frombuffer(data, dtype=np.uint8)
        self.filled = True

    def fill_from(self, f: IO[bytes], context: str, chunk: int = 1 << 22) -> None:
        """Read exactly :attr:`nbytes` from ``f`` straight into the storage (no intermediate copy)."""
        view = memoryview(self.tensor.view(torch.uint8).numpy()) if self.nbytes else memoryview(b"")
        done = 0
        while done < self.nbytes:
            data = f.read(min(chunk, self.nbytes - done))
            if not data:
                raise CheckpointError(f"{context} is truncated: storage of {self.numel} x {self.dtype} needs "
                                      f"{self.nbytes} bytes, found {done}")
            view[done : done + len(data)] = data
            done += len(data)
        self.filled = True


def element_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _int_tuple(value: Any, what: str) -> tuple[int, ...]:
    if isinstance(value, torch.Size):
        value = tuple(value)
    if not isinstance(value, (tuple, list)) or len(value) > MAX_NDIM or not all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v < MAX_DIM for v in value):
        raise CheckpointError(f"tensor {what}: expected a tuple of at most {MAX_NDIM} ints in [0, {MAX_DIM}), got "
                              f"{quote(value)}")
    return tuple(value)


def _tensor_view(storage: Any, offset: Any, size: Any, stride: Any) -> torch.Tensor:
    """A view into ``storage`` after checking that every element it can reach is inside it."""
    if not isinstance(storage, StorageData):
        raise CheckpointError(f"tensor storage: expected a storage read by sgtriton, got {type(storage).__name__}")
    size, stride = _int_tuple(size, "size"), _int_tuple(stride, "stride")
    if len(size) != len(stride) or isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise CheckpointError(f"tensor: inconsistent size {list(size)}, stride {list(stride)}, offset {quote(offset)}")
    numel = math.prod(size)
    if numel == 0:
        return storage.tensor[:0].reshape(size)
    if numel > storage.numel:
        raise CheckpointError(f"tensor of size {list(size)} has {numel} elements, more than its storage holds "
                              f"({storage.numel}); corrupt file")
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

#: numpy kinds a checkpoint may hold: bool, signed / unsigned int, float.
_NUMPY_KINDS = "biuf"


def _check_np_dtype(dtype: Any, what: str) -> np.dtype:
    if not isinstance(dtype, np.dtype) or dtype.kind not in _NUMPY_KINDS or dtype.fields is not None \
            or dtype.subdtype is not None:
        raise CheckpointError(f"numpy {what}: refusing dtype {quote(dtype)}; expected a plain numeric dtype")
    return dtype


def _np_shape(shape: Any, what: str) -> tuple[int, ...]:
    if isinstance(shape, int) and not isinstance(shape, bool):
        shape = (shape,)
    if not isinstance(shape, (tuple, list)) or len(shape) > MAX_NDIM or not all(
            isinstance(n, int) and not isinstance(n, bool) and 0 <= n < MAX_DIM for n in shape):
        raise CheckpointError(f"numpy {what}: shape {quote(shape)}, expected at most {MAX_NDIM} ints in "
                              f"[0, {MAX_DIM})")
    return tuple(shape)


def _raw_bytes(data: Any, what: str) -> bytes | bytearray:
    if isinstance(data, str):  # Python 2 pickles read with latin1
        data = data.encode("latin1")
    if not isinstance(data, (bytes, bytearray)):
        raise CheckpointError(f"numpy {what}: expected raw bytes, got {type(data).__name__}")
    return data


def _np_reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    """``numpy.core.multiarray._reconstruct``: the empty array a following BUILD fills."""
    if subtype is not NDARRAY:
        raise CheckpointError(f"numpy _reconstruct: refusing array subtype {quote(subtype)}")
    if tuple(_np_shape(shape, "_reconstruct")) != (0,) or not isinstance(dtype, (bytes, str)) or len(dtype) > 8:
        raise CheckpointError(f"numpy _reconstruct: expected shape (0,) and a type code, got {quote(shape)}, "
                              f"{quote(dtype)}")
    return _np_reconstruct_impl(np.ndarray, (0,), dtype.encode("latin1") if isinstance(dtype, str) else dtype)


def _checked_array_state(state: Any) -> tuple[Any, ...]:
    """``ndarray.__setstate__``'s ``(version, shape, dtype, is_fortran, rawdata)``, checked so that
    shape x itemsize equals the bytes supplied (no uninitialised or object arrays)."""
    if not isinstance(state, tuple) or len(state) != 5:
        raise CheckpointError(f"numpy array state: expected (version, shape, dtype, fortran, bytes), got "
                              f"{quote(state)}")
    version, shape, dtype, fortran, raw = state
    shape = _np_shape(shape, "array")
    dtype = _check_np_dtype(dtype, "array")
    raw = _raw_bytes(raw, "array")
    if not isinstance(version, int) or not isinstance(fortran, (bool, int)):
        raise CheckpointError(f"numpy array state: version {quote(version)}, fortran flag {quote(fortran)}")
    if math.prod(shape) * dtype.itemsize != len(raw):
        raise CheckpointError(f"numpy array of shape {list(shape)} x {dtype} needs {math.prod(shape) * dtype.itemsize} "
                              f"bytes, the file gives {len(raw)}")
    return version, shape, dtype, bool(fortran), raw


def _checked_dtype_state(state: Any) -> tuple[Any, ...]:
    """A plain numeric dtype's pickled state ``(version, byteorder, None, None, None, -1, -1, flags)``."""
    if not isinstance(state, tuple) or len(state) not in (8, 9) or state[1] not in ("<", "|", "=") \
            or any(part is not None for part in state[2:5]):
        raise CheckpointError(f"numpy dtype state {quote(state)}: expected a little-endian plain numeric dtype")
    if not all(isinstance(v, int) and not isinstance(v, bool) and -1 <= v < 2**16 for v in state[5:8]) \
            or state[0] not in (3, 4):
        raise CheckpointError(f"numpy dtype state {quote(state)}: unexpected sizes or flags")
    return state


def _np_scalar(dtype: Any, data: Any = None) -> Any:
    dtype = _check_np_dtype(dtype, "scalar")
    data = _raw_bytes(data, "scalar")
    if len(data) != dtype.itemsize:
        raise CheckpointError(f"numpy scalar of {dtype}: needs {dtype.itemsize} bytes, got {len(data)}")
    return _np_scalar_impl(dtype, bytes(data))


def _np_dtype(obj: Any, align: Any = False, copy: Any = True) -> np.dtype:
    """``numpy.dtype``: always a fresh copy (never numpy's shared instance, which BUILD would change)."""
    if not isinstance(obj, str) or len(obj) > 8:
        raise CheckpointError(f"numpy dtype: expected a short type string, got {quote(obj)}")
    try:
        dtype = np.dtype(obj, bool(align), True)
    except TypeError as exc:
        raise CheckpointError(f"numpy dtype: {quote(obj)} is not a numpy type string") from exc
    return _check_np_dtype(dtype, "dtype")


def _np_frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    """``numpy.core.numeric._frombuffer`` (protocol-5 style arrays): a read-only view of the bytes."""
    dtype = _check_np_dtype(dtype, "_frombuffer")
    buf = _raw_bytes(buf, "_frombuffer")
    shape = _np_shape(shape, "_frombuffer")
    if order not in ("C", "F"):
        raise CheckpointError(f"numpy _frombuffer: order {quote(order)}, expected 'C' or 'F'")
    if math.prod(shape) * dtype.itemsize != len(buf):
        raise CheckpointError(f"numpy _frombuffer: shape {list(shape)} x {dtype} needs "
                              f"{math.prod(shape) * dtype.itemsize} bytes, the file gives {len(buf)}")
    return np.frombuffer(buf, dtype=dtype).reshape(shape, order=order)


def _codecs_encode(text: Any, encoding: Any = "utf-8", errors: Any = "strict") -> bytes:
    """``_codecs.encode``: how protocol-2 pickles spell a bytes literal (text and codec only)."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "utf-8", "ascii"):
        raise CheckpointError(f"_codecs.encode: refusing arguments {quote(text, 30)}, {quote(encoding)}")
    try:
        return text.encode(encoding)
    except UnicodeEncodeError as exc:
        raise CheckpointError(f"_codecs.encode: {quote(text, 30)} is not {encoding} text") from exc


def _items(value: Any, what: str) -> Any:
    if not isinstance(value, (list, tuple, dict, set, frozenset)):
        raise CheckpointError(f"{what}: expected a list, tuple or dict of items, got {type(value).__name__}")
    return value


def _ordered_dict(items: Any = ()) -> OrderedDict:
    return OrderedDict(_items(items, "OrderedDict"))


def _dict(items: Any = ()) -> dict:
    return dict(_items(items, "dict"))


def _set(items: Any = ()) -> set:
    return set(_items(items, "set"))


def _frozenset(items: Any = ()) -> frozenset:
    return frozenset(_items(items, "frozenset"))


def _object() -> object:
    return object()


# ---------------------------------------------------------------------------------------------
# Allow-list building blocks (the readers compose them)

CONTAINER_GLOBALS: Mapping[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): _ordered_dict,
    ("builtins", "set"): _set,
    ("builtins", "frozenset"): _frozenset,
    ("builtins", "object"): object,
    ("builtins", "dict"): dict,
    ("copyreg", "_reconstructor"): safe_reconstructor,
    ("_codecs", "encode"): _codecs_encode,
}

NUMPY_GLOBALS: Mapping[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy.core.multiarray", "scalar"): _np_scalar,
    ("numpy.core.numeric", "_frombuffer"): _np_frombuffer,
    ("numpy", "ndarray"): NDARRAY,
    ("numpy", "dtype"): _np_dtype,
}

TENSOR_GLOBALS: Mapping[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): rebuild_parameter,
}

STORAGE_TYPE_GLOBALS: Mapping[tuple[str, str], Any] = {
    **{("torch", name): marker for name, marker in STORAGE_TYPES.items()},
    ("torch.storage", "UntypedStorage"): STORAGE_TYPES["UntypedStorage"],
}

RECORD_GLOBALS: Mapping[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): reconstruct_persistent_obj,
    ("dnnlib.util", "EasyDict"): EasyDictRecord,
    ("dnnlib.tflib.network", "Network"): TFNetworkRecord,
}

NAMESPACE_GLOBALS: Mapping[tuple[str, str], Any] = {
    ("argparse", "Namespace"): NamespaceRecord,
}
