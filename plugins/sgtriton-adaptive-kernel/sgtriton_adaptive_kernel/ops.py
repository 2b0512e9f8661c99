"""The adaptive-kernel layer op: per-bank precomputation, the Triton launcher, the ``torch.library``
custom op and the public function with ``impl='reference'|'triton'``.

``adaptive_modulated_conv2d_layer(x, bank, logits, styles, ...)`` is the style layer after its two
affines (styles and selection logits); the maths and shapes are in
:mod:`sgtriton_adaptive_kernel.reference`, the kernel design in :mod:`sgtriton_adaptive_kernel.kernel`.
The Triton path is registered as ``torch.ops.sgtriton_adaptive_kernel.adaptive_modulated_conv2d`` (opaque
to ``torch.compile``; its fake kernel gives the output shape).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import triton
from sgtriton.blocks.base import IMPLEMENTATIONS
from sgtriton.ops._runtime import KernelConfig, WeightDerivedCache, launch_config, triton_dtype
from sgtriton.ops._triton_utils import check_kernel_input, check_same_device
from sgtriton.ops.modconv import broadcast_noise, check_kernel_device, upsample_phase_weights
from sgtriton.ops.upfirdn2d import STYLEGAN_FILTER, setup_filter

from sgtriton_adaptive_kernel.kernel import _adaptive_modconv_kernel, bank_p2, kernel_spec, unroll_bank
from sgtriton_adaptive_kernel.reference import (
    adaptive_modulated_conv2d_layer_ref,
    bank_gram,
    check_bank_args,
    selection_weights,
)

# ----------------------------------------------------------------------------------------------
# What the kernel needs from the bank, once per bank version
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BankOperands:
    """Weight-only operands of the kernel (all fp32, contiguous).

    ``gemm [B, O, I, k, k]`` (up = 1: the bank itself) or ``[4, B, O, I, 3, 3]`` (up = 2: phase weights);
    ``gram [B (B + 1) / 2, O, I]``; ``wmax [O]`` (bank-wide max-abs per output channel, for fp16).
    """

    gemm: torch.Tensor
    gram: torch.Tensor
    wmax: torch.Tensor


def bank_operands(bank: torch.Tensor, up: int, resample_filter: torch.Tensor | None) -> BankOperands:
    """Compute :class:`BankOperands` (uncached)."""
    bank32 = bank.detach().to(torch.float32).contiguous()
    if up == 1:
        gemm = bank32
    else:
        b, o, i, kh, kw = bank.shape
        phase = upsample_phase_weights(bank.detach().reshape(b * o, i, kh, kw), resample_filter)
        gemm = phase.to(torch.float32).reshape(4, b, o, i, kh, kw).contiguous()
    wmax = bank32.abs().amax(dim=(0, 2, 3, 4)).contiguous()
    return BankOperands(gemm, bank_gram(bank.detach()).to(torch.float32).contiguous(), wmax)


#: Operands per (bank, filter, up) version (sgtriton's weight-derived cache: weak references, LRU).
_OPERAND_CACHE = WeightDerivedCache(size=64)


def cached_bank_operands(bank: torch.Tensor, up: int, resample_filter: torch.Tensor | None) -> BankOperands:
    """:func:`bank_operands`, recomputed only when the bank or filter changes (new tensor, new storage or
    an in-place edit, seen through the version counter) -- parameters are read far more than written."""
    return _OPERAND_CACHE.get((bank, resample_filter if up > 1 else None), up,
                              lambda: bank_operands(bank, up, resample_filter))


# ----------------------------------------------------------------------------------------------
# Launcher
# ----------------------------------------------------------------------------------------------


def adaptive_modulated_conv2d_triton(
    x: torch.Tensor,
    bank: torch.Tensor,
    logits: torch.Tensor,
    styles: torch.Tensor,
    bias: torch.Tensor,
    noise: torch.Tensor | None = None,
    noise_strength: torch.Tensor | None = None,
    up: int = 1,
    alpha: float = 0.2,
    gain: float = math.sqrt(2),
    clamp: float | None = None,
    resample_filter: torch.Tensor | None = None,
    config: KernelConfig | None = None,
) -> torch.Tensor:
    """The layer on the Triton kernel (one launch); ``config`` overrides the tuned choice.

    ``logits [N, B]`` are the selection logits (the kernel takes their softmax); ``noise_strength`` a
    one-element tensor or ``None`` (1). Returns ``[N, O, H*up, W*up]`` in ``x.dtype``.
    """
    check_bank_args(x, bank, logits, styles)
    check_kernel_input(x, "x")
    check_kernel_device(x)
    check_same_device(x, bank=bank, logits=logits, styles=styles, bias=bias, noise=noise,
                      noise_strength=noise_strength)
    batch, in_channels, height, width = x.shape
    bank_size, out_channels, _, kh, kw = bank.shape
    spec = kernel_spec(up, bank_size)
    if kh != kw or kh % 2 == 0 or (up == 2 and kh != 3):
        raise ValueError(f"bank: expected square odd kernels (3x3 for up=2), got shape {list(bank.shape)}")
    if list(bias.shape) != [out_channels]:
        raise ValueError(f"bias: expected shape [{out_channels}], got {list(bias.shape)}")
    operands = cached_bank_operands(bank, up, resample_filter)
    gemm_strides = (0, *operands.gemm.stride()) if up == 1 else operands.gemm.stride()
    logits = logits.to(torch.float32)
    styles = styles.to(torch.float32)
    bias = bias.to(torch.float32)

    out = torch.empty([batch, out_channels, height * up, width * up], dtype=x.dtype, device=x.device)
    if noise is not None:
        noise = broadcast_noise(noise, batch, height * up, width * up)
        if noise_strength is None:
            noise_strength = torch.ones([1], dtype=torch.float32, device=x.device)
        elif noise_strength.numel() != 1:
            raise ValueError(f"noise_strength: expected one element, got shape {list(noise_strength.shape)}")
        noise_strength = noise_strength.to(torch.float32)

    key = (("dtype", triton_dtype(x.dtype)), ("batch", batch), ("spatial", height * width),
           ("cin", in_channels), ("cout", out_channels), ("bank", bank_size), ("up", up))
    config = config or launch_config(spec, key)
    block_m, block_n = config.meta["BLOCK_M"], config.meta["BLOCK_N"]
    grid = (triton.cdiv(height * width, block_m) * triton.cdiv(out_channels, block_n), up * up, batch)
    _adaptive_modconv_kernel[grid](
        x, operands.gemm, operands.gram, operands.wmax, logits, styles, bias,
        out if noise is None else noise,
        out if noise is None else noise_strength,
        out,
        height, width, in_channels, out_channels,
        *x.stride(), *gemm_strides, *operands.gram.stride(), *logits.stride(), *styles.stride(),
        *((0, 0, 0) if noise is None else noise.stride()),
        1.0 / math.sqrt(in_channels * kh * kw), float(alpha), float(gain),
        -1.0 if clamp is None else float(clamp),
        UP=up, KH=kh, KW=kw, BANK=bank_size, BANK_P2=bank_p2(bank_size), UNROLL_BANK=unroll_bank(bank_size),
        PRENORM=x.dtype == torch.float16,
        HAS_NOISE=noise is not None, USE_CLAMP=clamp is not None and clamp >= 0,
        num_warps=config.num_warps, num_stages=config.num_stages, **config.meta,
    )
    return out


# ----------------------------------------------------------------------------------------------
# torch.library op (opaque to torch.compile; the fake kernel gives shapes)
# ----------------------------------------------------------------------------------------------


@torch.library.custom_op("sgtriton_adaptive_kernel::adaptive_modulated_conv2d", mutates_args=())
def _adaptive_modulated_conv2d_op(
    x: torch.Tensor,
    bank: torch.Tensor,
    logits: torch.Tensor,
    styles: torch.Tensor,
    bias: torch.Tensor,
    noise: torch.Tensor | None,
    noise_strength: torch.Tensor | None,
    resample_filter: torch.Tensor | None,
    up: int,
    alpha: float,
    gain: float,
    clamp: float | None,
) -> torch.Tensor:
    return adaptive_modulated_conv2d_triton(x, bank, logits, styles, bias, noise, noise_strength, up, alpha, gain,
                                            clamp, resample_filter)


@_adaptive_modulated_conv2d_op.register_fake
def _(x, bank, logits, styles, bias, noise, noise_strength, resample_filter, up, alpha, gain, clamp):
    check_bank_args(x, bank, logits, styles)
    return x.new_empty([x.shape[0], bank.shape[1], x.shape[2] * up, x.shape[3] * up])


# ----------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------


def adaptive_modulated_conv2d_layer(
    x: torch.Tensor,
    bank: torch.Tensor,
    logits: torch.Tensor,
    styles: torch.Tensor,
    *,
    bias: torch.Tensor,
    noise: torch.Tensor | None = None,
    noise_strength: torch.Tensor | float | None = None,
    up: int = 1,
    alpha: float = 0.2,
    gain: float = math.sqrt(2),
    clamp: float | None = None,
    resample_filter: torch.Tensor | None = None,
    fused_modconv: bool = True,
    impl: str = "reference",
) -> torch.Tensor:
    """One adaptive-kernel style layer after its affines::

        y = clamp(lrelu(d * conv_up(x, (sum_j softmax(logits)_j W_j) * s) + strength * noise + bias) * gain)

    Args:
        x: ``[N, I, H, W]`` float32 or float16 (float64 too for ``impl='reference'``).
        bank: ``[B, O, I, k, k]``, ``k`` odd (padding ``k // 2``); ``up=2`` needs ``k = 3``.
        logits: ``[N, B]`` selection logits (the selection affine's output).
        styles: ``[N, I]`` (the style affine's output).
        bias: ``[O]``.
        noise: ``[N, 1, H*up, W*up]``, ``[H*up, W*up]`` or ``None``; ``noise_strength`` scales it.
        up: 1, or 2 (stride-2 transposed conv with the unflipped bank + ``resample_filter`` FIR,
            ``[1, 3, 3, 1]`` when ``None``).
        alpha, gain, clamp: leaky slope, total gain (``sqrt 2`` times the layer gain) and clamp.
        fused_modconv: which formulation the reference uses (the kernel computes both).
        impl: ``'reference'`` (PyTorch, any device) or ``'triton'`` (the custom op, one launch).

    Returns:
        ``[N, O, H*up, W*up]`` in ``x.dtype``.
    """
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"impl={impl!r}: expected one of {IMPLEMENTATIONS}")
    if up > 1 and resample_filter is None:
        resample_filter = setup_filter(STYLEGAN_FILTER).to(x.device)
    if impl == "reference":
        return adaptive_modulated_conv2d_layer_ref(
            x, bank, selection_weights(logits), styles, bias, noise, noise_strength, up, alpha, gain, clamp,
            resample_filter, fused_modconv)
    if noise is not None and noise_strength is not None and not isinstance(noise_strength, torch.Tensor):
        noise_strength = torch.full([1], float(noise_strength), dtype=torch.float32, device=x.device)
    if isinstance(noise_strength, torch.Tensor):
        noise_strength = noise_strength.reshape(1)
    return torch.ops.sgtriton_adaptive_kernel.adaptive_modulated_conv2d(
        x, bank, logits, styles, bias, noise, noise_strength, resample_filter, up, float(alpha), float(gain),
        None if clamp is None else float(clamp))


# ----------------------------------------------------------------------------------------------
# Backward: autograd of the reference, recomputed (a plugin's simplest correct backward)
# ----------------------------------------------------------------------------------------------
#
# The kernel's output is a differentiable function of its tensor inputs that the reference spells
# out in differentiable PyTorch ops (``fused_modconv=False``: scale x, one shared-weight conv of the
# whole bank, mix per sample, demodulate from the Gram form -- no per-sample weights). The backward
# recomputes that graph from the saved inputs and differentiates it; under ``create_graph`` the
# recomputation is itself recorded, so double backward (path-length regularisation) works too. fp16
# activations are recomputed in fp32 (the fp16 pre-normalisation only moves the demodulation epsilon).

_TENSOR_INPUTS = 7  # x, bank, logits, styles, bias, noise, noise_strength


def _adaptive_setup_context(ctx, inputs, output):
    x, bank, logits, styles, bias, noise, noise_strength, resample_filter, up, alpha, gain, clamp = inputs
    ctx.save_for_backward(x, bank, logits, styles, bias, noise, noise_strength, resample_filter)
    ctx.args = (up, alpha, gain, clamp)


def _adaptive_backward(ctx, grad):
    *tensors, resample_filter = ctx.saved_tensors
    up, alpha, gain, clamp = ctx.args
    wanted = [i for i in range(_TENSOR_INPUTS) if ctx.needs_input_grad[i] and tensors[i] is not None]
    create_graph = torch.is_grad_enabled()  # true when the caller asked for create_graph
    with torch.enable_grad():
        # Saved tensors already in a graph (create_graph) are used as they are, so the result is
        # differentiable w.r.t. them; the others become local leaves.
        leaves = [t if t is None or t.requires_grad else t.detach().requires_grad_() for t in tensors]
        x, bank, logits, styles, bias, noise, strength = leaves
        compute = torch.promote_types(x.dtype, torch.float32)
        y = adaptive_modulated_conv2d_layer_ref(
            x.to(compute), bank, selection_weights(logits), styles, bias, noise,
            None if strength is None else strength.reshape(()), up, alpha, gain, clamp, resample_filter,
            fused_modconv=False)
        grads = torch.autograd.grad(y, [leaves[i] for i in wanted], grad.to(y.dtype),
                                    create_graph=create_graph, allow_unused=True)
    result = [None] * 12
    for i, g in zip(wanted, grads, strict=True):
        result[i] = None if g is None else g.to(tensors[i].dtype)
    return tuple(result)


_adaptive_modulated_conv2d_op.register_autograd(_adaptive_backward, setup_context=_adaptive_setup_context)
