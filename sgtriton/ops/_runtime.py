"""Kernel runtime shared by every op: the interpreter switch, kernel declarations and configs.

* :func:`configure_interpreter` -- on a machine without CUDA, Triton kernels can only run under
  Triton's interpreter, and Triton decides that per kernel when ``@triton.jit`` is applied. So
  :mod:`sgtriton.ops` calls this when it is first imported, which every kernel module (ours and
  plugins', all importing from this package) does before it decorates a kernel: it sets
  ``TRITON_INTERPRET=1`` when no CUDA device is present and the variable is unset.
* :func:`declare_kernel` -- every ``@triton.jit`` kernel is declared once, beside its launcher,
  with its tuning space (a list of :class:`KernelConfig`, the first being the default) and its
  *example launches*: calls into the launcher at real layer shapes, one per flag combination the
  blocks launch. The compile gate (``sgtriton.inspection``) records what each example passes to
  the kernel and compiles exactly that, so no signature is typed by hand. The gate and the tuner
  read :data:`KERNELS`; nothing else lists kernels.
* :func:`launch_config` -- the config a launcher uses for a given shape key: a config forced by
  :func:`forced_config` (the compile gate), else the default unless a config selector (the
  persistent tuner) is installed. Under the interpreter the tuner is never asked.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import os
import types
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

INTERPRET_ENV = "TRITON_INTERPRET"


def configure_interpreter() -> bool:
    """Select Triton's interpreter when no CUDA device exists; return whether it is active."""
    if INTERPRET_ENV not in os.environ:
        import torch

        if not torch.cuda.is_available():
            os.environ[INTERPRET_ENV] = "1"
    # Triton >= 3.9 warns when this is unset; pin today's default (fusion on) explicitly.
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    if interpreter_active():
        _fix_interpreter_scalar_index()
    return interpreter_active()


def _fix_interpreter_scalar_index() -> None:
    """Let Triton < 3.9's interpreter use runtime scalars as ``range()`` bounds under numpy >= 2.4.

    The interpreter holds every scalar kernel argument as a one-element 1-D array and implements
    ``tensor.__index__`` as ``int(data)``, which numpy 2.4 refuses for arrays that are not 0-d; so
    any ``for i in range(0, n, BLOCK)`` with a runtime ``n`` raised ``TypeError`` (Triton 3.9 reads
    ``int(data.squeeze())``). This installs that form, for the interpreter only: compiled kernels
    never call ``__index__``, and kernels keep runtime loop bounds (no recompiles per shape).
    """
    import triton

    if tuple(int(part) for part in triton.__version__.split(".")[:2]) >= (3, 9):
        return
    from triton.runtime import interpreter

    original = interpreter._patch_lang_tensor
    if getattr(original, "_sgtriton_scalar_index", False):
        return

    def patch_lang_tensor(tensor: Any, scope: Any) -> None:
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.squeeze()))

    patch_lang_tensor._sgtriton_scalar_index = True  # type: ignore[attr-defined]
    interpreter._patch_lang_tensor = patch_lang_tensor


def interpreter_active() -> bool:
    """Whether kernels decorated from now on run under Triton's interpreter."""
    return os.environ.get(INTERPRET_ENV, "0").lower() in ("1", "true", "on", "yes")


@dataclass(frozen=True)
class KernelConfig:
    """One point of a kernel's tuning space: constexpr meta-parameters, warps and stages.

    ``dtypes`` limits the point to launches of those dtypes (``None``: every dtype the kernel
    declares). A tile that fits the registers with 16-bit operands may spill with fp32 ones (whose
    tensor-core dot needs three products), so the fp32 space can be smaller than the fp16 one. Two
    configs are the same point whatever their ``dtypes`` (equality, hashing and names ignore it).
    """

    meta: dict[str, int]
    num_warps: int = 4
    num_stages: int = 2
    dtypes: tuple[str, ...] | None = field(default=None, compare=False)

    def applies_to(self, dtype: str | None) -> bool:
        """Whether this config is in the space for launches in ``dtype`` (``None``: any dtype)."""
        return dtype is None or self.dtypes is None or dtype in self.dtypes

    def __str__(self) -> str:
        meta = ",".join(f"{k}={v}" for k, v in self.meta.items())
        return f"{meta},w{self.num_warps},s{self.num_stages}"


#: ``(signature, constexprs)`` for ``triton.compiler.ASTSource``: argument name -> Triton type
#: string (``'*fp16'``, ``'i32'``, ``'fp32'``, ``'constexpr'``) and constexpr name -> value.
#: Only for kernels without example launches (test doubles); shipped kernels declare launches.
AotSignature = tuple[dict[str, str], dict[str, Any]]

#: ``launches(dtype, device) -> {variant: call}``: each ``call()`` runs the kernel's launcher once
#: on tensors of ``device`` in ``dtype`` (``'fp32'``, ``'fp16'``, ...) at a real layer's shapes.
#: The first variant is the one the generators launch most (the compile gate's default).
ExampleLaunches = Callable[[str, Any], dict[str, Callable[[], Any]]]


@dataclass
class KernelSpec:
    """A declared kernel: its JIT function, tuning space and example launches (see :data:`ExampleLaunches`)."""

    name: str
    fn: Any
    configs: tuple[KernelConfig, ...]
    aot_signature: Callable[[KernelConfig, str], AotSignature] | None = None
    dtypes: tuple[str, ...] = ("fp32", "fp16")
    uses_tensor_cores: bool = False
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    launches: ExampleLaunches | None = None
    #: ``shape_default(key) -> config`` (one of ``configs``): the untuned choice for a shape key, when
    #: one tile cannot fit every layer; ``None`` means :attr:`default_config` everywhere.
    shape_default: Callable[[Hashable], KernelConfig] | None = None

    @property
    def default_config(self) -> KernelConfig:
        return self.configs[0]

    def configs_for(self, dtype: str | None) -> tuple[KernelConfig, ...]:
        """The tuning space for launches in ``dtype`` (every config when ``dtype`` is ``None``)."""
        return tuple(c for c in self.configs if c.applies_to(dtype))

    def untuned_config(self, key: Hashable) -> KernelConfig:
        """The config a launch with shape ``key`` gets when no tuning table or cache answers."""
        return self.default_config if self.shape_default is None else self.shape_default(key)


def key_dtype(key: Hashable) -> str | None:
    """The ``('dtype', name)`` entry of a launcher's shape key, or ``None`` if it has none."""
    if isinstance(key, tuple):
        for item in key:
            if isinstance(item, tuple) and len(item) == 2 and item[0] == "dtype":
                return item[1]
    return None


KERNELS: dict[str, KernelSpec] = {}

ConfigSelector = Callable[[KernelSpec, Hashable], KernelConfig | None]
_config_selector: ConfigSelector | None = None
#: Configs forced per kernel name by :func:`forced_config`.
_forced_configs: dict[str, KernelConfig] = {}


def declare_kernel(
    name: str,
    fn: Any,
    configs: list[KernelConfig] | tuple[KernelConfig, ...],
    aot_signature: Callable[[KernelConfig, str], AotSignature] | None = None,
    dtypes: tuple[str, ...] = ("fp32", "fp16"),
    uses_tensor_cores: bool = False,
    description: str = "",
    launches: ExampleLaunches | None = None,
    shape_default: Callable[[Hashable], KernelConfig] | None = None,
) -> KernelSpec:
    """Declare ``fn`` under ``name`` (once) with its tuning space and example launches; returns the spec.

    ``launches`` (see :data:`ExampleLaunches`) is how the compile gate learns the signature; a
    hand-written ``aot_signature`` is accepted only for kernels that have no launcher.
    """
    if not configs:
        raise ValueError(f"configs: kernel {name!r} needs at least one config")
    if configs[0].dtypes is not None:
        raise ValueError(f"configs: kernel {name!r}'s first config is its default, for every dtype; "
                         f"expected dtypes=None, got {configs[0].dtypes}")
    for config in configs:
        unknown = sorted(set(config.dtypes or ()) - set(dtypes))
        if unknown or (config.dtypes is not None and not config.dtypes):
            raise ValueError(f"configs: {config} of kernel {name!r} names dtypes {config.dtypes}; "
                             f"expected some of the kernel's {dtypes}")
    if name in KERNELS and KERNELS[name].fn is not fn:
        raise ValueError(f"name={name!r}: a different kernel is already declared under this name")
    spec = KernelSpec(name, fn, tuple(configs), aot_signature, dtypes, uses_tensor_cores, description,
                      launches=launches, shape_default=shape_default)
    KERNELS[name] = spec
    return spec


def set_config_selector(selector: ConfigSelector | None) -> None:
    """Install (or remove with ``None``) the function that picks a config per shape key."""
    global _config_selector
    _config_selector = selector


@contextlib.contextmanager
def forced_config(spec: KernelSpec, config: KernelConfig) -> Iterator[None]:
    """Within the block every launch of ``spec`` uses ``config`` (the compile gate's examples)."""
    previous = _forced_configs.get(spec.name)
    _forced_configs[spec.name] = config
    try:
        yield
    finally:
        if previous is None:
            _forced_configs.pop(spec.name, None)
        else:
            _forced_configs[spec.name] = previous


#: Installed by :func:`planned_configs`: answers every :func:`launch_config` call while set.
_config_planner: ConfigSelector | None = None


@contextlib.contextmanager
def planned_configs(choose: Callable[[KernelSpec, Hashable], KernelConfig]) -> Iterator[None]:
    """Within the block every launcher's config is ``choose(spec, key)`` -- also under the interpreter.

    The performance model (``sgtriton.inspection``) captures a whole generator's launches on the
    CPU with the configs a GPU run would pick (a shipped table's, else the kernel's untuned choice
    for the shape), and learns from the call which declared kernel is launching (several specs may
    share one ``@triton.jit`` function).
    """
    global _config_planner
    previous, _config_planner = _config_planner, choose
    try:
        yield
    finally:
        _config_planner = previous


def launch_config(spec: KernelSpec, key: Hashable) -> KernelConfig:
    """The config to launch ``spec`` with for shape key ``key`` (the default under the interpreter)."""
    forced = _forced_configs.get(spec.name)
    if forced is not None:
        return forced
    dtype = key_dtype(key)
    if _config_planner is not None:
        planned = _config_planner(spec, key)
        if planned is not None and planned.applies_to(dtype):
            return planned
    elif _config_selector is not None and not interpreter_active():
        chosen = _config_selector(spec, key)
        if chosen is not None and chosen.applies_to(dtype):  # a table can't run an fp16-only tile in fp32
            return chosen
    return spec.untuned_config(key)


def jit_function(fn: Any) -> Any:
    """The compilable ``JITFunction`` behind ``fn`` (also when ``fn`` is an interpreted kernel)."""
    import triton

    if isinstance(fn, triton.runtime.jit.JITFunction):
        return fn
    return triton.runtime.jit.JITFunction(fn.fn)


TORCH_TO_TRITON = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "float64": "fp64"}


def triton_dtype(dtype: Any) -> str:
    """``torch.float16`` -> ``'fp16'`` (for signatures and config keys)."""
    return TORCH_TO_TRITON[str(dtype).replace("torch.", "")]


def torch_dtype(name: str) -> Any:
    """``'fp16'`` -> ``torch.float16`` (the inverse of :func:`triton_dtype`)."""
    import torch

    for torch_name, triton_name in TORCH_TO_TRITON.items():
        if triton_name == name:
            return getattr(torch, torch_name)
    raise ValueError(f"dtype={name!r}: expected one of {sorted(TORCH_TO_TRITON.values())}")


# ----------------------------------------------------------------------------------------------
# Facts the compile gate and the tuner share
# ----------------------------------------------------------------------------------------------

CACHE_ENV = "SGTRITON_CACHE_DIR"

#: Opt-in shared memory per block (bytes) by compute capability, for when no device can be asked.
SHARED_MEMORY_BY_CAPABILITY = {
    70: 98304, 75: 65536, 80: 166912, 86: 101376, 87: 166912, 89: 101376,
    90: 232448, 100: 232448, 120: 101376,
}


def default_cache_root() -> Path:
    """``$SGTRITON_CACHE_DIR``, else ``$XDG_CACHE_HOME/sgtriton``, else ``~/.cache/sgtriton``."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "sgtriton"


def _is_triton_function(value: Any) -> bool:
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    return isinstance(value, (JITFunction, InterpretedFunction))


def _code_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


def kernel_source_hash(fn: Any) -> str:
    """Hash of a kernel's source, of every ``@triton.jit`` function it calls (recursively) and of
    the plain constants it reads from its module.

    Works for jitted and interpreted kernels alike (Triton's own ``cache_key`` refuses interpreted
    helpers), so the parent process can key the cache without compiling anything.
    """
    digest = hashlib.sha256()
    seen: set[int] = set()

    def visit(triton_fn: Any) -> None:
        python_fn = getattr(triton_fn, "fn", triton_fn)
        if id(python_fn) in seen:
            return
        seen.add(id(python_fn))
        if not inspect.isfunction(python_fn):  # not a Python kernel (e.g. a test double): hash its class
            python_fn = type(python_fn)
        try:
            source = inspect.getsource(python_fn)
        except (OSError, TypeError):
            source = f"{python_fn.__module__}.{python_fn.__qualname__}"
        digest.update(source.encode())
        if not inspect.isfunction(python_fn):
            return
        names = _code_names(python_fn.__code__)
        for name in sorted(names):
            value = python_fn.__globals__.get(name)
            if _is_triton_function(value):
                visit(value)
            elif isinstance(value, types.ModuleType):  # `module.helper(...)` inside a kernel
                for attribute in sorted(names):
                    member = getattr(value, attribute, None)
                    if _is_triton_function(member):
                        visit(member)
            elif isinstance(value, (bool, int, float, str)) or type(value).__name__ == "constexpr":
                digest.update(f"{name}={value!r}".encode())

    visit(fn)
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------------
# Operands derived from weights (phase weights, Gram matrices): computed once per weight version
# ----------------------------------------------------------------------------------------------


def _version_key(t: Any) -> tuple | None:
    if t is None:
        return ()
    try:
        return (id(t), t.data_ptr(), t._version, tuple(t.shape), t.dtype, t.device)
    except RuntimeError:  # inference tensors have no version counter: never cache them
        return None


#: Lists that :func:`recording_derived_operands` is filling (innermost last).
_DERIVED_RECORDERS: list[list[Any]] = []


@contextlib.contextmanager
def recording_derived_operands() -> Iterator[list[Any]]:
    """Yield a list that receives every operand a :class:`WeightDerivedCache` hands out within the block.

    A CUDA graph reads the cached operands at the addresses they had when it was captured, so its
    owner keeps this list: an operand the LRU evicts later stays alive for the graph."""
    recorded: list[Any] = []
    _DERIVED_RECORDERS.append(recorded)
    try:
        yield recorded
    finally:
        _DERIVED_RECORDERS.remove(recorded)


class WeightDerivedCache:
    """An LRU of operands derived from parameter tensors, valid while those tensors are unchanged.

    A key is each source tensor's identity, storage, version counter, shape, dtype and device, so a
    new tensor, new storage or an in-place edit recomputes. Entries hold weak references to their
    sources, checked on every hit: a reused ``id`` never returns another tensor's operands, and
    cached operands never keep a model's weights alive. Parameters are read far more than written.
    """

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._entries: OrderedDict[tuple, tuple[tuple, Any]] = OrderedDict()

    def get(self, sources: tuple[Any, ...], extra: Hashable, compute: Callable[[], Any]) -> Any:
        """``compute()``'s result for these ``sources`` (tensors or ``None``) and ``extra`` key."""
        value = self._get(sources, extra, compute)
        for recorded in _DERIVED_RECORDERS:
            recorded.append(value)
        return value

    def _get(self, sources: tuple[Any, ...], extra: Hashable, compute: Callable[[], Any]) -> Any:
        keys = [_version_key(t) for t in sources]
        if any(k is None for k in keys):
            return compute()
        key = (*keys, extra)
        hit = self._entries.get(key)
        if hit is not None and all((r is None and t is None) or (r is not None and r() is t)
                                   for r, t in zip(hit[0], sources, strict=True)):
            self._entries.move_to_end(key)
            return hit[1]
        value = compute()
        self._entries[key] = (tuple(None if t is None else weakref.ref(t) for t in sources), value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return value

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
