"""Equalised-learning-rate fully connected layer and 2nd-moment (pixel) normalisation.

``fully_connected``: ``y = bias_act(x @ (W * weight_gain)^T, b * bias_gain, act, gain=act_gain)``
with ``x [N, in]``, ``W [out, in]``, ``b [out]`` -> ``[N, out]``. StyleGAN2 uses
``weight_gain = lr / sqrt(in)``, ``bias_gain = lr`` and the activation's default gain (``sqrt 2``
for lrelu); StyleGAN1 moves the ``sqrt 2`` into ``weight_gain`` and uses ``act_gain = 1``.

``normalize_2nd_moment``: ``x * rsqrt(mean(x^2, dim) + eps)``, eps = 1e-8 (StyleGAN1's pixel norm).
"""

from __future__ import annotations

import torch

from sgtriton.ops.bias_act import bias_act_ref

PIXEL_NORM_EPS = 1e-8


def fully_connected_ref(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    weight_gain: float,
    bias_gain: float,
    act: str = "linear",
    act_gain: float | None = None,
) -> torch.Tensor:
    """Reference equalised-lr linear layer; ``x [N, in]`` -> ``[N, out]``."""
    if x.ndim != 2 or x.shape[1] != weight.shape[1]:
        raise ValueError(f"x: expected [N, {weight.shape[1]}], got shape {list(x.shape)}")
    w = weight.to(x.dtype) * weight_gain
    b = None
    if bias is not None:
        b = bias.to(x.dtype)
        if bias_gain != 1:
            b = b * bias_gain
    if act == "linear" and b is not None and act_gain in (None, 1):
        return torch.addmm(b.unsqueeze(0), x, w.t())
    return bias_act_ref(x.matmul(w.t()), b, act=act, gain=act_gain)


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = PIXEL_NORM_EPS) -> torch.Tensor:
    """``x * rsqrt(mean(x^2, dim) + eps)``."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()
