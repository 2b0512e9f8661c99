"""Dropping configs before they are benchmarked, using the ahead-of-time compile report.

A :data:`Pruner` answers "which configs of this kernel must not be tried on this GPU?":
``pruner(spec, dtype, capability) -> configs to reject`` (any iterable of :class:`KernelConfig`;
``dtype`` is the bucket's ``'fp16'``/``'fp32'``, or ``None`` when the launch key names none).
The default config is never pruned: it is what runs when nothing is tuned, so it is always
measured as the baseline.

:func:`default_pruner` plugs in the compile gate (``sgtriton.inspection.compile_gate``) when it is
installed, looking for either of:

* ``rejected_configs(spec, dtype, capability) -> iterable of KernelConfig`` (used as is), or
* ``compile_result(spec, config, dtype, capability) -> result`` where ``result`` has ``spills``
  and ``shared`` (bytes) as attributes or keys, plus an optional truthy ``error``; ``None`` means
  "not known" (kept). :func:`reject_by_compile_results` applies the rules: any spill, shared memory
  over the device limit, or a compile error rejects the config.

Without the gate nothing is pruned. A pruner that raises is reported once and ignored.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from typing import Any

from sgtriton.autotune.cache import report_once
from sgtriton.ops._runtime import KernelConfig, KernelSpec

#: ``(spec, dtype or None, compute capability e.g. 90) -> configs to reject``.
Pruner = Callable[[KernelSpec, "str | None", int], Iterable[KernelConfig]]
#: ``(spec, config, dtype, compute capability) -> compile result or None``.
CompileResults = Callable[[KernelSpec, KernelConfig, str, int], Any]

COMPILE_GATE_MODULE = "sgtriton.inspection.compile_gate"


def no_pruning(spec: KernelSpec, dtype: str | None, capability: int) -> list[KernelConfig]:
    return []


def _field(result: Any, name: str) -> Any:
    if isinstance(result, dict):
        return result.get(name)
    return getattr(result, name, None)


def reject_by_compile_results(results: CompileResults,
                              shared_limit: Callable[[int], int | None] | int | None = None) -> Pruner:
    """A pruner from per-config compile results: reject spills, compile errors, shared memory over the limit.

    ``shared_limit`` is bytes, or a function of the compute capability giving bytes (default:
    the device's opt-in limit, see :func:`~sgtriton.autotune.environment.shared_memory_limit`).
    With ``dtype=None`` a config is rejected if it fails for any dtype the kernel declares.
    """

    def limit_for(capability: int) -> int | None:
        if callable(shared_limit):
            return shared_limit(capability)
        if shared_limit is not None:
            return shared_limit
        from sgtriton.autotune.environment import shared_memory_limit

        return shared_memory_limit(capability)

    def pruner(spec: KernelSpec, dtype: str | None, capability: int) -> list[KernelConfig]:
        limit = limit_for(capability)
        rejected = []
        for config in spec.configs:
            for each in ([dtype] if dtype else [d for d in spec.dtypes if config.applies_to(d)]):
                result = results(spec, config, each, capability)
                if result is None:
                    continue
                shared = _field(result, "shared")
                if _field(result, "error") or (_field(result, "spills") or 0) > 0 or (
                        limit is not None and shared is not None and shared > limit):
                    rejected.append(config)
                    break
        return rejected

    return pruner


def default_pruner() -> Pruner:
    """The compile gate's pruner if ``sgtriton.inspection.compile_gate`` is importable, else :func:`no_pruning`."""
    try:
        gate = importlib.import_module(COMPILE_GATE_MODULE)
    except ImportError:
        return no_pruning
    rejected = getattr(gate, "rejected_configs", None)
    if callable(rejected):
        return rejected
    results = getattr(gate, "compile_result", None)
    if callable(results):
        return reject_by_compile_results(results)
    return no_pruning


def split_candidates(spec: KernelSpec, dtype: str | None, capability: int,
                     pruner: Pruner) -> tuple[list[KernelConfig], list[KernelConfig]]:
    """``(candidates, pruned)``: the configs of ``dtype``'s space to benchmark (default first) and
    those the pruner rejected."""
    try:
        rejected = list(pruner(spec, dtype, capability))
    except Exception as exc:  # a broken report must not stop tuning
        report_once(spec.name, "pruner", f"sgtriton autotune: pruning {spec.name!r} failed ({exc!r}); "
                    f"trying all its configs")
        rejected = []
    candidates, pruned = [], []
    for index, config in enumerate(spec.configs):
        if not config.applies_to(dtype):
            continue
        if index > 0 and config in rejected:
            pruned.append(config)
        else:
            candidates.append(config)
    return candidates, pruned
