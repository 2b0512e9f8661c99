"""The adaptive-kernel layer op: per-bank precomputation, the Triton launcher, the ``torch.library``
custom op and the public function with ``impl='reference'|'triton'``.

``adaptive_modulated_conv2d_layer(x, bank, logits, styles, ...)`` is the style layer after its two
affines (styles and selection logits); the maths and shapes are in
:mod:`sgtriton_adaptive_kernel.reference`, the kernel design in :mod:`sgtriton_adaptive_kernel.kernel`.
The Triton path is registered as ``torch.ops.sgtriton_adaptive_kernel.adaptive_modulated_conv2d`` (opaque
to ``torch.compile``; its fake kernel gives the output shape), with a backward on Triton kernels (section
*Backward*: this op again for the input gradient, sgtriton's modulated-conv and weight-gradient ops for
the rest).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import triton
from sgtriton.blocks.base import IMPLEMENTATIONS
from sgtriton.ops._runtime import KernelConfig, WeightDerivedCache, launch_config, triton_dtype
from sgtriton.ops._triton_utils import check_kernel_input, check_same_device
from sgtriton.ops.bias_act import bias_act_input_grad
from sgtriton.ops.modconv import (
    DEMOD_EPS,
    _phases,
    _prenormalize_vjp,
    broadcast_noise,
    check_kernel_device,
    demodulation_prologue,
    modconv_weight_grad,
    noise_gradients,
    upsample_phase_weights,
)
from sgtriton.ops.upfirdn2d import STYLEGAN_FILTER, setup_filter

from sgtriton_adaptive_kernel.kernel import _adaptive_modconv_kernel, bank_p2, kernel_spec, unroll_bank
from sgtriton_adaptive_kernel.reference import (
    adaptive_modulated_conv2d_layer_ref,
    bank_fp16_prenormalize,
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


def bank_operands(bank: torch.Tensor, up: int, resample_filter: torch.Tensor | None,
                  demodulate: bool = True) -> BankOperands:
    """Compute :class:`BankOperands` (uncached); without ``demodulate`` the kernel reads neither ``gram``
    nor ``wmax``, which are then empty."""
    bank32 = bank.detach().to(torch.float32).contiguous()
    if up == 1:
        gemm = bank32
    else:
        b, o, i, kh, kw = bank.shape
        phase = upsample_phase_weights(bank.detach().reshape(b * o, i, kh, kw), resample_filter)
        gemm = phase.to(torch.float32).reshape(4, b, o, i, kh, kw).contiguous()
    if not demodulate:
        unused = bank32.new_empty([0, 0, 0])
        return BankOperands(gemm, unused, unused.new_empty([0]))
    wmax = bank32.abs().amax(dim=(0, 2, 3, 4)).contiguous()
    return BankOperands(gemm, bank_gram(bank.detach()).to(torch.float32).contiguous(), wmax)


#: Operands per (bank, filter, up) version (sgtriton's weight-derived cache: weak references, LRU).
_OPERAND_CACHE = WeightDerivedCache(size=64)


def cached_bank_operands(bank: torch.Tensor, up: int, resample_filter: torch.Tensor | None) -> BankOperands:
    """:func:`bank_operands`, recomputed only when the bank or filter changes (new tensor, new storage or
    an in-place edit, seen through the version counter) -- parameters are read far more than written."""
    return _OPERAND_CACHE.get((bank, resample_filter if up > 1 else None), up,
                              lambda: bank_operands(bank, up, resample_filter))


#: ``(rows, cols, weights)`` of the packed Gram pairs ``(j <= j')`` per (bank size, device), on the device.
_PAIRS: dict[tuple[int, torch.device], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}


def selection_gram(operands: BankOperands, logits: torch.Tensor, prenorm: bool, fan_in_rsqrt: float) -> torch.Tensor:
    """``Q'^T [N, I, O]`` fp32 for sgtriton's modulated-conv prologue: per sample
    ``Q'[o, i] = c[o]^2 sum_{j<=j'} c_jj' a_j a_j' G[p(j, j'), o, i]`` (``a = softmax(logits)``,
    ``c_jj' = 1`` on the diagonal and 2 off it; ``c[o] = fan_in_rsqrt / wmax[o]`` when ``prenorm``, else 1).
    """
    bank_size = logits.shape[1]
    key = (bank_size, logits.device)
    if key not in _PAIRS:
        pairs = [(j, k) for j in range(bank_size) for k in range(j, bank_size)]
        _PAIRS[key] = (torch.tensor([j for j, _ in pairs], device=logits.device),
                       torch.tensor([k for _, k in pairs], device=logits.device),
                       torch.tensor([1.0 if j == k else 2.0 for j, k in pairs], device=logits.device))
    rows, cols, weights = _PAIRS[key]
    a = torch.softmax(logits, dim=1)
    coefs = a[:, rows] * a[:, cols] * weights                                      # [N, P]
    gram = torch.einsum("np,poi->nio", coefs, operands.gram)
    if prenorm:
        gram = gram * (fan_in_rsqrt / operands.wmax).square()
    return gram.contiguous()


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
    demodulate: bool = True,
) -> torch.Tensor:
    """The layer on the Triton kernel (one launch, after the demodulation prologue when it demodulates);
    ``config`` overrides the tuned choice.

    ``logits [N, B]`` are the selection logits (the kernel takes their softmax); ``noise_strength`` a
    one-element tensor or ``None`` (1). Returns ``[N, O, H*up, W*up]`` in ``x.dtype``.
    ``demodulate=False`` drops ``d`` (and with it the fp16 pre-normalisation, as modconv does): the
    backward's transposed conv, whose bank is a fresh tensor per call and so is not cached.
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
    operands = (cached_bank_operands(bank, up, resample_filter) if demodulate
                else bank_operands(bank, up, resample_filter, demodulate=False))
    gemm_strides = (0, *operands.gemm.stride()) if up == 1 else operands.gemm.stride()
    logits = logits.to(torch.float32)
    styles = styles.to(torch.float32)
    bias = bias.to(torch.float32)
    prenorm = demodulate and x.dtype == torch.float16
    fan_in_rsqrt = 1.0 / math.sqrt(in_channels * kh * kw)
    if demodulate:
        styles, d = demodulation_prologue(styles, selection_gram(operands, logits, prenorm, fan_in_rsqrt), x.dtype,
                                          prenorm)
    else:
        d = operands.gemm  # not read

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
        x, operands.gemm, d, operands.wmax, logits, styles, bias,
        out if noise is None else noise,
        out if noise is None else noise_strength,
        out,
        height, width, in_channels, out_channels,
        *x.stride(), *gemm_strides, d.stride(0), *logits.stride(), *styles.stride(),
        *((0, 0, 0) if noise is None else noise.stride()),
        fan_in_rsqrt, float(alpha), float(gain),
        -1.0 if clamp is None else float(clamp),
        UP=up, KH=kh, KW=kw, BANK=bank_size, BANK_P2=bank_p2(bank_size), UNROLL_BANK=unroll_bank(bank_size),
        DEMOD=demodulate, PRENORM=prenorm,
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
    demodulate: bool = True,
) -> torch.Tensor:
    return adaptive_modulated_conv2d_triton(x, bank, logits, styles, bias, noise, noise_strength, up, alpha, gain,
                                            clamp, resample_filter, demodulate=demodulate)


@_adaptive_modulated_conv2d_op.register_fake
def _(x, bank, logits, styles, bias, noise, noise_strength, resample_filter, up, alpha, gain, clamp,
      demodulate=True):
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
# Backward
# ----------------------------------------------------------------------------------------------
#
# With the effective (fp16: pre-normalised) bank W'_j and styles s', the selection a = softmax(logits),
# the sample's kernel K'[n] = sum_j a[n,j] W'_j, c = conv_up(x s', K'[n]) = sum_j a[n,j] C_j with
# C_j = conv_up(x s', W'_j) (one shared-weight conv per bank entry), and
#
#   d[n,o]   = rsqrt(sum_i s'[n,i]^2 Q[n,o,i] + eps),   Q[n,o,i] = sum_{j,l} a[n,j] a[n,l] G[j,l,o,i],
#   G[j,l,o,i] = sum_k W'_j[o,i,k] W'_l[o,i,k]            (the Gram planes, full B x B here),
#
# y = clamp(lrelu(d c + strength noise + bias) * gain). For g = dL/d(d c + ...) (bias_act_input_grad):
#
#   H[n,j,o]  = sum_p g[n,o,p] C_j[n,o,p]                 e[n,o] = d^3 sum_j a[n,j] H[n,j,o]  (= d^3 <g, c>)
#   dx[n,i]   = s'[n,i] u[n,i],   u = conv_up^T(g d, K'[n])  -- the plugin's own op (below)
#   ds'[n,i]  = sum_p x[n,i,p] u[n,i,p]  -  s'[n,i] sum_o e[n,o] Q[n,o,i]
#   dW'_j     = wgrad(x s', a[:,j] g d)  -  sum_l M[j,l,o,i] W'_l[o,i,k],  M[j,l,o,i] = sum_n a_j a_l e[n,o] s'[n,i]^2
#   da[n,j]   = sum_o d[n,o] H[n,j,o]  -  sum_l a[n,l] sum_{o,i} e[n,o] s'[n,i]^2 G[j,l,o,i]
#   dlogits   = a * (da - sum_j a_j da_j)                 (the softmax VJP)
#
# (the demodulation terms are d(-1/2 d^-2)/dS = -e/2 times dS, S = sum_i s'^2 Q, and dS/da_j = 2 sum_l a_l
# sum_i s'^2 G[j,l], dS/dW'_j = 2 a_j s'^2 K'). The fp16 pre-normalisation W'_j = W_j / (sqrt(I k k)
# wmax[o]), wmax[o] = max_{j,i,k} |W_j[o,i,k]| over the whole bank, and s' = s / max|s[n]|, is then
# undone by modconv's VJP (max-abs gradients shared by ties) on the bank seen as one [O, B*I, k, k]
# weight -- which normalises by the fan-in B*I*k*k, so its result is scaled back by sqrt(B) (both terms
# of that VJP are proportional to the factor).
#
# The costly parts run on Triton kernels: u is the plugin's own op without demodulation, on the bank
# transposed (in/out swapped) and flipped, with d as the styles over its input channels (the layer's
# output channels) and the same logits, since conv^T is linear in the kernel and so mixes the same way
# (up = 2: one 3x3 conv of the four phases of g stacked as 4*O channels with the transposed, flipped
# phase weights of every bank entry, as modconv does); the C_j are one launch of sgtriton's modulated
# conv op with the bank as B*O output channels of a shared weight (no demodulation); the dW'_j are one
# launch of sgtriton::modconv_weight_grad with B*O output channels, the gradient stacked as
# a[n,j] g d (up = 2 through the phase form). What is left are reductions over pixels (H, ds') and
# small einsums over [N, B, B, O, I]; no [N, O, I, k, k] tensor is built. Every piece is a
# differentiable op (this one's backward, modconv's, the weight-gradient op's, PyTorch's), so the
# backward has a backward too: double backward for path-length regularisation.


def bank_effective_operands(bank: torch.Tensor, styles: torch.Tensor,
                            prenorm: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``(W', s')`` in fp32, differentiable: what the kernel multiplies (pre-normalised for fp16)."""
    w, s = bank.float(), styles.float()
    return bank_fp16_prenormalize(w, s) if prenorm else (w, s)


def full_bank_gram(w_eff: torch.Tensor) -> torch.Tensor:
    """``G [B, B, O, I] = sum_k W'_j W'_l`` (both orders: the backward contracts it with matrices)."""
    flat = w_eff.flatten(3)
    return torch.einsum("joik,loik->jloi", flat, flat)


def adaptive_transposed(g: torch.Tensor, w_eff: torch.Tensor, logits: torch.Tensor, d: torch.Tensor, up: int,
                        resample_filter: torch.Tensor | None) -> torch.Tensor:
    """``u[n] = conv_up^T(g[n] * d[n, :, None, None], sum_j a[n,j] W'_j)``: ``g [N, O, H*up, W*up]`` ->
    ``[N, I, H, W]`` in ``g.dtype``, one launch of the plugin's op (no demodulation, identity epilogue)."""
    bank_size, out_channels, in_channels, kh, kw = w_eff.shape
    if up == 1:
        bank_t, g_in, styles_t = w_eff.transpose(1, 2).flip([3, 4]), g, d
    else:
        phase = upsample_phase_weights(w_eff.reshape(bank_size * out_channels, in_channels, kh, kw),
                                       resample_filter).reshape(2, 2, bank_size, out_channels, in_channels, 3, 3)
        # [B, I, (ry, rx, O), 3, 3]: input channel (2 ry + rx) * O + o reads phase (ry, rx) of g (_phases).
        bank_t = phase.permute(2, 4, 0, 1, 3, 5, 6).reshape(bank_size, in_channels, 4 * out_channels, 3, 3)
        bank_t, g_in, styles_t = bank_t.flip([3, 4]), _phases(g), d.repeat(1, 4)
    no_bias = torch.zeros([in_channels], dtype=torch.float32, device=g.device)
    return torch.ops.sgtriton_adaptive_kernel.adaptive_modulated_conv2d(
        g_in, bank_t.to(torch.float32).contiguous(), logits, styles_t, no_bias, None, None, None, 1, 1.0, 1.0,
        None, False)


def _bank_prenormalize_vjp(bank, styles, dw_eff, ds_eff):
    """Carry ``dW'``, ``ds'`` back through :func:`bank_fp16_prenormalize` (``wmax`` over the whole bank)."""
    bank_size, out_channels, in_channels, kh, kw = bank.shape
    as_weight = bank.float().transpose(0, 1).reshape(out_channels, bank_size * in_channels, kh, kw)
    dw = dw_eff.transpose(0, 1).reshape(as_weight.shape)
    dw, ds = _prenormalize_vjp(as_weight, styles, dw, ds_eff)
    dw = dw.reshape(out_channels, bank_size, in_channels, kh, kw).transpose(0, 1) * math.sqrt(bank_size)
    return dw, ds


def _adaptive_setup_context(ctx, inputs, output):
    x, bank, logits, styles, bias, noise, noise_strength, resample_filter, up, alpha, gain, clamp, demodulate = inputs
    ctx.save_for_backward(x, bank, logits, styles, noise, noise_strength, resample_filter, output)
    ctx.args = (bias.dtype, up, alpha, gain, clamp, demodulate)


def _adaptive_backward(ctx, grad):
    x, bank, logits, styles, noise, strength, resample_filter, y = ctx.saved_tensors
    bias_dtype, up, alpha, gain, clamp, demodulate = ctx.args
    needs = ctx.needs_input_grad
    g = bias_act_input_grad(grad, y, "lrelu", alpha, gain, clamp)
    gf = g.float()
    dbias = gf.sum(dim=[0, 2, 3]).to(bias_dtype) if needs[4] else None
    dnoise, dstrength = noise_gradients(gf, noise, strength, needs[5], needs[6])

    batch = x.shape[0]
    bank_size, out_channels, in_channels, kh, kw = bank.shape
    prenorm = demodulate and x.dtype == torch.float16
    w_eff, s_eff = bank_effective_operands(bank, styles, prenorm)
    a = selection_weights(logits.float())
    pairs = (a[:, :, None] * a[:, None, :]).reshape(batch, bank_size * bank_size)  # a_j a_l
    if demodulate:
        gram = full_bank_gram(w_eff)
        q = (pairs @ gram.reshape(bank_size * bank_size, -1)).reshape(batch, out_channels, in_channels)
        d = (torch.matmul(s_eff.square()[:, None, :], q.transpose(1, 2))[:, 0] + DEMOD_EPS).rsqrt()
    else:
        d = torch.ones([batch, out_channels], dtype=torch.float32, device=x.device)
    dx = dbank = dlogits = dstyles = None
    if needs[0] or needs[3]:
        u = adaptive_transposed(g.to(x.dtype), w_eff, logits, d, up, resample_filter).float()
        dx = (u * s_eff[:, :, None, None]).to(x.dtype) if needs[0] else None
    if not (needs[1] or needs[2] or needs[3]):
        return dx, None, None, None, dbias, dnoise, dstrength, None, None, None, None, None, None

    e = None
    if demodulate or needs[2]:
        # C_j: the bank as B*O output channels of one shared-weight conv (the kernel recomputes it).
        conv = torch.ops.sgtriton.modulated_conv2d(
            x, w_eff.reshape(bank_size * out_channels, in_channels, kh, kw), s_eff, None, None, None,
            resample_filter, up, False, "linear", 0.0, 1.0, None, True)
        h = (conv.float().reshape(batch, bank_size, out_channels, -1) * gf.reshape(batch, 1, out_channels, -1)).sum(-1)
        if demodulate:
            e = d.pow(3) * torch.einsum("nj,njo->no", a, h)
            es = e[:, :, None] * s_eff.square()[:, None, :]  # e[n,o] s'[n,i]^2
    if needs[2]:
        da = torch.einsum("no,njo->nj", d, h)
        if demodulate:
            t = (es.reshape(batch, -1) @ gram.reshape(bank_size * bank_size, -1).transpose(0, 1))
            da = da - torch.bmm(t.reshape(batch, bank_size, bank_size), a[:, :, None])[:, :, 0]
        dlogits = (a * (da - (a * da).sum(dim=1, keepdim=True))).to(logits.dtype)
    if needs[1] or needs[3]:
        ds_eff = (x.float() * u).sum(dim=[2, 3]) if needs[3] else torch.zeros_like(s_eff)
        gd = (a[:, :, None, None, None] * (gf * d[:, :, None, None])[:, None]).reshape(
            batch, bank_size * out_channels, *g.shape[2:])
        dw_eff = modconv_weight_grad(x.float() * s_eff[:, :, None, None], gd,
                                     torch.Size([bank_size * out_channels, in_channels, kh, kw]), up,
                                     resample_filter).reshape(bank.shape)
        if demodulate:
            ds_eff = ds_eff - s_eff * torch.bmm(e[:, None, :], q)[:, 0]
            mix = (pairs.transpose(0, 1) @ es.reshape(batch, -1)).reshape(bank_size, bank_size, out_channels,
                                                                        in_channels)
            dw_eff = dw_eff - torch.einsum("jloi,loik->joik", mix, w_eff.flatten(3)).reshape(bank.shape)
        if prenorm:
            dw_eff, ds_eff = _bank_prenormalize_vjp(bank, styles, dw_eff, ds_eff)
        dbank = dw_eff.to(bank.dtype) if needs[1] else None
        dstyles = ds_eff.to(styles.dtype) if needs[3] else None
    return dx, dbank, dlogits, dstyles, dbias, dnoise, dstrength, None, None, None, None, None, None


_adaptive_modulated_conv2d_op.register_autograd(_adaptive_backward, setup_context=_adaptive_setup_context)
