"""Modulated (and optionally demodulated) convolution, StyleGAN2 Fig. 2d.

For sample ``n``, output channel ``o``, input channel ``i`` and kernel tap ``k``::

    w'[n,o,i,k] = W[o,i,k] * s[n,i]                                   (modulation)
    d[n,o]      = rsqrt(sum_{i,k} w'[n,o,i,k]^2 + eps)                 (demodulation, eps = 1e-8)
                = rsqrt(sum_i s[n,i]^2 * Q[o,i] + eps),  Q[o,i] = sum_k W[o,i,k]^2
    y[n,o]      = d[n,o] * conv(x[n], w'[n,o]) + noise[n]              (conv2d_resample, up = 1 or 2)

The second form of ``d`` never builds the ``[N, O, I, kh, kw]`` per-sample weights; kernels use it.

Shapes: ``x [N, I, H, W]``, ``weight [O, I, kh, kw]``, ``styles [N, I]``, ``noise`` broadcastable to
``[N, O, H*up, W*up]`` or ``None``. Returns ``[N, O, H*up, W*up]`` (with ``padding = kh // 2``).

fp16 inputs with ``demodulate=True`` are pre-normalised (weights by ``1/sqrt(I*kh*kw)`` over their
per-output-channel max-abs, styles by their per-sample max-abs), which demodulation cancels; it
only keeps fp16 in range.

Two formulations compute the same function and differ only by rounding:
``fused_modconv=True`` (per-sample weights, one grouped conv) and ``False`` (scale activations,
shared-weight conv, scale outputs).
"""

from __future__ import annotations

import math

import torch

from sgtriton.ops.conv2d_resample import conv2d_resample

DEMOD_EPS = 1e-8


def demodulation_coefficients(weight: torch.Tensor, styles: torch.Tensor, eps: float = DEMOD_EPS) -> torch.Tensor:
    """``d [N, O] = rsqrt(s^2 @ Q^T + eps)`` with ``Q [O, I] = sum over taps of weight^2``."""
    q = weight.square().sum(dim=[2, 3])
    return (styles.square() @ q.transpose(0, 1) + eps).rsqrt()


def fp16_prenormalize(weight: torch.Tensor, styles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """NVlabs' fp16 overflow guard: scale ``weight`` per output channel and ``styles`` per sample."""
    fan_in = weight.shape[1] * weight.shape[2] * weight.shape[3]
    weight = weight * (1 / math.sqrt(fan_in) / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True))
    styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)
    return weight, styles


def check_modconv_args(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor) -> None:
    """Validate shapes shared by every implementation; errors name the argument."""
    if x.ndim != 4:
        raise ValueError(f"x: expected [N, I, H, W], got shape {list(x.shape)}")
    if weight.ndim != 4:
        raise ValueError(f"weight: expected [O, I, kh, kw], got shape {list(weight.shape)}")
    n, i = x.shape[:2]
    if weight.shape[1] != i:
        raise ValueError(f"weight: expected {i} input channels (x.shape[1]), got shape {list(weight.shape)}")
    if list(styles.shape) != [n, i]:
        raise ValueError(f"styles: expected shape [{n}, {i}], got {list(styles.shape)}")


def modulated_conv2d_ref(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    noise: torch.Tensor | None = None,
    up: int = 1,
    padding: int = 0,
    resample_filter: torch.Tensor | None = None,
    demodulate: bool = True,
    flip_weight: bool = True,
    fused_modconv: bool = True,
) -> torch.Tensor:
    """Reference modulated conv in plain PyTorch (NVlabs semantics, both formulations)."""
    check_modconv_args(x, weight, styles)
    batch = x.shape[0]
    out_channels, in_channels, kh, kw = weight.shape

    if x.dtype == torch.float16 and demodulate:
        weight, styles = fp16_prenormalize(weight, styles)

    dcoefs = demodulation_coefficients(weight, styles) if demodulate else None

    if not fused_modconv:
        x = x * styles.to(x.dtype)[:, :, None, None]
        x = conv2d_resample(x, weight.to(x.dtype), resample_filter, up=up, padding=padding, flip_weight=flip_weight)
        if dcoefs is not None:
            x = x * dcoefs.to(x.dtype)[:, :, None, None]
        if noise is not None:
            x = x + noise.to(x.dtype)
        return x

    w = weight[None] * styles[:, None, :, None, None]
    if dcoefs is not None:
        w = w * dcoefs[:, :, None, None, None]
    x = x.reshape(1, batch * in_channels, *x.shape[2:])
    w = w.reshape(batch * out_channels, in_channels, kh, kw)
    x = conv2d_resample(
        x, w.to(x.dtype), resample_filter, up=up, padding=padding, groups=batch, flip_weight=flip_weight
    )
    x = x.reshape(batch, out_channels, *x.shape[2:])
    if noise is not None:
        x = x + noise.to(x.dtype)
    return x
