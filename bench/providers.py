"""Providers: the ways a case can be computed, side by side in one process.

* ``reference`` -- the PyTorch reference, eager (the baseline every speedup is relative to);
* ``compile``   -- ``torch.compile`` of the same reference function (Inductor, default mode);
* ``triton``    -- sgtriton's Triton kernels (``impl='triton'``); CUDA only: without a GPU the
  kernels would run under Triton's interpreter, which is a correctness tool and is never timed;
* ``triton-graph`` -- whole generators at batch 1 on CUDA: the mapping on the Triton kernels, then
  the synthesis network replayed from a CUDA graph (``sgtriton generate --cuda-graph``);
* ``nvlabs``    -- the NVlabs-style plain-PyTorch generator of :mod:`bench.nvlabs_style`
  (whole-generator cases of ``moddemod`` skip/orig configs only).

Each provider's first output is checked against the reference's before it is timed: a fast
wrong answer is not a result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from bench.cases import Workload

BASELINE = "reference"
PROVIDERS = ("reference", "compile", "triton", "triton-graph", "nvlabs")
DESCRIPTIONS = {
    "reference": "PyTorch reference ops, eager (baseline)",
    "compile": "torch.compile(reference), Inductor default mode",
    "triton": "sgtriton Triton kernels (CUDA only)",
    "triton-graph": "sgtriton Triton kernels, synthesis replayed from a CUDA graph (CUDA, batch 1)",
    "nvlabs": "straightforward NVlabs-style PyTorch generator (bench/nvlabs_style.py)",
}

#: Sanity gate, not a precision test (the tests prove precision against float64): the largest
#: error allowed relative to the reference output's largest magnitude. fp32 leaves room for TF32
#: convolutions in the eager reference on CUDA.
ACCURACY_LIMITS = {torch.float32: 5e-3, torch.float16: 5e-2, torch.bfloat16: 1e-1}


class Unavailable(Exception):
    """This provider cannot run this case on this device; the message says why."""


def make_call(provider: str, workload: Workload, device: torch.device) -> Callable[[], torch.Tensor]:
    """A zero-argument callable computing ``workload`` with ``provider`` (raises :class:`Unavailable`)."""
    if provider not in PROVIDERS:
        raise ValueError(f"provider={provider!r}: expected one of {PROVIDERS}")
    args = workload.args
    if provider == "reference":
        fn = workload.fn
    elif provider == "compile":
        if not torch._dynamo.is_dynamo_supported():
            raise Unavailable("torch.compile is not supported on this Python/platform")
        torch._dynamo.reset()  # a fresh cache: the first call measures compilation, no recompile limit
        fn = torch.compile(workload.fn, dynamic=False)
    else:
        if provider in ("triton", "triton-graph"):
            _check_compiled_triton(device)
        fn = workload.alternatives.get(provider, f"no {provider} implementation for this case")
        if isinstance(fn, str):
            raise Unavailable(fn)

    def call() -> torch.Tensor:
        return fn(*args)

    return call


def _check_compiled_triton(device: torch.device) -> None:
    from sgtriton.ops._runtime import interpreter_active

    if device.type != "cuda":
        raise Unavailable("needs a CUDA device: without one the Triton kernels run under the interpreter, "
                          "which is never timed")
    if interpreter_active():
        raise Unavailable("TRITON_INTERPRET=1 is set; the interpreter is never timed")


def unavailable_from_error(provider: str, exc: Exception) -> Unavailable | None:
    """A first-call error that means "not implemented yet" rather than "broken"."""
    if provider == "triton" and isinstance(exc, (ValueError, NotImplementedError)) and "impl" in str(exc):
        return Unavailable(f"triton implementation missing: {exc}")
    return None


@dataclass(frozen=True)
class Accuracy:
    max_abs: float
    relative: float
    ok: bool


def check_accuracy(out: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype) -> Accuracy:
    """Compare a provider's output with the reference's (same shapes expected)."""
    if out.shape != ref.shape:
        return Accuracy(float("inf"), float("inf"), False)
    diff = (out.double() - ref.double()).abs()
    max_abs = float(diff.max()) if diff.numel() else 0.0
    scale = float(ref.double().abs().max()) if ref.numel() else 0.0
    relative = max_abs / scale if scale > 0 else max_abs
    ok = bool(torch.isfinite(out).all()) and relative <= ACCURACY_LIMITS.get(dtype, 5e-2)
    return Accuracy(max_abs, relative, ok)
