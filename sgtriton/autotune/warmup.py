"""``warmup``: run a generator once per batch size and dtype ahead of time, so kernels are compiled
(and, with the ``full`` policy, tuned and cached) before the first real request.

``dtype`` here means the generator's activation precision as NVlabs defines it: ``'fp32'`` runs
with ``force_fp32=True``; ``'fp16'`` runs the layers the config marks fp16 (``num_fp16_res``) in
fp16, which happens only on CUDA. Parameters stay fp32 either way.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from sgtriton.autotune.policy import installed_policy, resolve_policy
from sgtriton.autotune.pruning import Pruner
from sgtriton.autotune.tuner import Benchmarker, TuneResult, format_results, tune_call
from sgtriton.ops._runtime import interpreter_active

_DTYPE_NAMES = {"fp32": "fp32", "float32": "fp32", "float": "fp32", "fp16": "fp16", "float16": "fp16",
                "half": "fp16"}


def normalize_dtype(dtype: str | torch.dtype) -> str:
    """``torch.float16`` / ``'float16'`` / ``'fp16'`` -> ``'fp16'`` (likewise fp32)."""
    name = str(dtype).replace("torch.", "").lower()
    if name not in _DTYPE_NAMES:
        raise ValueError(f"dtypes: {dtype!r} is not a generator precision; expected 'fp32' or 'fp16' "
                         f"(or torch.float32 / torch.float16)")
    return _DTYPE_NAMES[name]


@dataclass
class WarmupRun:
    """One generator call of the warm-up: its batch size, precision, time and per-kernel results."""

    batch_size: int
    dtype: str
    seconds: float
    results: list[TuneResult]


@dataclass
class WarmupReport:
    """What :func:`warmup` ran, what each kernel now uses, and anything worth telling the user."""

    policy: str
    runs: list[WarmupRun] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def results(self) -> list[TuneResult]:
        return [r for run in self.runs for r in run.results]

    @property
    def tuned(self) -> list[TuneResult]:
        return [r for r in self.results if r.source == "tuned"]

    def format(self) -> str:
        lines = []
        for run in self.runs:
            lines.append(f"batch {run.batch_size}, {run.dtype}: {run.seconds:.1f} s, "
                         f"{len(run.results)} kernel bucket(s)")
        if self.results:
            lines += ["", format_results(self.results)]
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)

    __str__ = format


def _device_of(G: torch.nn.Module) -> torch.device:
    for tensor in G.parameters():
        return tensor.device
    for tensor in G.buffers():
        return tensor.device
    return torch.device("cpu")


def _runs_fp16(G: Any, device: torch.device) -> bool:
    synthesis = getattr(getattr(G, "config", None), "synthesis", None)
    return device.type == "cuda" and getattr(synthesis, "num_fp16_res", 0) > 0


def warmup(
    G: torch.nn.Module,
    batch_sizes: Sequence[int] = (1,),
    dtypes: Sequence[str | torch.dtype] = ("fp32",),
    *,
    policy: str | None = None,
    truncation_psi: float = 1.0,
    noise_mode: str = "const",
    retune: bool = False,
    benchmarker: Benchmarker | None = None,
    pruner: Pruner | None = None,
    progress: Any = None,
) -> WarmupReport:
    """Run ``G(z, c)`` once per batch size and dtype; with policy ``full``, tune what the cache lacks.

    ``policy`` defaults to the installed policy's (else ``$SGTRITON_AUTOTUNE``); ``off`` and
    ``cached`` only compile. ``retune=True`` re-measures cached entries too. ``benchmarker``,
    ``pruner`` and ``progress`` (a tqdm-like bar) are passed to
    :func:`~sgtriton.autotune.tuner.tune_call`. Returns a :class:`WarmupReport`.
    """
    installed = installed_policy()
    mode = resolve_policy(policy if policy is not None else (installed.policy if installed else None))
    sizes = [int(b) for b in batch_sizes]
    if not sizes or any(b < 1 for b in sizes):
        raise ValueError(f"batch_sizes={list(batch_sizes)!r}: expected one or more positive integers")
    precisions = list(dict.fromkeys(normalize_dtype(d) for d in dtypes))
    if not precisions:
        raise ValueError("dtypes=[]: expected one or more of 'fp32', 'fp16'")
    device = _device_of(G)
    report = WarmupReport(mode)
    if "fp16" in precisions and not _runs_fp16(G, device):
        report.notes.append(f"fp16 runs the same kernels as fp32 here (fp16 layers run only on CUDA and only "
                            f"when the config sets num_fp16_res > 0; device is {device})")
        if "fp32" in precisions:
            precisions.remove("fp16")

    z_dim, c_dim = int(G.z_dim), int(getattr(G, "c_dim", 0))
    generator = torch.Generator(device="cpu").manual_seed(0)
    for size in sizes:
        z = torch.randn([size, z_dim], generator=generator).to(device)
        c = torch.zeros([size, c_dim], device=device)
        for precision in precisions:
            def call(z: torch.Tensor = z, c: torch.Tensor = c, force_fp32: bool = precision == "fp32") -> object:
                return G(z, c, truncation_psi=truncation_psi, noise_mode=noise_mode, force_fp32=force_fp32)

            start = time.perf_counter()
            with torch.no_grad():
                results = tune_call(call, policy=mode, retune=retune, benchmarker=benchmarker, pruner=pruner,
                                    progress=progress)
            report.runs.append(WarmupRun(size, precision, time.perf_counter() - start, results))

    if not report.results:
        backend = getattr(G, "backend", "?")
        report.notes.append(f"no Triton kernel was launched (backend={backend!r} on {device}): nothing to "
                            f"compile or tune")
    elif interpreter_active():
        report.notes.append("kernels ran under Triton's interpreter with their default configs; tuning needs "
                            "a CUDA GPU")
    elif mode != "full":
        report.notes.append(f"policy {mode!r}: kernels were compiled, nothing was benchmarked (use "
                            f"policy='full' or SGTRITON_AUTOTUNE=full to tune)")
    return report
