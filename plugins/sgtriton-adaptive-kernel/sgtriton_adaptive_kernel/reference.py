"""The adaptive-kernel conv in plain PyTorch: the specification the Triton kernel is tested against.

GigaGAN (Kang et al., CVPR 2023, Sec. 3.1) replaces StyleGAN2's single conv weight by a bank of ``B``
kernels and lets the style pick a per-sample mixture. For sample ``n``, output channel ``o``, input
channel ``i`` and kernel tap ``k``::

    a[n, j]     = softmax_j(logits[n, :])                       (selection weights, sum_j a[n, j] = 1)
    K[n,o,i,k]  = sum_j a[n, j] * W_j[o, i, k]                  (the sample's kernel)
    w'[n,o,i,k] = K[n,o,i,k] * s[n, i]                          (modulation, as ``moddemod``)
    d[n, o]     = rsqrt(sum_{i,k} w'[n,o,i,k]^2 + eps)          (demodulation, eps = 1e-8)
    y[n, o]     = d[n, o] * conv(x[n], w'[n, o]) + noise[n]     (``conv2d_resample``, up = 1 or 2)

Without materialising ``K`` the demodulation is a quadratic form in ``a`` (what the kernel uses)::

    sum_k K[n,o,i,k]^2 = sum_{j, j'} a[n,j] a[n,j'] G[j,j',o,i],   G[j,j',o,i] = sum_k W_j[o,i,k] W_j'[o,i,k]

``G`` is symmetric in ``(j, j')``, so only its ``B (B + 1) / 2`` upper-triangle planes are stored
(:func:`bank_gram`, ``[P, O, I]``, plane ``p`` = pair ``(j, j')`` with ``j <= j'`` in row-major order).

Shapes: ``x [N, I, H, W]``, ``bank [B, O, I, kh, kw]``, ``selection [N, B]`` (the softmax weights),
``styles [N, I]``, ``noise`` broadcastable to ``[N, O, H*up, W*up]`` or ``None``.
Returns ``[N, O, H*up, W*up]`` (``padding = kh // 2``).

Both NVlabs formulations exist, computing the same function with different rounding:
``fused_modconv=True`` builds the per-sample weights ``K * s * d`` and runs one grouped conv;
``fused_modconv=False`` never builds a per-sample weight: it scales the activations by ``s``, runs the
bank as ``B * O`` output channels of one shared-weight conv, mixes those outputs per sample with
``a`` (by linearity, ``conv(x, sum_j a_j W_j) = sum_j a_j conv(x, W_j)``) and scales by ``d`` from the
Gram form -- ``B`` times the multiply-adds, no per-sample weight tensor.

fp16 inputs are pre-normalised like ``moddemod`` (NVlabs' overflow guard, cancelled by the
demodulation): the styles by their per-sample max-abs, and the bank by
``c[o] = 1 / (sqrt(I*kh*kw) * max_{j,i,k} |W_j[o,i,k]|)``. Because ``a`` is a convex combination,
``|K[n,o,i,k]| <= max_j |W_j[o,i,k]|``, so the mixed fp16 operand stays within ``1/sqrt(I*kh*kw)`` as
in NVlabs, and ``c`` depends on the bank only (not on the sample). With ``B = 1`` it is exactly
``moddemod``'s factor.
"""

from __future__ import annotations

import math

import torch
from sgtriton.ops.bias_act import bias_act
from sgtriton.ops.conv2d_resample import conv2d_resample
from sgtriton.ops.modconv import DEMOD_EPS


def selection_weights(logits: torch.Tensor) -> torch.Tensor:
    """``softmax`` over the bank: ``logits [N, B]`` -> ``a [N, B]`` with rows summing to one."""
    if logits.ndim != 2:
        raise ValueError(f"logits: expected [N, B], got shape {list(logits.shape)}")
    return torch.softmax(logits, dim=1)


def check_bank_args(x: torch.Tensor, bank: torch.Tensor, selection: torch.Tensor, styles: torch.Tensor) -> None:
    """Validate the shapes shared by every implementation; errors name the argument."""
    if x.ndim != 4:
        raise ValueError(f"x: expected [N, I, H, W], got shape {list(x.shape)}")
    if bank.ndim != 5:
        raise ValueError(f"bank: expected [B, O, I, kh, kw], got shape {list(bank.shape)}")
    n, i = x.shape[:2]
    if bank.shape[2] != i:
        raise ValueError(f"bank: expected {i} input channels (x.shape[1]), got shape {list(bank.shape)}")
    if list(selection.shape) != [n, bank.shape[0]]:
        raise ValueError(f"selection: expected shape [{n}, {bank.shape[0]}] (batch, bank size), "
                         f"got {list(selection.shape)}")
    if list(styles.shape) != [n, i]:
        raise ValueError(f"styles: expected shape [{n}, {i}], got {list(styles.shape)}")


def mix_bank(bank: torch.Tensor, selection: torch.Tensor) -> torch.Tensor:
    """The per-sample kernels ``K [N, O, I, kh, kw] = sum_j selection[:, j] * bank[j]``."""
    return torch.einsum("nj,joikl->noikl", selection.to(bank.dtype), bank)


def bank_gram(bank: torch.Tensor) -> torch.Tensor:
    """Upper-triangle Gram planes ``G [B (B + 1) / 2, O, I]``, ``G[p] = sum_k W_j W_j'`` for pair ``p = (j, j')``.

    Computed in float64 one pair at a time (no ``[P, O, I, kh, kw]`` temporary) and returned in
    ``bank``'s dtype promoted to at least float32.
    """
    flat = bank.to(torch.float64).flatten(3)
    rows, cols = torch.triu_indices(bank.shape[0], bank.shape[0]).tolist()
    gram = torch.stack([(flat[j] * flat[k]).sum(-1) for j, k in zip(rows, cols, strict=True)])
    return gram.to(torch.promote_types(bank.dtype, torch.float32))


def selection_quadratic(gram: torch.Tensor, selection: torch.Tensor) -> torch.Tensor:
    """``Q [N, O, I] = sum_{j, j'} a_j a_j' G[j, j']`` from the packed Gram planes of :func:`bank_gram`."""
    bank_size = selection.shape[1]
    rows, cols = torch.triu_indices(bank_size, bank_size).tolist()
    a = selection.to(gram.dtype)
    # Off-diagonal pairs stand for both (j, j') and (j', j).
    coefs = torch.stack([a[:, j] * a[:, k] * (1.0 if j == k else 2.0) for j, k in zip(rows, cols, strict=True)],
                        dim=1)
    return torch.einsum("np,poi->noi", coefs, gram)


def bank_fp16_prenormalize(bank: torch.Tensor, styles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """fp16 overflow guard: ``bank * c[o]`` (``c`` from the bank-wide max-abs per output channel) and
    ``styles / max|styles[n]|`` (see the module docstring)."""
    fan_in = bank.shape[2] * bank.shape[3] * bank.shape[4]
    bank = bank * (1 / math.sqrt(fan_in) / bank.norm(float("inf"), dim=[0, 2, 3, 4], keepdim=True))
    styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)
    return bank, styles


def adaptive_modulated_conv2d_ref(
    x: torch.Tensor,
    bank: torch.Tensor,
    selection: torch.Tensor,
    styles: torch.Tensor,
    noise: torch.Tensor | None = None,
    up: int = 1,
    padding: int = 0,
    resample_filter: torch.Tensor | None = None,
    flip_weight: bool = True,
    fused_modconv: bool = True,
    eps: float = DEMOD_EPS,
) -> torch.Tensor:
    """Reference adaptive-kernel modulated/demodulated conv (module docstring; NVlabs conventions)."""
    check_bank_args(x, bank, selection, styles)
    batch = x.shape[0]
    bank_size, out_channels, in_channels, kh, kw = bank.shape
    if x.dtype == torch.float16:
        bank, styles = bank_fp16_prenormalize(bank, styles)

    if fused_modconv:
        kernels = mix_bank(bank, selection)
        q = kernels.square().sum(dim=[3, 4])
        dcoefs = (torch.matmul(styles.square()[:, None, :], q.transpose(1, 2))[:, 0] + eps).rsqrt()
        w = kernels * styles[:, None, :, None, None] * dcoefs[:, :, None, None, None]
        x = x.reshape(1, batch * in_channels, *x.shape[2:])
        w = w.reshape(batch * out_channels, in_channels, kh, kw)
        x = conv2d_resample(x, w.to(x.dtype), resample_filter, up=up, padding=padding, groups=batch,
                            flip_weight=flip_weight)
        x = x.reshape(batch, out_channels, *x.shape[2:])
    else:
        q = selection_quadratic(bank_gram(bank).to(styles.dtype), selection)
        dcoefs = (torch.matmul(styles.square()[:, None, :], q.transpose(1, 2))[:, 0] + eps).rsqrt()
        x = x * styles.to(x.dtype)[:, :, None, None]
        x = conv2d_resample(x, bank.reshape(bank_size * out_channels, in_channels, kh, kw).to(x.dtype),
                            resample_filter, up=up, padding=padding, flip_weight=flip_weight)
        x = x.reshape(batch, bank_size, out_channels, *x.shape[2:])
        x = torch.einsum("nj,njohw->nohw", selection.to(x.dtype), x)
        x = x * dcoefs.to(x.dtype)[:, :, None, None]
    if noise is not None:
        x = x + noise.to(x.dtype)
    return x


def adaptive_modulated_conv2d_layer_ref(
    x: torch.Tensor,
    bank: torch.Tensor,
    selection: torch.Tensor,
    styles: torch.Tensor,
    bias: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    noise_strength: torch.Tensor | float | None = None,
    up: int = 1,
    alpha: float = 0.2,
    gain: float = math.sqrt(2),
    clamp: float | None = None,
    resample_filter: torch.Tensor | None = None,
    fused_modconv: bool = True,
) -> torch.Tensor:
    """The style layer after its affines, as NVlabs ``SynthesisLayer`` orders it::

        y = clamp(lrelu(adaptive_modulated_conv2d_ref(x, ...) + noise * noise_strength + bias, alpha) * gain)

    ``up = 2`` uses the unflipped bank (transposed conv) and ``resample_filter``; ``up = 1`` the
    flipped one (a true conv), both with ``padding = kh // 2``.
    """
    if noise is not None and noise_strength is not None:
        noise = noise * noise_strength
    y = adaptive_modulated_conv2d_ref(x, bank, selection, styles, noise, up=up, padding=bank.shape[3] // 2,
                                      resample_filter=resample_filter, flip_weight=(up == 1),
                                      fused_modconv=fused_modconv)
    return bias_act(y, None if bias is None else bias.to(y.dtype), act="lrelu", alpha=alpha, gain=gain, clamp=clamp)
