"""The one tolerance table, and the comparison every kernel test uses.

A kernel result ``a`` in dtype ``d`` matches a float64 reference ``e`` when, elementwise,

    |a - e| <= atol(d) * sqrt(K) + rtol(d) * |e|

where ``K`` is the reduction length behind each output element (``I * kh * kw`` for a conv,
``H * W`` for normalisation statistics, 1 for elementwise ops): rounding errors of a length-``K``
sum grow like ``sqrt(K)`` for random-sign terms. A whole generator chains its layers, so its images
use the sum of the layers' lengths along the chain (:func:`generator_reduction_length`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Tolerance:
    rtol: float
    atol: float


#: Per-dtype tolerances (atol is per sqrt of the reduction length).
TOLERANCES: dict[torch.dtype, Tolerance] = {
    torch.float64: Tolerance(rtol=1e-10, atol=1e-12),
    torch.float32: Tolerance(rtol=2e-5, atol=2e-6),
    torch.float16: Tolerance(rtol=4e-3, atol=2e-3),
    torch.bfloat16: Tolerance(rtol=3e-2, atol=1.6e-2),
}


def tolerance_for(dtype: torch.dtype, reduction_length: int = 1) -> tuple[float, float]:
    """``(rtol, atol)`` for ``dtype`` and a reduction of ``reduction_length`` terms."""
    if dtype not in TOLERANCES:
        raise ValueError(f"dtype={dtype}: no tolerance entry; expected one of {list(TOLERANCES)}")
    tol = TOLERANCES[dtype]
    return tol.rtol, tol.atol * math.sqrt(max(int(reduction_length), 1))


def assert_close(actual: torch.Tensor, expected: torch.Tensor, *, dtype: torch.dtype | None = None,
                 reduction_length: int = 1, name: str = "output", floor: float = 0.0) -> None:
    """Raise ``AssertionError`` with max/mean abs error, worst index and mismatch count on failure.

    ``dtype`` picks the table row (default: ``actual.dtype``); ``expected`` is normally float64.
    ``floor`` raises atol to at least that value (see :func:`precision_floor`).
    """
    if tuple(actual.shape) != tuple(expected.shape):
        raise AssertionError(f"{name}: shape {list(actual.shape)} != expected {list(expected.shape)}")
    dtype = dtype or actual.dtype
    rtol, atol = tolerance_for(dtype, reduction_length)
    atol = max(atol, floor)
    a = actual.detach().to(torch.float64).cpu()
    e = expected.detach().to(torch.float64).cpu()
    if not torch.isfinite(a).eq(torch.isfinite(e)).all():
        bad = (~torch.isfinite(a) & torch.isfinite(e)).sum().item()
        raise AssertionError(f"{name}: {bad} non-finite values where the reference is finite")
    finite = torch.isfinite(e)
    err = (a - e).abs().where(finite, torch.zeros_like(a))
    bound = atol + rtol * e.abs().where(finite, torch.zeros_like(e))
    mismatch = err > bound
    count = int(mismatch.sum())
    if count:
        worst = int((err - bound).argmax())
        index = tuple(int(i) for i in torch.unravel_index(torch.tensor(worst), a.shape))
        raise AssertionError(
            f"{name}: {count} of {a.numel()} elements differ beyond rtol={rtol:.1e}, atol={atol:.1e} "
            f"({dtype}, K={reduction_length}); max abs error {err.max().item():.3e}, "
            f"mean abs error {err.mean().item():.3e}; worst at {index}: got {a[index].item():.6e}, "
            f"expected {e[index].item():.6e}"
        )


#: How much worse than PyTorch's own reference in the same dtype a kernel may be (see precision_floor).
FLOOR_FACTOR = 2.0


def precision_floor(same_dtype_reference: torch.Tensor | None, expected: torch.Tensor) -> float:
    """``FLOOR_FACTOR`` x the largest error of the PyTorch reference run in the kernel's dtype.

    Some computations are ill-conditioned whatever computes them: normalising a 2x2 map whose
    spread is tiny next to its mean multiplies every rounding error of the inputs. There the
    same-dtype reference is off from float64 by more than the table allows, and a kernel can only
    be expected to be as accurate as it (within ``FLOOR_FACTOR``). Well-conditioned cases are
    unaffected: the floor is then far below the table's bound.
    """
    if same_dtype_reference is None:
        return 0.0
    err = (same_dtype_reference.detach().to(torch.float64).cpu() - expected.detach().to(torch.float64).cpu()).abs()
    err = err[torch.isfinite(err)]
    return FLOOR_FACTOR * float(err.max()) if err.numel() else 0.0


def generator_reduction_length(G) -> int:
    """``K`` of a whole generator's image: the block type's reduction lengths summed over the chain
    of style layers and the last ToRGB (their rounding errors add up along the network)."""
    block = G.graph.block_type
    nodes = [n for n in G.graph.synthesis_nodes if n.kind in ("input", "conv")]
    torgb = [n for n in G.graph.synthesis_nodes if n.kind == "torgb"][-1]
    return sum(block.reduction_length(n) for n in nodes) + block.reduction_length(torgb)
