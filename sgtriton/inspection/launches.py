"""What a launch compiles: kernel arguments captured from the launchers, specialised as Triton's JIT does.

A Triton launch does not compile the kernel's source alone: the JIT first *specialises* every
argument, and the compiled kernel depends on the result --

* a tensor becomes a pointer type (``*fp16``) and, when its address is a multiple of 16 bytes, the
  attribute ``tt.divisibility = 16`` (the compiler may then emit 16-byte vector loads);
* an integer becomes ``i32``/``i64`` and, when divisible by 16, gets ``tt.divisibility = 16`` too;
  an integer equal to 1 becomes the constant 1 (a unit stride folds away);
* floats stay runtime scalars; constexpr arguments are compile-time values.

So an ahead-of-time compile of a hand-typed signature checks a different kernel from the one a
launch builds (seen: the up=2 modulated conv on sm_90 compiled to 167 registers and 4-byte weight
copies without the hints, 121 registers and 16-byte copies with them). Here nothing is typed by
hand: :func:`capture_launch` runs a kernel's launcher once (one of its declared example launches,
:data:`~sgtriton.ops._runtime.ExampleLaunches`) with the kernel object replaced by a recorder, and
:func:`specialise` feeds the recorded arguments through the JIT's own binder
(``triton.runtime.jit.create_function_from_signature`` and ``JITFunction._pack_args``, the same
functions a launch calls, present in Triton 3.6 through 3.9) for a given GPU target, giving the
``signature``, ``constexprs`` and ``attrs`` that ``triton.compiler.ASTSource`` takes.

Capturing needs no GPU: under the interpreter the launcher validates and lays out CPU tensors as
it would CUDA ones, and the recorder stops it before anything runs. CPU allocations are at least
16-byte aligned, like CUDA ones, and views keep their real offsets, so the alignment facts carry
over.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sgtriton.ops._runtime import KernelConfig, KernelSpec, forced_config, jit_function


class LaunchCaptured(Exception):
    """Raised by the recorder to stop a launcher once the kernel's arguments are recorded."""


@dataclass(frozen=True)
class CapturedLaunch:
    """One kernel launch as the launcher issued it: grid, positional and keyword arguments."""

    grid: Any
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


@dataclass(frozen=True)
class Specialisation:
    """What ``triton.compile`` needs to build exactly the launched kernel (all picklable).

    ``signature`` maps argument name -> type (``'*fp16'``, ``'i32'``, ``'constexpr'``);
    ``constexprs`` and ``attrs`` are keyed by argument-index paths (``(3,)``) as the JIT keys them;
    ``options`` are the launch's compile options (``num_warps``, ``num_stages``); ``hints`` the
    readable summary: runtime argument name -> ``'D'`` (divisible by 16) or ``'=1'`` (folded to 1).
    """

    signature: dict[str, str]
    constexprs: dict[tuple[int, ...], Any]
    attrs: dict[tuple[int, ...], list]
    options: dict[str, Any]
    hints: dict[str, str]

    def key(self) -> str:
        """A stable text form for cache keys."""
        return repr((sorted(self.signature.items()), sorted(self.constexprs.items()),
                     sorted((k, sorted(map(tuple, v))) for k, v in self.attrs.items()),
                     sorted(self.options.items())))


class _Recorder:
    """Stands in for a ``@triton.jit`` kernel: ``kernel[grid](*args, **kwargs)`` records the launch,
    then stops the launcher (``stop=True``, raising :class:`LaunchCaptured`) or returns ``None``
    without running anything (``stop=False``: the launcher returns its outputs uninitialised).
    ``on_launch`` sees every recorded launch as it happens."""

    def __init__(self, stop: bool = True, on_launch: Callable[[CapturedLaunch], None] | None = None) -> None:
        self.launches: list[CapturedLaunch] = []
        self.stop = stop
        self.on_launch = on_launch

    def __getitem__(self, grid: Any) -> Callable[..., Any]:
        def record(*args: Any, **kwargs: Any) -> Any:
            launch = CapturedLaunch(grid, args, kwargs)
            self.launches.append(launch)
            if self.on_launch is not None:
                self.on_launch(launch)
            if self.stop:
                raise LaunchCaptured
            return None

        return record


@contextmanager
def replaced_kernels(replacements: dict[int, tuple[Any, Any]]) -> Iterator[None]:
    """Bind every module-level name bound to a kernel ``fn`` to its stand-in, and restore them.

    ``replacements`` maps ``id(fn)`` to ``(fn, stand_in)``. Launchers call their kernels through
    module globals (``_kernel[grid](...)``), so rebinding the globals reaches every launch.
    """
    bound = [(module, name, value) for module in list(sys.modules.values()) if module is not None
             for name, value in list(getattr(module, "__dict__", {}).items())
             if id(value) in replacements and replacements[id(value)][0] is value]
    for module, name, fn in bound:
        setattr(module, name, replacements[id(fn)][1])
    try:
        yield
    finally:
        for module, name, fn in bound:
            setattr(module, name, fn)


@contextmanager
def _recording(fn: Any) -> Iterator[_Recorder]:
    """Replace every module-level name bound to kernel ``fn`` by one stopping recorder, and restore them."""
    recorder = _Recorder()
    with replaced_kernels({id(fn): (fn, recorder)}):
        yield recorder


def capture_launch(spec: KernelSpec, call: Callable[[], Any], config: KernelConfig | None = None) -> CapturedLaunch:
    """The arguments ``call()`` (an example launch of ``spec``) passes to ``spec``'s kernel.

    ``config`` is forced on the launcher (default: the kernel's default config). Raises
    ``RuntimeError`` if the call returns or fails without launching the kernel.
    """
    with _recording(spec.fn) as recorder, forced_config(spec, config or spec.default_config):
        try:
            call()
        except LaunchCaptured:
            pass
        except Exception as exc:
            if not recorder.launches:  # a wrapper may re-raise our stop signal as another type
                raise RuntimeError(f"example launch of {spec.name!r} failed before the kernel: "
                                   f"{type(exc).__name__}: {exc}") from exc
    if not recorder.launches:
        raise RuntimeError(f"example launch of {spec.name!r} returned without launching its kernel")
    return recorder.launches[0]


def specialise(spec: KernelSpec, launch: CapturedLaunch, target: int) -> Specialisation:
    """``launch``'s arguments specialised by the JIT for CUDA compute capability ``target``."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    jit = jit_function(spec.fn)
    backend = make_backend(GPUTarget("cuda", target, 32))
    binder = create_function_from_signature(jit.signature, jit.params, backend)
    bound_args, specialization, options = binder(*launch.args, **launch.kwargs)
    _, signature, constexprs, attrs = jit._pack_args(backend, launch.kwargs, bound_args, specialization, options)
    parameters = set(jit.signature.parameters)
    compile_options = {k: v for k, v in launch.kwargs.items() if k not in parameters}
    attrs = {k: [list(a) for a in v] for k, v in attrs.items() if v}
    hints = {}
    for param in jit.params:
        if param.is_constexpr:
            continue
        if signature[param.name] == "constexpr":
            hints[param.name] = "=1"
        elif any(name == "tt.divisibility" for name, _ in attrs.get((param.num,), [])):
            hints[param.name] = "D"
    return Specialisation(dict(signature), dict(constexprs), attrs, compile_options, hints)


def example_launches(spec: KernelSpec, dtype: str, device: Any = None) -> dict[str, Callable[[], Any]]:
    """``spec``'s declared example launches for ``dtype`` on ``device`` (default: CUDA if present, else CPU)."""
    if spec.launches is None:
        raise ValueError(f"kernel={spec.name!r}: declares no example launches (launches=...)")
    if device is None:
        import torch

        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return spec.launches(dtype, device)


__all__ = ["CapturedLaunch", "LaunchCaptured", "Specialisation", "capture_launch", "example_launches",
           "replaced_kernels", "specialise"]
