"""Backward pieces shared by several ops' autograd formulas.

Every formula here is written in differentiable PyTorch ops, so an op whose backward uses it has a
backward of its backward as well (double backward).
"""

from __future__ import annotations

import torch


def rms_norm_vjp(x: torch.Tensor, grad: torch.Tensor, dims: list[int], eps: float) -> torch.Tensor:
    """``dL/dx`` of ``y = x * r``, ``r = rsqrt(mean_dims(x^2) + eps)``, from ``grad = dL/dy`` (fp32 maths).

    ``dr/dx_j = -r^3 x_j / K`` over the ``K`` reduced elements, so
    ``dx = r * grad - x * r^3 * mean_dims(grad * x)``. Pixel norm (``dims=[1]`` of ``[N, F]``) and the
    revised block's per-plane RMS normalisation (``dims=[2, 3]``) are both this map.
    """
    xf, gf = x.float(), grad.float()
    r = (xf.square().mean(dim=dims, keepdim=True) + eps).rsqrt()
    return r * gf - xf * r.pow(3) * (gf * xf).mean(dim=dims, keepdim=True)
