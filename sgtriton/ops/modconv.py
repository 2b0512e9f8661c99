"""Modulated (and optionally demodulated) convolution, StyleGAN2 Fig. 2d, and the fused style layer.

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

The style layer (NVlabs ``SynthesisLayer``) adds the epilogue::

    y = clamp(act(d * conv(x * s, W) + strength * noise + bias, alpha) * gain, -clamp, +clamp)

:func:`modulated_conv2d_layer` computes it with ``impl='ref'`` (:func:`modulated_conv2d_ref` then
``bias_act_ref``, exactly as NVlabs) or ``impl='triton'``: one implicit-GEMM kernel launch per layer
(after a small prologue launch when it demodulates).

**The kernels.** Per sample ``n`` the conv is a GEMM ``[pixels, I*kh*kw] x [I*kh*kw, O]`` whose A
operand is gathered from ``x`` (implicit im2col, zero padding by masks). It is built to keep the
tensor cores busy rather than the instruction issue:

* *Demodulation outside the GEMM loop.* ``Q'[o, i] = c[o]^2 sum_k W[o, i, k]^2`` is cached per weight
  version (:func:`cached_demod_gram`), and a small prologue kernel per layer
  (:func:`modulation_operands`, ``_modconv_prologue_kernel``) computes ``d = rsqrt(s'^2 Q'^T + eps)``
  and the styles ``s'`` the GEMM multiplies by. The GEMM's epilogue multiplies by ``d``.
* *Shared weights, laid out K-major.* The B operand is the layer weight (fp16: pre-normalised by
  ``c``, rounded once) stored ``[phase, tap, I, O]`` per weight version (:func:`cached_gemm_weight`),
  so weight tiles are contiguous rows along ``O``.
* *Channels-last activations, modulated in registers.* ``x`` is read NHWC, so an A tile
  ``[pixels, channels]`` is contiguous along channels for every tap: 16-byte asynchronous copies,
  software-pipelined with the weight tiles. The style scales the smaller of the two tiles in
  registers: for square and wide tiles the A tile (``x * s'``, NVlabs' non-fused formulation), and
  the tensor cores (wgmma on sm_90) read A from there; for the tall tiles of the 64- and 32-channel
  layers the weight tile (``Wg * s'``, NVlabs' fused formulation: half to an eighth of the
  elements), and A goes to the tensor cores straight from shared memory. In fp16 the product is
  rounded once either way, as NVlabs rounds it. The output is written channels-last, for the next
  layer.
* *A lean main loop.* The tap, its pixel offset and the channel offset are carried across
  iterations (no division per step); which taps of a pixel read inside the image is one bit per
  tap computed before the loop; ``EVEN_K`` / ``EVEN_N`` drop the masks of full tiles. On sm_90 the
  fp16 default tile (128 x 128 x 32, 8 warps) issues about 118 instructions per warp per K-step
  against 256 cycles of wgmma per SM: bound by the tensor cores, not by the issue.

Noise, bias, activation, gain and clamp run on the fp32 accumulator before the single store.

fp32 dots use ``input_precision="tf32x3"``: three TF32 tensor-core products (``hi*hi + hi*lo +
lo*hi``), about 1e-6 relative per product, inside the fp32 tolerance row, at tensor-core speed.
``"ieee"`` (CUDA-core FMA) is an order of magnitude slower, and plain ``"tf32"`` (1e-3) would not
match NVlabs' fp32 numerics. The interpreter computes fp32 dots exactly.

**up = 2** (StyleGAN2 conv0: stride-2 transposed conv with the unflipped weight, then the 4x4 FIR
with padding 1 and gain 4). Both steps are linear and act per output pixel parity, so for output
pixel ``(2*my + ry, 2*mx + rx)`` the layer is a plain 3x3 cross-correlation of ``x`` (padding 1)
with a *phase weight* ``P[ry, rx]`` (:func:`upsample_phase_weights`; for a separable filter such as
``[1,3,3,1]``, ``P[ry, rx] = G_ry W G_rx^T`` with 3x3 matrices ``G_r`` built from its taps). The
kernel runs one GEMM per phase (a grid axis) on the phase weights, and needs no intermediate
``[2H+1, 2W+1]`` tensor; each phase writes whole channel rows of its pixels (channels-last), so the
stores stay contiguous. The price is 4x the multiply-adds of the transposed conv (each phase is a
full 3x3 conv on the input grid); in exchange there is one launch and no intermediate traffic. The
phase weights depend on the weight only and are cached with it.

**The weight gradient** (backward, see section *Backward*) is an implicit GEMM shaped like the
forward: per kernel tap, ``dW'[:, :, tap] = g^T [O, N*H*W] x shift_tap(x s') [N*H*W, I]``, the
reduction running over batch and pixels (:func:`_modconv_weight_grad_kernel`); for up = 2 the same
3x3 form gives the phase-weight gradients (``4 * O`` output channels).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from sgtriton.ops._runtime import (
    KernelConfig,
    KernelSpec,
    WeightDerivedCache,
    declare_kernel,
    interpreter_active,
    launch_config,
    torch_dtype,
    triton_dtype,
)
from sgtriton.ops._triton_utils import check_kernel_input, check_same_device
from sgtriton.ops.bias_act import ACTIVATIONS, activate, bias_act_input_grad, bias_act_ref, resolve_activation
from sgtriton.ops.conv2d_resample import conv2d_resample
from sgtriton.ops.upfirdn2d import STYLEGAN_FILTER, setup_filter

DEMOD_EPS = 1e-8

# ----------------------------------------------------------------------------------------------
# Reference (the specification)
# ----------------------------------------------------------------------------------------------


def demodulation_gram(weight: torch.Tensor) -> torch.Tensor:
    """``Q [O, I] = sum over taps of weight^2``: all that demodulation needs of the weight."""
    return weight.square().flatten(2).sum(-1)  # one contiguous reduction (faster than over dims [2, 3])


def demodulation_coefficients(weight: torch.Tensor, styles: torch.Tensor, eps: float = DEMOD_EPS) -> torch.Tensor:
    """``d [N, O] = rsqrt(s^2 @ Q^T + eps)`` with ``Q`` from :func:`demodulation_gram`."""
    return (styles.square() @ demodulation_gram(weight).transpose(0, 1) + eps).rsqrt()


def prenormalization_scale(weight: torch.Tensor) -> torch.Tensor:
    """``c [O] = 1 / sqrt(I*kh*kw) / max|W[o]|`` in ``weight``'s dtype: NVlabs' fp16 pre-normalisation
    of the weight (bounds ``|c W s'|`` by ``1/sqrt(I*kh*kw)``)."""
    return 1 / math.sqrt(weight[0].numel()) / weight.norm(float("inf"), dim=[1, 2, 3])


def fp16_prenormalize(weight: torch.Tensor, styles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """NVlabs' fp16 overflow guard: scale ``weight`` per output channel and ``styles`` per sample."""
    weight = weight * prenormalization_scale(weight)[:, None, None, None]
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

    # The specification's own form: per-sample weights (the kernels use the Q form instead).
    w = weight[None] * styles[:, None, :, None, None] if (demodulate or fused_modconv) else None
    dcoefs = (w.square().sum(dim=[2, 3, 4]) + DEMOD_EPS).rsqrt() if demodulate else None

    if not fused_modconv:
        x = x * styles.to(x.dtype)[:, :, None, None]
        x = conv2d_resample(x, weight.to(x.dtype), resample_filter, up=up, padding=padding, flip_weight=flip_weight)
        if dcoefs is not None:
            x = x * dcoefs.to(x.dtype)[:, :, None, None]
        # In place: x is this function's own fresh tensor (and no backward needs its old value).
        return x if noise is None else x.add_(noise.to(x.dtype))

    if dcoefs is not None:
        w = w * dcoefs[:, :, None, None, None]
    x = x.reshape(1, batch * in_channels, *x.shape[2:])
    w = w.reshape(batch * out_channels, in_channels, kh, kw)
    x = conv2d_resample(
        x, w.to(x.dtype), resample_filter, up=up, padding=padding, groups=batch, flip_weight=flip_weight
    )
    x = x.reshape(batch, out_channels, *x.shape[2:])
    return x if noise is None else x.add_(noise.to(x.dtype))


def modulated_conv2d_layer_ref(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    bias: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    noise_strength: torch.Tensor | float | None = None,
    up: int = 1,
    demodulate: bool = True,
    act: str = "lrelu",
    alpha: float | None = None,
    gain: float | None = None,
    clamp: float | None = None,
    resample_filter: torch.Tensor | None = None,
    fused_modconv: bool = True,
) -> torch.Tensor:
    """NVlabs ``SynthesisLayer`` after its affine: ``modulated_conv2d_ref`` then ``bias_act_ref``.

    ``noise`` (``[N, 1, H*up, W*up]`` or ``[H*up, W*up]``) is multiplied by ``noise_strength``
    (``None`` means 1) before it is added; ``padding = kh // 2``; ``up = 2`` uses
    ``resample_filter`` (default ``setup_filter([1, 3, 3, 1])``) and the unflipped weight.
    """
    if noise is not None and noise_strength is not None:
        noise = noise * noise_strength
    if up > 1 and resample_filter is None:
        resample_filter = setup_filter(STYLEGAN_FILTER).to(x.device)
    y = modulated_conv2d_ref(
        x, weight, styles, noise, up=up, padding=weight.shape[2] // 2, resample_filter=resample_filter,
        demodulate=demodulate, flip_weight=(up == 1), fused_modconv=fused_modconv,
    )
    return bias_act_ref(y, None if bias is None else bias.to(y.dtype), act=act, alpha=alpha, gain=gain, clamp=clamp)


def upsample_phase_weights(weight: torch.Tensor, resample_filter: torch.Tensor | None = None) -> torch.Tensor:
    """The four 3x3 phase weights of the up=2 layer: ``[O, I, 3, 3]`` -> ``[2, 2, O, I, 3, 3]``.

    ``conv2d_resample(x, W, f, up=2, padding=1, flip_weight=False)`` equals, at output pixel
    ``(2*my + ry, 2*mx + rx)``, ``conv2d(x, P[ry, rx], padding=1)`` at ``(my, mx)`` with::

        P[ry, rx, o, i, a, b] = sum_{jy, ky, jx, kx} S[ry, a, jy, ky] S[rx, b, jx, kx] g[jy, jx] W[o, i, ky, kx]
        S[r, a, j, k] = 1 if r + j + 1 - k == 2a else 0,   g[jy, jx] = 4 * f[3 - jy, 3 - jx]

    (transposed conv: ``t[T] = sum_k W[k] x[(T - k)/2]``; FIR, a true convolution with padding 1:
    ``y[Y] = sum_j g[j] t[Y + j - 1]``; so ``x`` is read at ``(Y + j - 1 - k)/2 = my + a - 1``).
    ``resample_filter`` is the 2-D 4x4 filter from ``setup_filter`` (default ``[1, 3, 3, 1]``).
    Computed in float64 and rounded once to ``weight``'s dtype promoted to at least float32.
    """
    if weight.ndim != 4 or weight.shape[2:] != (3, 3):
        raise ValueError(f"weight: up=2 needs a [O, I, 3, 3] weight, got shape {list(weight.shape)}")
    f = setup_filter(STYLEGAN_FILTER) if resample_filter is None else resample_filter
    if f.shape != (4, 4):
        raise ValueError(f"resample_filter: up=2 needs a 2-D 4x4 filter, got shape {list(f.shape)}")
    r, a, j, k = torch.meshgrid(*(torch.arange(n, device=weight.device) for n in (2, 3, 4, 3)), indexing="ij")
    select = (r + j + 1 - k == 2 * a).to(torch.float64)
    g = 4 * f.to(device=weight.device, dtype=torch.float64).flip([0, 1])
    # [ry, rx, a, b, ky, kx]: which weight taps (and with what FIR factor) feed each phase tap.
    taps = torch.einsum("yajk,xblm,jl->yxabkm", select, select, g)
    phase = torch.einsum("yxabkm,oikm->yxoiab", taps, weight.to(torch.float64))
    return phase.to(torch.promote_types(weight.dtype, torch.float32))


# ----------------------------------------------------------------------------------------------
# Triton kernels
# ----------------------------------------------------------------------------------------------

_EPS = tl.constexpr(DEMOD_EPS)
#: ``tl.dot`` precision for fp32 inputs.
FP32_DOT_PRECISION = tl.constexpr("tf32x3")


@triton.jit
def _modconv_prologue_kernel(
    s_ptr, qt_ptr, s_out_ptr, d_ptr,
    I, O,
    stride_sn, stride_si, stride_qn,
    PRENORM: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_O: tl.constexpr,
):
    """Per-sample operands of a demodulated layer: ``s'`` and ``d = rsqrt(s'^2 Q'^T + eps)``.

    Pointers:
        s: ``[N, I]`` styles, any strides (``stride_s*``), any float dtype.
        qt: ``[I, O]`` fp32 contiguous per sample at ``n * stride_qn`` (0: one for the batch),
            ``Q'^T`` with ``Q'[o, i] = c[o]^2 sum_k W[o, i, k]^2`` (:func:`cached_demod_gram`; ``c = 1``
            unless ``PRENORM``; a layer whose kernel differs per sample passes one per sample).
        s_out: ``[N, I]`` contiguous (the activations' dtype), written ``s' = s / max_i |s[n, i]|``
            (``PRENORM``) or ``s``.
        d: ``[N, O]`` fp32 contiguous, the demodulation coefficients.
    Grid: axis 0 = sample, axis 1 = output-channel block; programs with block 0 write ``s'``.
    """
    n = tl.program_id(0)
    pid_o = tl.program_id(1)
    offs_i = tl.arange(0, BLOCK_I)
    offs_o = pid_o * BLOCK_O + tl.arange(0, BLOCK_O)
    o_mask = offs_o < O
    s_base = s_ptr + n.to(tl.int64) * stride_sn
    style_scale = 1.0
    if PRENORM:
        smax = tl.zeros([BLOCK_I], dtype=tl.float32)
        for i0 in range(0, I, BLOCK_I):
            s = tl.load(s_base + (i0 + offs_i) * stride_si, mask=i0 + offs_i < I, other=0.0)
            smax = tl.maximum(smax, tl.abs(s.to(tl.float32)))
        style_scale = 1.0 / tl.max(smax, axis=0)
    sumsq = tl.zeros([BLOCK_I, BLOCK_O], dtype=tl.float32)
    for i0 in range(0, I, BLOCK_I):
        i = i0 + offs_i
        i_mask = i < I
        s = tl.load(s_base + i * stride_si, mask=i_mask, other=0.0).to(tl.float32) * style_scale
        if pid_o == 0:
            tl.store(s_out_ptr + n.to(tl.int64) * I + i, s.to(s_out_ptr.dtype.element_ty), mask=i_mask)
        q = tl.load(qt_ptr + n.to(tl.int64) * stride_qn + i[:, None] * O + offs_o[None, :],
                    mask=i_mask[:, None] & o_mask[None, :], other=0.0)
        sumsq += q * (s * s)[:, None]
    d = tl.math.rsqrt(tl.sum(sumsq, axis=0) + _EPS)
    tl.store(d_ptr + n.to(tl.int64) * O + offs_o, d, mask=o_mask)


# One kernel source for every style-layer variant, with no @triton.jit helpers: under the
# interpreter helpers become InterpretedFunctions, which the ahead-of-time compile of the caller
# cannot reference. ToRGB (sgtriton/ops/torgb.py) is the SKIP specialisation of the same kernel.
@triton.jit
def _modconv_kernel(
    x_ptr, w_ptr, s_ptr, d_ptr, bias_ptr, noise_ptr, strength_ptr, skip_ptr, out_ptr,
    H, W, I, O,
    stride_xn, stride_xc, stride_xh, stride_xw,
    stride_wp, stride_wt, stride_wi,
    stride_sn, stride_si, stride_dn,
    stride_nn, stride_nh, stride_nw,
    stride_kn, stride_kc, stride_kh, stride_kw,
    stride_on, stride_oc, stride_oh, stride_ow,
    alpha, gain, clamp,
    UP: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr,
    DEMOD: tl.constexpr, HAS_NOISE: tl.constexpr, HAS_BIAS: tl.constexpr,
    ACT: tl.constexpr, USE_CLAMP: tl.constexpr, SKIP: tl.constexpr, EVEN_K: tl.constexpr, EVEN_N: tl.constexpr,
    MODULATE_W: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """Fused style layer: ``out[n, o, Y, X] = clamp(act(d * conv(x * s, Wg) + strength * noise + bias) * gain) + skip``.

    Pointers:
        x: ``[N, I, H, W]`` fp32 or fp16, any strides (``stride_x*``); channels-last (``stride_xc = 1``)
            gives the wide loads the kernel is built for.
        w: the GEMM weight ``Wg[phase, tap, i, o]`` at ``phase * stride_wp + tap * stride_wt + i * stride_wi
            + o`` (unit stride along ``O``) in the dot's dtype: the layer weight laid out K-major
            (:func:`cached_gemm_weight`; for ``UP = 2`` the four phase weights of
            :func:`upsample_phase_weights`), fp16 ones pre-normalised by ``c[o]``.
        s: ``[N, I]`` the styles that modulate ``x`` (``s'`` from the prologue when demodulating).
        d: ``[N, O]`` fp32 demodulation coefficients, row stride ``stride_dn`` (read if ``DEMOD``).
        bias: ``[O]`` (read if ``HAS_BIAS``).
        noise: one value per output pixel at ``n * stride_nn + Y * stride_nh + X * stride_nw``
            (``stride_nn = 0`` broadcasts one ``[H*UP, W*UP]`` map); read if ``HAS_NOISE``.
        strength: one element multiplying the noise.
        skip: ``[N, O, H/2, W/2]`` previous image (``stride_k*``) whose ``[1,3,3,1]`` 2x upsample
            (``upsample2d``: pad ``[2,1,2,1]``, gain 4) is added last; read if ``SKIP``.
        out: ``[N, O, H*UP, W*UP]`` with strides ``stride_o*`` (channels-last for the style layers);
            its dtype is the stored dtype.
    Scalars: ``alpha`` (leaky slope); ``gain``; ``clamp``.
    Constexprs: ``UP`` 1 or 2 (2 needs ``KH = KW = 3``); ``KH``, ``KW`` odd (padding ``KH // 2``);
    ``DEMOD``; ``HAS_NOISE``; ``HAS_BIAS``; ``ACT`` (a :data:`~sgtriton.ops.bias_act.ACTIVATIONS`
    ``kernel_code``); ``USE_CLAMP``; ``SKIP``; ``EVEN_K`` (``I % BLOCK_K == 0``), ``EVEN_N``
    (``O % BLOCK_N == 0``); ``MODULATE_W``: the style scales the weight tile (``Wg[i, o] * s[n, i]``,
    NVlabs' fused formulation) instead of the activation tile (``x * s``, the non-fused one); the
    launcher scales the smaller of the two (``BLOCK_N < BLOCK_M``), and the unscaled tile goes to
    the tensor cores straight from shared memory; ``KH * KW <= 31`` (one bit per tap); tile sizes
    ``BLOCK_M`` (pixels of the ``H x W`` input grid), ``BLOCK_N`` (output channels), ``BLOCK_K``
    (input channels per step).

    Grid: axis 0 = output-channel block (fastest, so the programs that share an input tile run
    together) x pixel block; axis 1 = output phase ``ry * UP + rx``; axis 2 = sample.
    """
    pid = tl.program_id(0)
    blocks_o = tl.cdiv(O, BLOCK_N)
    pid_o = pid % blocks_o
    pid_m = pid // blocks_o
    phase = tl.program_id(1)
    n = tl.program_id(2)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_o * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_kb = tl.arange(0, BLOCK_K)
    PAD: tl.constexpr = KH // 2
    m_mask = offs_m < H * W
    n_mask = offs_n < O
    my = offs_m // W
    mx = offs_m - my * W
    x_pix = x_ptr + n.to(tl.int64) * stride_xn + (my * stride_xh + mx * stride_xw)[:, None]  # [BLOCK_M, 1]
    s_base = s_ptr + n.to(tl.int64) * stride_sn
    w_col = w_ptr + phase * stride_wp + offs_n[None, :]                                    # [1, BLOCK_N]

    # --- implicit GEMM: acc[p, o] = sum_{tap, i} x[n, i, p + tap - PAD] * s[n, i] * Wg[phase, tap, i, o] ---
    # Which taps read inside the image, one bit per tap for each pixel of the tile (zero padding by
    # masks), computed once: in the loop a row's mask is a shift and a test.
    tap_ok = tl.zeros([BLOCK_M], dtype=tl.int32)
    for t in tl.static_range(KH * KW):
        iy = my + (t // KW - PAD)
        ix = mx + (t % KW - PAD)
        inside = m_mask & (iy >= 0) & (iy < H) & (ix >= 0) & (ix < W)
        tap_ok = tap_ok | (inside.to(tl.int32) << t)

    # One flat loop over (tap, input-channel block), so the compiler pipelines a single loop. The
    # tap, its pixel offset and the channel offset k0 are carried across iterations and advanced
    # with uniform scalar arithmetic (no division per step). Both tiles load along their contiguous
    # axis (channels of x, output channels of Wg); the style scales one of them in registers
    # (MODULATE_W: the weight tile, else the activation tile). EVEN_K / EVEN_N drop the masks of full tiles.
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    tap = 0
    kx = 0
    k0 = 0
    x_tap = -PAD * stride_xh - PAD * stride_xw
    for _ in range(0, KH * KW * tl.cdiv(I, BLOCK_K)):
        offs_k = k0 + offs_kb
        row_ok = ((tap_ok >> tap) & 1) != 0
        a_ptrs = x_pix + x_tap + (offs_k * stride_xc)[None, :]
        b_ptrs = w_col + tap * stride_wt + (offs_k * stride_wi)[:, None]
        s_ptrs = s_base + offs_k * stride_si
        if EVEN_K:
            a = tl.load(a_ptrs, mask=row_ok[:, None], other=0.0)
            s = tl.load(s_ptrs)
            if EVEN_N:
                b = tl.load(b_ptrs)
            else:
                b = tl.load(b_ptrs, mask=n_mask[None, :], other=0.0)
        else:
            k_mask = offs_k < I
            a = tl.load(a_ptrs, mask=row_ok[:, None] & k_mask[None, :], other=0.0)
            s = tl.load(s_ptrs, mask=k_mask, other=0.0)
            b = tl.load(b_ptrs, mask=k_mask[:, None] & n_mask[None, :], other=0.0)
        if MODULATE_W:
            b = b * s.to(b.dtype)[:, None]
        else:
            a = a * s.to(a.dtype)[None, :]
        if x_ptr.dtype.element_ty == tl.float32:
            acc = tl.dot(a, b, acc, input_precision=FP32_DOT_PRECISION)
        else:
            acc = tl.dot(a, b, acc)
        k0 += BLOCK_K
        next_tap = k0 >= I
        k0 = tl.where(next_tap, 0, k0)
        tap = tl.where(next_tap, tap + 1, tap)
        kx = tl.where(next_tap, kx + 1, kx)
        next_row = kx == KW
        x_tap = tl.where(next_tap, x_tap + tl.where(next_row, stride_xh - (KW - 1) * stride_xw, stride_xw), x_tap)
        kx = tl.where(next_row, 0, kx)

    # --- epilogue on the fp32 accumulator ---
    y = acc
    if DEMOD:
        y = y * tl.load(d_ptr + n.to(tl.int64) * stride_dn + offs_n, mask=n_mask, other=0.0)[None, :]

    oy = my * UP + phase // UP
    ox = mx * UP + phase % UP
    if HAS_NOISE:
        noise = tl.load(noise_ptr + n.to(tl.int64) * stride_nn + oy * stride_nh + ox * stride_nw,
                        mask=m_mask, other=0.0).to(tl.float32)
        y += (noise * tl.load(strength_ptr).to(tl.float32))[:, None]
    if HAS_BIAS:
        y += tl.load(bias_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)[None, :]
    y = activate(y, alpha, ACT) * gain
    if USE_CLAMP:
        y = tl.minimum(tl.maximum(y, -clamp), clamp)
    if SKIP:
        # upsample2d per axis: out[2i] = (x[i-1] + 3 x[i]) / 4, out[2i+1] = (3 x[i] + x[i+1]) / 4,
        # i.e. taps lo = (Y+1)//2 - 1 and lo + 1 with weights 1/4, 3/4 (Y even) or 3/4, 1/4 (Y odd).
        SH = H // 2
        SW = W // 2
        y_lo = (oy + 1) // 2 - 1
        x_lo = (ox + 1) // 2 - 1
        wy_lo = tl.where(oy % 2 == 0, 0.25, 0.75)
        wx_lo = tl.where(ox % 2 == 0, 0.25, 0.75)
        skip_base = skip_ptr + n.to(tl.int64) * stride_kn + offs_n[None, :] * stride_kc
        for dy in tl.static_range(2):
            sy = y_lo + dy
            wy = wy_lo if dy == 0 else 1.0 - wy_lo
            for dx in tl.static_range(2):
                sx = x_lo + dx
                wx = wx_lo if dx == 0 else 1.0 - wx_lo
                ok = m_mask & (sy >= 0) & (sy < SH) & (sx >= 0) & (sx < SW)
                img = tl.load(skip_base + (sy * stride_kh + sx * stride_kw)[:, None],
                              mask=ok[:, None] & n_mask[None, :], other=0.0).to(tl.float32)
                y += (wy * wx)[:, None] * img

    out_ptrs = (out_ptr + n.to(tl.int64) * stride_on + (oy * stride_oh + ox * stride_ow)[:, None]
                + (offs_n * stride_oc)[None, :])
    tl.store(out_ptrs, y.to(out_ptr.dtype.element_ty), mask=m_mask[:, None] & n_mask[None, :])


@triton.jit
def _modconv_weight_grad_kernel(
    x_ptr, g_ptr, out_ptr,
    N, H, W, I, O,
    stride_xn, stride_xc, stride_xh, stride_xw,
    stride_gn, stride_gc, stride_gh, stride_gw,
    KH: tl.constexpr, KW: tl.constexpr,
    BLOCK_O: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_P: tl.constexpr,
):
    """Weight gradient of a k x k cross-correlation with padding ``KH // 2``, as implicit GEMMs::

        out[o, i, ky, kx] = sum_{n, p} g[n, o, p] * x[n, i, p + (ky, kx) - KH // 2]

    (``torch.nn.grad.conv2d_weight(x, [O, I, KH, KW], g, padding=KH // 2)``). Per tap the gradient is
    a GEMM ``[O, K] x [K, I]`` with ``K = N*H*W`` (batch and pixels): the A tile is read from ``g``,
    the B tile gathered from ``x`` shifted by the tap, zero padding by masks. As in the forward, the
    tap is fixed per GEMM, so the gather's mask and addresses separate into a pixel part and a
    channel part rather than a full ``[BLOCK_P, BLOCK_I]`` index computation.

    Pointers:
        x: ``[N, I, H, W]`` fp32 or fp16, any strides (``stride_x*``).
        g: ``[N, O, H, W]`` the output gradient, same dtype (``stride_g*``).
        out: ``[O, I, KH, KW]`` fp32, contiguous.
    Constexprs: ``KH``, ``KW`` odd; tile sizes ``BLOCK_O`` (output channels), ``BLOCK_I`` (input
    channels) and ``BLOCK_P`` (batch x pixel steps of the reduction).

    Grid: axis 0 = input-channel block (fastest, so programs sharing a ``g`` tile run together)
    x output-channel block; axis 1 = tap ``ky * KW + kx``.
    """
    pid = tl.program_id(0)
    tap = tl.program_id(1)
    blocks_i = tl.cdiv(I, BLOCK_I)
    pid_i = pid % blocks_i
    pid_o = pid // blocks_i
    PAD: tl.constexpr = KH // 2
    dy = tap // KW - PAD
    dx = tap % KW - PAD
    offs_o = pid_o * BLOCK_O + tl.arange(0, BLOCK_O)
    offs_i = pid_i * BLOCK_I + tl.arange(0, BLOCK_I)
    offs_pb = tl.arange(0, BLOCK_P)
    o_mask = offs_o < O
    i_mask = offs_i < I
    x_chan = (offs_i * stride_xc)[None, :]                     # [1, BLOCK_I] loop-invariant
    g_chan = (offs_o * stride_gc)[:, None]                     # [BLOCK_O, 1] loop-invariant

    acc = tl.zeros([BLOCK_O, BLOCK_I], dtype=tl.float32)
    HW = H * W
    for q0 in range(0, N * HW, BLOCK_P):
        offs_q = q0 + offs_pb
        q_mask = offs_q < N * HW
        n = (offs_q // HW).to(tl.int64)
        p = offs_q % HW
        py = p // W
        px = p - py * W
        a = tl.load(g_ptr + g_chan + (n * stride_gn + py * stride_gh + px * stride_gw)[None, :],
                    mask=o_mask[:, None] & q_mask[None, :], other=0.0)

        iy = py + dy
        ix = px + dx
        p_mask = q_mask & (iy >= 0) & (iy < H) & (ix >= 0) & (ix < W)
        b = tl.load(x_ptr + (n * stride_xn + iy * stride_xh + ix * stride_xw)[:, None] + x_chan,
                    mask=p_mask[:, None] & i_mask[None, :], other=0.0)

        if x_ptr.dtype.element_ty == tl.float32:
            acc = tl.dot(a, b, acc, input_precision=FP32_DOT_PRECISION)
        else:
            acc = tl.dot(a, b, acc)

    out_ptrs = out_ptr + (offs_o[:, None] * I + offs_i[None, :]) * (KH * KW) + tap
    tl.store(out_ptrs, acc, mask=o_mask[:, None] & i_mask[None, :])


# ----------------------------------------------------------------------------------------------
# Declarations: tuning spaces and ahead-of-time signatures
# ----------------------------------------------------------------------------------------------

#: Tuning space of the style-layer GEMM (first = default). Tiles of 128 pixels per two warpgroups
#: (wgmma needs 64 rows per warpgroup on sm_90), output-channel widths for the 512-, 64- and
#: 32-channel layers, and a small tile for the 4x4 to 16x16 layers. Every entry compiles for sm_80
#: and sm_90 in the dtypes it names (all when it names none) without spills under Triton 3.6 and
#: 3.9, with the arguments the launcher passes. fp32's tf32x3 splits both tiles in registers, so
#: the tall 16-bit tiles for the 64- and 32-channel layers (256 rows per program, the weight tile
#: modulated; 4 warps for 32 channels) are fp16 only: in fp32 they spill, as 128 x 128 x 64
#: with 8 warps and 128 x 64 x 32 with 4 warps do on sm_80.
FP16_ONLY = ("fp16",)
MODCONV_CONFIGS = (
    KernelConfig({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 32}, num_warps=8, num_stages=4),
    KernelConfig({"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 32}, num_warps=8, num_stages=4),
    KernelConfig({"BLOCK_M": 128, "BLOCK_N": 32, "BLOCK_K": 32}, num_warps=4, num_stages=4),
    KernelConfig({"BLOCK_M": 256, "BLOCK_N": 32, "BLOCK_K": 32}, num_warps=8, num_stages=3),
    KernelConfig({"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 32}, num_warps=4, num_stages=4),
    KernelConfig({"BLOCK_M": 256, "BLOCK_N": 64, "BLOCK_K": 32}, num_warps=8, num_stages=3, dtypes=FP16_ONLY),
    KernelConfig({"BLOCK_M": 256, "BLOCK_N": 32, "BLOCK_K": 32}, num_warps=4, num_stages=3, dtypes=FP16_ONLY),
)


def _modconv_launches(up: int):
    """Example launches (compile gate): a 512-channel layer at 16x16 input, batch 2, channels-last as
    the previous layer leaves it, as each block launches it -- StyleGAN2 (demodulated, noise, bias,
    lrelu, with and without ``conv_clamp``, without noise) and the revised and StyleGAN1 convs (no
    demodulation, linear, nothing fused)."""

    def launches(dtype: str, device: torch.device) -> dict:
        n, c, res = 2, 512, 16
        x = torch.randn(n, c, res, res, dtype=torch_dtype(dtype), device=device).to(memory_format=torch.channels_last)
        weight, styles, bias = (torch.randn(c, c, 3, 3, device=device), torch.randn(n, c, device=device),
                                torch.randn(c, device=device))
        noise = torch.randn(n, 1, res * up, res * up, device=device)
        strength = torch.full([1], 0.1, device=device)
        stylegan2 = dict(bias=bias, noise=noise, noise_strength=strength, act="lrelu", gain=math.sqrt(2))

        def layer(**options):
            return lambda: modulated_conv2d_triton(x, weight, styles, up=up, **options)

        return {
            "demod-noise-clamp": layer(**stylegan2, clamp=256.0),
            "demod-noise": layer(**stylegan2),
            "demod-clamp": layer(**{**stylegan2, "noise": None}, clamp=256.0),
            "plain": layer(demodulate=False, act="linear", gain=1.0),
        }

    return launches


def _modconv_shape_default(key) -> KernelConfig:
    """The untuned tile for a layer (shape key of :func:`launch_modconv`): the output-channel width
    that wastes least of the tile (``O`` = 32 at 1024x1024, 64 at 512x512, 128 and more below), tall
    tiles for large images (256 rows from 64x64 input pixels up; in fp16 the 32-channel one with 4
    warps), and the 64 x 64 tile for the 4x4 and 8x8 layers, which have too few pixels to fill 128
    rows and need more programs to spread over the GPU."""
    shape = dict(key)
    pixels, out_channels, dtype = shape["spatial"], shape["cout"], shape.get("dtype")
    tall, fp16 = pixels >= 4096, dtype in FP16_ONLY
    warps = None
    if out_channels <= 32:
        tile = (256, 32) if tall else (128, 32)
        warps = 4 if tall and fp16 else None
    elif out_channels <= 64 or pixels < 128:
        tile = (256, 64) if tall and fp16 else (128, 64) if pixels >= 128 else (64, 64)
    else:
        tile = (128, 128)
    return next(c for c in MODCONV_CONFIGS if (c.meta["BLOCK_M"], c.meta["BLOCK_N"]) == tile
                and warps in (None, c.num_warps) and c.applies_to(dtype))


#: One kernel source, two declared specialisations: ``UP`` changes the grid, the weight operand
#: and the store pattern, so each gets its own compile-gate entry and tuned configs.
MODCONV_KERNEL: KernelSpec = declare_kernel(
    "modconv2d", _modconv_kernel, MODCONV_CONFIGS, uses_tensor_cores=True, launches=_modconv_launches(1),
    shape_default=_modconv_shape_default,
    description="modulated conv (k x k, up=1) + demod + noise + bias + act + clamp, one implicit GEMM",
)
MODCONV_UP2_KERNEL: KernelSpec = declare_kernel(
    "modconv2d_up2", _modconv_kernel, MODCONV_CONFIGS, uses_tensor_cores=True, launches=_modconv_launches(2),
    shape_default=_modconv_shape_default,
    description="modulated 3x3 transposed conv + [1,3,3,1] FIR (polyphase) + demod + noise + bias + act + clamp",
)


#: The prologue is a [N, I] x [I, O] product per layer: one config.
MODCONV_PROLOGUE_CONFIGS = (KernelConfig({"BLOCK_I": 32, "BLOCK_O": 128}, num_warps=4, num_stages=1),)


def _modconv_prologue_launches(dtype: str, device: torch.device) -> dict:
    """Example launches (compile gate): the prologue of a demodulated 512-channel layer, batch 2, with
    fp16 pre-normalisation (``fp16``) and without (``fp32``)."""
    x = torch.randn(2, 512, 8, 8, dtype=torch_dtype(dtype), device=device)
    weight, styles = torch.randn(512, 512, 3, 3, device=device), torch.randn(2, 512, device=device)
    return {"demod": lambda: modulation_operands(x, weight, styles)}


MODCONV_PROLOGUE_KERNEL: KernelSpec = declare_kernel(
    "modconv2d_prologue", _modconv_prologue_kernel, MODCONV_PROLOGUE_CONFIGS, launches=_modconv_prologue_launches,
    description="modulated conv prologue: pre-normalised styles and demodulation coefficients per sample",
)


#: Tuning space of the weight-gradient GEMM (first = default). Its reduction is the long axis
#: (batch x pixels), so the output tile stays moderate and the pixel step long.
MODCONV_WEIGHT_GRAD_CONFIGS = (
    KernelConfig({"BLOCK_O": 64, "BLOCK_I": 64, "BLOCK_P": 32}, num_warps=4, num_stages=3),
    KernelConfig({"BLOCK_O": 128, "BLOCK_I": 64, "BLOCK_P": 32}, num_warps=8, num_stages=3),
    KernelConfig({"BLOCK_O": 64, "BLOCK_I": 128, "BLOCK_P": 32}, num_warps=8, num_stages=3),
)


def _modconv_weight_grad_launches(dtype: str, device: torch.device) -> dict:
    """Example launches (compile gate): the 3x3 weight gradient of a 512-channel layer at 16x16,
    batch 2, as the up=1 backward launches it, and the up=2 phase form (``4 * O`` output channels)."""
    n, c, res = 2, 512, 16
    x = torch.randn(n, c, res, res, dtype=torch_dtype(dtype), device=device)
    g = torch.randn(n, c, res, res, dtype=torch_dtype(dtype), device=device)
    g_phases = torch.randn(n, 4 * c, res, res, dtype=torch_dtype(dtype), device=device)
    return {
        "up1": lambda: modconv_weight_grad_triton(x, g, 3),
        "up2-phases": lambda: modconv_weight_grad_triton(x, g_phases, 3),
    }


MODCONV_WEIGHT_GRAD_KERNEL: KernelSpec = declare_kernel(
    "modconv2d_weight_grad", _modconv_weight_grad_kernel, MODCONV_WEIGHT_GRAD_CONFIGS, uses_tensor_cores=True,
    launches=_modconv_weight_grad_launches,
    description="modulated conv weight gradient (k x k), one implicit GEMM reducing over batch and pixels",
)


# ----------------------------------------------------------------------------------------------
# Launcher
# ----------------------------------------------------------------------------------------------


def check_kernel_device(x: torch.Tensor) -> None:
    """Triton kernels need CUDA tensors, or CPU tensors under the interpreter."""
    if x.device.type != "cuda" and not interpreter_active():
        raise ValueError(f"x: Triton kernels need a CUDA tensor (or TRITON_INTERPRET=1), got device {x.device}")


#: Largest kernel the style-layer kernel takes (its tap mask holds one bit per tap in 31).
MAX_KERNEL_SIZE = 5

#: Operands derived from a layer's weight, per weight (and filter) version.
_WEIGHT_CACHE = WeightDerivedCache(size=128)


def _phase_gemm_layout(phase: torch.Tensor) -> torch.Tensor:
    """``[2, 2, O, I, 3, 3]`` -> ``[4, O, I, 3, 3]`` fp32 view of memory laid out ``[4, 3, 3, I, O]``
    (output channels contiguous, so the kernel's weight tiles load along ``O``)."""
    gemm = phase.to(torch.float32).permute(0, 1, 4, 5, 3, 2).contiguous()  # [ry, rx, a, b, I, O]
    return gemm.reshape(4, 3, 3, *gemm.shape[4:]).permute(0, 4, 3, 1, 2)


def cached_phase_weights(weight: torch.Tensor, resample_filter: torch.Tensor | None) -> torch.Tensor:
    """:func:`upsample_phase_weights` as ``[4, O, I, 3, 3]`` fp32 (``O`` contiguous in memory),
    recomputed only when ``weight`` or ``resample_filter`` change (new tensor, new storage or an
    in-place edit, seen through the version counter).
    """
    return _WEIGHT_CACHE.get((weight, resample_filter), "phase",
                             lambda: _phase_gemm_layout(upsample_phase_weights(weight, resample_filter)))


def cached_gemm_weight(weight: torch.Tensor, up: int, resample_filter: torch.Tensor | None,
                       dtype: torch.dtype, prenorm: bool) -> torch.Tensor:
    """The kernel's B operand ``Wg [phases, kh*kw, I, O]`` in ``dtype``, contiguous (K-major rows, ``O``
    along the row), per weight version.

    ``Wg[0, ky*kw + kx, i, o] = c[o] W[o, i, ky, kx]`` for ``up = 1``; for ``up = 2`` the four phase
    weights ``P[ry, rx, o, i, a, b]`` of :func:`upsample_phase_weights` at ``phase = 2 ry + rx``,
    ``tap = 3 a + b``, times ``c[o]``. ``c`` is :func:`prenormalization_scale` when ``prenorm``, else 1:
    the product is rounded to ``dtype`` once, as NVlabs rounds its pre-normalised fp16 weight.
    """
    def compute() -> torch.Tensor:
        if up == 1:
            gemm = weight.float().permute(2, 3, 1, 0).reshape(1, -1, weight.shape[1], weight.shape[0])
        else:
            gemm = cached_phase_weights(weight, resample_filter).permute(0, 3, 4, 2, 1).reshape(
                4, 9, weight.shape[1], weight.shape[0])
        if prenorm:
            gemm = gemm * prenormalization_scale(weight.float())
        return gemm.to(dtype).contiguous()

    return _WEIGHT_CACHE.get((weight, resample_filter if up == 2 else None), ("gemm", up, dtype, prenorm), compute)


def cached_demod_gram(weight: torch.Tensor, prenorm: bool) -> torch.Tensor:
    """``Q'^T [I, O]`` fp32 contiguous, ``Q'[o, i] = c[o]^2 sum_k W[o, i, k]^2`` (``c`` as in
    :func:`cached_gemm_weight`), per weight version: demodulation needs only this and the styles."""
    def compute() -> torch.Tensor:
        q = demodulation_gram(weight.float())
        if prenorm:
            q = q * prenormalization_scale(weight.float())[:, None].square()
        return q.transpose(0, 1).contiguous()

    return _WEIGHT_CACHE.get((weight,), ("gram", prenorm), compute)


def modulation_operands(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor,
                        config: KernelConfig | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(s', d)`` of a demodulated layer on ``x``'s dtype, from one launch of the prologue kernel.

    ``s' [N, I]`` in ``x``'s dtype (rounded once, as NVlabs rounds the styles it multiplies ``x`` by):
    ``s / max_i |s[n, i]|`` for fp16 ``x`` (NVlabs' pre-normalisation), else ``s``.
    ``d [N, O]`` fp32: ``rsqrt(sum_i s'^2 Q'[o, i] + eps)`` with ``Q'`` from :func:`cached_demod_gram`.
    """
    prenorm = x.dtype == torch.float16
    return demodulation_prologue(styles, cached_demod_gram(weight, prenorm), x.dtype, prenorm, config)


def demodulation_prologue(styles: torch.Tensor, gram: torch.Tensor, dtype: torch.dtype, prenorm: bool,
                          config: KernelConfig | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(s', d)`` from styles ``[N, I]`` and ``Q'^T``: ``[I, O]`` for the batch or ``[N, I, O]`` per
    sample (fp32, contiguous; a layer whose kernel differs per sample, such as a mixture of kernels,
    passes its own). ``prenorm`` divides the styles by their per-sample max-abs first; ``s'`` is
    stored in ``dtype``. One launch of ``_modconv_prologue_kernel``."""
    batch, in_channels = styles.shape
    out_channels = gram.shape[-1]
    if gram.dim() not in (2, 3) or gram.shape[-2] != in_channels or (gram.dim() == 3 and gram.shape[0] != batch):
        raise ValueError(f"gram: expected [{in_channels}, O] or [{batch}, {in_channels}, O], got {list(gram.shape)}")
    gram = gram.to(torch.float32).contiguous()
    s_mod = torch.empty(batch, in_channels, dtype=dtype, device=styles.device)
    d = torch.empty(batch, out_channels, dtype=torch.float32, device=styles.device)
    config = config or launch_config(MODCONV_PROLOGUE_KERNEL, (("dtype", triton_dtype(dtype)),
                                                              ("cin", in_channels), ("cout", out_channels)))
    grid = (batch, triton.cdiv(out_channels, config.meta["BLOCK_O"]))
    _modconv_prologue_kernel[grid](
        styles, gram, s_mod, d, in_channels, out_channels, *styles.stride(),
        gram.stride(0) if gram.dim() == 3 else 0, PRENORM=prenorm,
        num_warps=config.num_warps, num_stages=config.num_stages, **config.meta,
    )
    return s_mod, d


def broadcast_noise(noise: torch.Tensor, batch: int, height: int, width: int) -> torch.Tensor:
    """``noise`` ([N, 1, H, W], [1, 1, H, W] or [H, W]) as a ``[N, H, W]`` view (stride 0 to broadcast)."""
    try:
        return torch.broadcast_to(noise, (batch, 1, height, width))[:, 0]
    except RuntimeError:
        raise ValueError(f"noise: expected a shape broadcastable to [{batch}, 1, {height}, {width}] "
                         f"(one value per output pixel), got {list(noise.shape)}") from None


def launch_modconv(
    spec: KernelSpec,
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    bias: torch.Tensor | None,
    noise: torch.Tensor | None,
    noise_strength: torch.Tensor | None,
    skip: torch.Tensor | None,
    up: int,
    demodulate: bool,
    act: str,
    alpha: float,
    gain: float,
    clamp: float | None,
    resample_filter: torch.Tensor | None,
    out_dtype: torch.dtype,
    config: KernelConfig | None,
    channels_last: bool = True,
) -> torch.Tensor:
    """Validate, lay out and launch ``_modconv_kernel`` (shared by the style layer and ToRGB).

    ``x`` is read channels-last (copied once if it is not); the output is channels-last when
    ``channels_last`` (the style layers, whose output the next layer reads), else contiguous NCHW.
    """
    check_modconv_args(x, weight, styles)
    check_kernel_input(x, "x")
    check_kernel_device(x)
    check_same_device(x, weight=weight, styles=styles, bias=bias, noise=noise, noise_strength=noise_strength,
                      img=skip)
    dtype = triton_dtype(x.dtype)
    batch, in_channels, height, width = x.shape
    out_channels, _, kh, kw = weight.shape
    if kh != kw or kh % 2 == 0 or kh > MAX_KERNEL_SIZE:
        raise ValueError(f"weight: expected a square odd kernel of at most {MAX_KERNEL_SIZE}x{MAX_KERNEL_SIZE}, "
                         f"got shape {list(weight.shape)}")
    if up not in (1, 2):
        raise ValueError(f"up={up!r}: expected 1 or 2")
    if up == 2 and kh != 3:
        raise ValueError(f"weight: up=2 needs a [O, I, 3, 3] weight, got shape {list(weight.shape)}")
    if bias is not None and list(bias.shape) != [out_channels]:
        raise ValueError(f"bias: expected shape [{out_channels}], got {list(bias.shape)}")
    if noise is not None:
        noise = broadcast_noise(noise, batch, height * up, width * up)
        if noise_strength is None:
            noise_strength = torch.ones([1], dtype=torch.float32, device=x.device)
        elif noise_strength.numel() != 1:
            raise ValueError(f"noise_strength: expected one element, got shape {list(noise_strength.shape)}")
    if skip is not None:
        expected = [batch, out_channels, height // 2, width // 2]
        if up != 1 or height % 2 or width % 2 or list(skip.shape) != expected:
            raise ValueError(f"img: expected shape {expected} (half of x's even size, up=1), "
                             f"got {list(skip.shape)} for x {list(x.shape)}, up={up}")

    prenorm = demodulate and x.dtype == torch.float16
    x = x.contiguous(memory_format=torch.channels_last)
    gemm_weight = cached_gemm_weight(weight, up, resample_filter, x.dtype, prenorm)
    if demodulate:
        styles, d = modulation_operands(x, weight, styles)
    else:
        d = gemm_weight  # not read
    out = torch.empty([batch, out_channels, height * up, width * up], dtype=out_dtype, device=x.device,
                      memory_format=torch.channels_last if channels_last else torch.contiguous_format)

    config = config or launch_config(spec, (("dtype", dtype), ("batch", batch), ("spatial", height * width),
                                          ("cin", in_channels), ("cout", out_channels), ("k", kh), ("up", up)))
    block_m, block_n = config.meta["BLOCK_M"], config.meta["BLOCK_N"]
    grid = (triton.cdiv(height * width, block_m) * triton.cdiv(out_channels, block_n), up * up, batch)
    _modconv_kernel[grid](
        x, gemm_weight, styles, d,
        out if bias is None else bias,
        out if noise is None else noise,
        out if noise is None else noise_strength,
        out if skip is None else skip,
        out,
        height, width, in_channels, out_channels,
        *x.stride(), *gemm_weight.stride()[:3], *styles.stride(), d.stride(0),
        *((0, 0, 0) if noise is None else noise.stride()),
        *((0, 0, 0, 0) if skip is None else skip.stride()),
        *out.stride(),
        alpha, gain, -1.0 if clamp is None else float(clamp),
        UP=up, KH=kh, KW=kw, DEMOD=demodulate,
        HAS_NOISE=noise is not None, HAS_BIAS=bias is not None, ACT=ACTIVATIONS[act].kernel_code,
        USE_CLAMP=clamp is not None and clamp >= 0, SKIP=skip is not None,
        EVEN_K=in_channels % config.meta["BLOCK_K"] == 0, EVEN_N=out_channels % block_n == 0,
        MODULATE_W=block_n < block_m,  # scale the smaller tile: BLOCK_K x BLOCK_N against BLOCK_M x BLOCK_K
        num_warps=config.num_warps, num_stages=config.num_stages, **config.meta,
    )
    return out


def modulated_conv2d_triton(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    bias: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    noise_strength: torch.Tensor | None = None,
    up: int = 1,
    demodulate: bool = True,
    act: str = "lrelu",
    alpha: float | None = None,
    gain: float | None = None,
    clamp: float | None = None,
    resample_filter: torch.Tensor | None = None,
    config: KernelConfig | None = None,
    channels_last: bool = True,
) -> torch.Tensor:
    """The style layer on the Triton kernel (one launch); ``config`` overrides the tuned choice.

    Arguments as :func:`modulated_conv2d_layer`, except ``noise_strength``: a one-element tensor or
    ``None`` (1). Returns ``[N, O, H*up, W*up]`` in ``x.dtype``, channels-last when ``channels_last``,
    else contiguous NCHW.
    """
    _, alpha, gain = resolve_activation(act, alpha, gain)
    spec = MODCONV_KERNEL if up == 1 else MODCONV_UP2_KERNEL
    return launch_modconv(spec, x, weight, styles, bias, noise, noise_strength, None, up, demodulate, act,
                          alpha, gain, clamp, resample_filter, x.dtype, config, channels_last)


def modconv_weight_grad_triton(x: torch.Tensor, g: torch.Tensor, k: int,
                               config: KernelConfig | None = None) -> torch.Tensor:
    """``torch.nn.grad.conv2d_weight(x, [O, I, k, k], g, padding=k // 2)`` on the Triton kernel.

    ``x [N, I, H, W]`` and ``g [N, O, H, W]`` of one dtype (fp32 or fp16, accumulated in fp32), ``k``
    odd. Returns ``[O, I, k, k]`` float32.
    """
    check_kernel_input(x, "x")
    check_kernel_input(g, "g")
    check_kernel_device(x)
    check_same_device(x, g=g)
    if x.dim() != 4 or g.dim() != 4 or x.shape[0] != g.shape[0] or x.shape[2:] != g.shape[2:]:
        raise ValueError(f"x, g: expected [N, I, H, W] and [N, O, H, W], got {list(x.shape)} and {list(g.shape)}")
    if g.dtype != x.dtype:
        raise ValueError(f"g: expected dtype {x.dtype} (as x), got {g.dtype}")
    if k < 1 or k % 2 == 0:
        raise ValueError(f"k: expected an odd kernel size >= 1, got {k}")
    batch, in_channels, height, width = x.shape
    out_channels = g.shape[1]
    out = torch.empty(out_channels, in_channels, k, k, dtype=torch.float32, device=x.device)
    config = config or launch_config(MODCONV_WEIGHT_GRAD_KERNEL, (
        ("dtype", triton_dtype(x.dtype)), ("batch", batch), ("spatial", height * width),
        ("cin", in_channels), ("cout", out_channels), ("k", k)))
    block_o, block_i = config.meta["BLOCK_O"], config.meta["BLOCK_I"]
    grid = (triton.cdiv(in_channels, block_i) * triton.cdiv(out_channels, block_o), k * k)
    _modconv_weight_grad_kernel[grid](
        x, g, out, batch, height, width, in_channels, out_channels, *x.stride(), *g.stride(),
        KH=k, KW=k, num_warps=config.num_warps, num_stages=config.num_stages, **config.meta,
    )
    return out


# ----------------------------------------------------------------------------------------------
# torch.library op (opaque to torch.compile; the fake kernel gives shapes)
# ----------------------------------------------------------------------------------------------


@torch.library.custom_op("sgtriton::modulated_conv2d", mutates_args=())
def _modulated_conv2d_op(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    bias: torch.Tensor | None,
    noise: torch.Tensor | None,
    noise_strength: torch.Tensor | None,
    resample_filter: torch.Tensor | None,
    up: int,
    demodulate: bool,
    act: str,
    alpha: float,
    gain: float,
    clamp: float | None,
    channels_last: bool,
) -> torch.Tensor:
    """The layer's launch. ``channels_last`` is the output's layout: channels-last, else contiguous NCHW.

    The layout is an argument of the schema, not a property of the implementation, so a graph that
    torch.compile cached (Inductor's FX graph cache keys on the graph's code, not on the fake kernel)
    can never hold a stale output stride for this op.
    """
    return modulated_conv2d_triton(x, weight, styles, bias, noise, noise_strength, up, demodulate, act,
                                   alpha, gain, clamp, resample_filter, channels_last=channels_last)


@_modulated_conv2d_op.register_fake
def _(x, weight, styles, bias, noise, noise_strength, resample_filter, up, demodulate, act, alpha, gain, clamp,
      channels_last):
    check_modconv_args(x, weight, styles)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    return torch.empty([x.shape[0], weight.shape[0], x.shape[2] * up, x.shape[3] * up], dtype=x.dtype,
                       device=x.device, memory_format=layout)


@torch.library.custom_op("sgtriton::modconv_weight_grad", mutates_args=())
def _modconv_weight_grad_op(x: torch.Tensor, g: torch.Tensor, k: int) -> torch.Tensor:
    return modconv_weight_grad_triton(x, g, k)


@_modconv_weight_grad_op.register_fake
def _(x, g, k):
    return x.new_empty([g.shape[1], x.shape[1], k, k], dtype=torch.float32)


# ----------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------


def modulated_conv2d_layer(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    noise_strength: torch.Tensor | float | None = None,
    up: int = 1,
    demodulate: bool = True,
    act: str = "lrelu",
    alpha: float | None = None,
    gain: float | None = None,
    clamp: float | None = None,
    resample_filter: torch.Tensor | None = None,
    fused_modconv: bool = True,
    impl: str = "ref",
) -> torch.Tensor:
    """One StyleGAN2 style layer after its affine (NVlabs ``SynthesisLayer`` from ``styles`` on)::

        y = clamp(act(d * conv_up(x, W * s) + noise_strength * noise + bias, alpha) * gain, +-clamp)

    Args:
        x: ``[N, I, H, W]`` float32 or float16 (float64 too for ``impl='ref'``).
        weight: ``[O, I, k, k]``, ``k`` odd (padding ``k // 2``); ``up=2`` needs ``k = 3``.
        styles: ``[N, I]`` (the affine output ``s``).
        bias: ``[O]`` or ``None``.
        noise: ``[N, 1, H*up, W*up]``, ``[H*up, W*up]`` or ``None``.
        noise_strength: scalar tensor or float multiplying ``noise`` (``None`` = 1).
        up: 1, or 2 for the stride-2 transposed conv followed by the ``resample_filter`` FIR
            (``[1, 3, 3, 1]`` by default), weight not flipped (NVlabs ``flip_weight=False``).
        demodulate: divide each output channel by ``sqrt(sum (W s)^2 + 1e-8)``.
        act, alpha, gain, clamp: as in :func:`~sgtriton.ops.bias_act.bias_act` (``lrelu``,
            0.2, ``sqrt(2)``; ``clamp=None`` disables clamping). Pass the layer's total gain and clamp.
        fused_modconv: which NVlabs formulation the reference uses (the kernel computes both).
        impl: ``'ref'`` (PyTorch, any device) or ``'triton'`` (the ``sgtriton::modulated_conv2d`` op).

    Returns:
        ``[N, O, H*up, W*up]`` in ``x.dtype``.
    """
    if impl == "ref":
        return modulated_conv2d_layer_ref(x, weight, styles, bias, noise, noise_strength, up, demodulate, act,
                                          alpha, gain, clamp, resample_filter, fused_modconv)
    if impl != "triton":
        raise ValueError(f"impl={impl!r}: expected 'ref' or 'triton'")
    _, alpha, gain = resolve_activation(act, alpha, gain)
    if noise is not None and noise_strength is not None and not isinstance(noise_strength, torch.Tensor):
        noise_strength = torch.full([1], float(noise_strength), dtype=torch.float32, device=x.device)
    if isinstance(noise_strength, torch.Tensor):
        noise_strength = noise_strength.reshape(1)
    return torch.ops.sgtriton.modulated_conv2d(x, weight, styles, bias, noise, noise_strength, resample_filter,
                                               up, demodulate, act, alpha, gain, clamp, True)


# ----------------------------------------------------------------------------------------------
# Backward
# ----------------------------------------------------------------------------------------------
#
# With the effective (fp16: pre-normalised) weight W' and styles s', c = conv_up(x, W' s') and
# y = clamp(act(d c + strength noise + bias) * gain), d = rsqrt(s'^2 Q'^T + eps). For g = dL/d(d c + ...):
#
#   dx[n,i]      = s'[n,i] * u[n,i],   u = conv_up^T(g * d)    -- itself a modulated conv (below)
#   ds'[n,i]     = sum_p x[n,i,p] u[n,i,p]  -  s'[n,i] sum_o e[n,o] Q'[o,i]
#   dW'[o,i,k]   = wgrad_k(x * s', g * d)[o,i]  -  W'[o,i,k] sum_n e[n,o] s'[n,i]^2
#   e[n,o]       = d[n,o]^3 sum_p g[n,o,p] c[n,o,p]              (demodulation's gradient)
#
# The transposed conv is the forward kernel again: for up = 1 a conv of g with the weight
# transposed (in/out swapped) and flipped, modulated by d over its input channels (the layer's
# output channels) and not demodulated. For up = 2 the forward is four 3x3 phase convs
# (upsample_phase_weights), so its transpose is one 3x3 conv of the four phases of g stacked as
# 4*O input channels with the flipped, transposed phase weights. Because it runs through the same
# differentiable op, the backward has a backward too (double backward, for path-length
# regularisation). The weight gradient is a batch-and-pixel reduction, the implicit GEMM
# _modconv_weight_grad_kernel (op sgtriton::modconv_weight_grad, whose own backward is a pair of
# PyTorch convs, so double backward works); for up = 2 it is taken w.r.t. the phase weights (the
# same 3x3 form with 4*O output channels) and mapped back through the transpose of the phase map.


def phase_tap_matrix(resample_filter: torch.Tensor | None, device: torch.device) -> torch.Tensor:
    """``T [2, 2, 3, 3, 9]`` float64 with ``P[ry, rx, o, i, a, b] = sum_k T[ry, rx, a, b, k] W[o, i, k]``.

    :func:`upsample_phase_weights` is linear in the weight, so applying it to the nine unit 3x3
    kernels gives its matrix; its transpose maps phase-weight gradients back to weight gradients.
    """
    basis = torch.eye(9, dtype=torch.float64, device=device).reshape(9, 1, 3, 3)
    f = None if resample_filter is None else resample_filter.to(torch.float64)
    return upsample_phase_weights(basis, f)[:, :, :, 0].permute(0, 1, 3, 4, 2).contiguous()


def _effective_operands(weight: torch.Tensor, styles: torch.Tensor, prenorm: bool):
    """``(W', s')`` in fp32: what the kernel multiplies (pre-normalised for fp16 with demodulation)."""
    w, s = weight.float(), styles.float()
    return fp16_prenormalize(w, s) if prenorm else (w, s)


def _prenormalize_vjp(weight, styles, dw_eff, ds_eff):
    """Carry ``dW'``, ``ds'`` back through :func:`fp16_prenormalize` (max-abs gradients shared by ties)."""
    w, s = weight.float(), styles.float()
    w_max = w.abs().amax(dim=[1, 2, 3], keepdim=True)
    s_max = s.abs().amax(dim=1, keepdim=True)
    w_arg = w.sign() * (w.abs() == w_max)
    s_arg = s.sign() * (s.abs() == s_max)
    w_arg = w_arg / w_arg.abs().sum(dim=[1, 2, 3], keepdim=True)
    s_arg = s_arg / s_arg.abs().sum(dim=1, keepdim=True)
    a = prenormalization_scale(w)[:, None, None, None]
    dw = dw_eff * a - (dw_eff * w).sum(dim=[1, 2, 3], keepdim=True) * a / w_max * w_arg
    ds = ds_eff / s_max - (ds_eff * s).sum(dim=1, keepdim=True) / s_max.square() * s_arg
    return dw, ds


def _phases(t: torch.Tensor) -> torch.Tensor:
    """``[N, C, 2H, 2W]`` -> ``[N, 4C, H, W]``: channel ``(2 ry + rx) * C + c`` holds pixels ``(2m + ry, 2m' + rx)``."""
    n, c, h2, w2 = t.shape
    return t.reshape(n, c, h2 // 2, 2, w2 // 2, 2).permute(0, 3, 5, 1, 2, 4).reshape(n, 4 * c, h2 // 2, w2 // 2)


def modconv_transposed(
    g: torch.Tensor, w_eff: torch.Tensor, d: torch.Tensor, up: int, resample_filter: torch.Tensor | None,
) -> torch.Tensor:
    """``u = conv_up^T(g * d[:, :, None, None], W')``: ``g [N, O, H*up, W*up]`` -> ``[N, I, H, W]`` in ``g.dtype``.

    One launch of the (differentiable) modulated-conv op, ``d [N, O]`` modulating its input channels.
    """
    if up == 1:
        weight_t = w_eff.transpose(0, 1).flip([2, 3])
        return torch.ops.sgtriton.modulated_conv2d(g, weight_t.contiguous(), d, None, None, None, None, 1, False,
                                                   "linear", 0.0, 1.0, None, True)
    phase = upsample_phase_weights(w_eff, resample_filter)  # [2, 2, O, I, 3, 3], differentiable in W'
    weight_t = phase.permute(3, 0, 1, 2, 4, 5).reshape(w_eff.shape[1], 4 * w_eff.shape[0], 3, 3).flip([2, 3])
    return torch.ops.sgtriton.modulated_conv2d(_phases(g), weight_t.to(torch.float32).contiguous(), d.repeat(1, 4),
                                               None, None, None, None, 1, False, "linear", 0.0, 1.0, None, True)


def modconv_weight_grad(
    xs: torch.Tensor, gd: torch.Tensor, weight_shape: torch.Size, up: int, resample_filter: torch.Tensor | None,
) -> torch.Tensor:
    """``dW'[o, i, k] = sum_{n, p} gd[n, o, p] xs[n, i, p + k]`` through the layer's conv (fp32)."""
    out_channels, in_channels, kh, kw = weight_shape
    if up == 1:
        return torch.ops.sgtriton.modconv_weight_grad(xs, gd, kh)
    d_phase = torch.ops.sgtriton.modconv_weight_grad(xs, _phases(gd), 3)
    taps = phase_tap_matrix(resample_filter, xs.device).to(xs.dtype)
    d_phase = d_phase.reshape(2, 2, out_channels, in_channels, 3, 3)
    return torch.einsum("yxabk,yxoiab->oik", taps, d_phase).reshape(weight_shape)


def _weight_grad_setup_context(ctx, inputs, output):
    x, g, k = inputs
    ctx.save_for_backward(x, g)
    ctx.k = k


def _weight_grad_backward(ctx, grad):
    """The weight gradient is bilinear in ``(x, g)``: ``<dW, G> = <conv2d(x, G), g>``, so its
    gradients are ``conv2d(x, G)`` (w.r.t. ``g``) and ``conv_transpose2d(g, G)`` (w.r.t. ``x``),
    both differentiable PyTorch convs (double backward goes through them)."""
    x, g = ctx.saved_tensors
    pad = ctx.k // 2
    grad = grad.to(x.dtype)
    dx = torch.nn.functional.conv_transpose2d(g, grad, padding=pad) if ctx.needs_input_grad[0] else None
    dg = torch.nn.functional.conv2d(x, grad, padding=pad) if ctx.needs_input_grad[1] else None
    return dx, dg, None


_modconv_weight_grad_op.register_autograd(_weight_grad_backward, setup_context=_weight_grad_setup_context)


def noise_gradients(gf: torch.Tensor, noise: torch.Tensor | None, strength: torch.Tensor | None,
                    needs_noise: bool, needs_strength: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Gradients of the epilogue's ``strength * noise`` term from ``gf = dL/d(pre-activation)`` (fp32):
    ``dnoise = strength * gf`` summed to the noise's broadcast shape, ``dstrength = sum(gf * noise)``."""
    if noise is None:
        return None, None
    scale = 1.0 if strength is None else strength.float()
    dnoise = (gf * scale).sum_to_size(noise.shape).to(noise.dtype) if needs_noise else None
    dstrength = None
    if strength is not None and needs_strength:
        dstrength = (gf * noise.float()).sum().reshape(strength.shape).to(strength.dtype)
    return dnoise, dstrength


def _modconv_setup_context(ctx, inputs, output):
    x, weight, styles, bias, noise, noise_strength, resample_filter, up, demodulate, act, alpha, gain, clamp, _ = inputs
    ctx.save_for_backward(x, weight, styles, noise, noise_strength, resample_filter, output)
    ctx.args = (None if bias is None else bias.dtype, up, demodulate, act, alpha, gain, clamp)


def _modconv_backward(ctx, grad):
    x, weight, styles, noise, strength, resample_filter, y = ctx.saved_tensors
    bias_dtype, up, demodulate, act, alpha, gain, clamp = ctx.args
    needs = ctx.needs_input_grad
    g = bias_act_input_grad(grad, y, act, alpha, gain, clamp)
    gf = g.float()
    dbias = gf.sum(dim=[0, 2, 3]).to(bias_dtype) if bias_dtype is not None and needs[3] else None
    dnoise, dstrength = noise_gradients(gf, noise, strength, needs[4], needs[5])

    prenorm = demodulate and x.dtype == torch.float16
    w_eff, s_eff = _effective_operands(weight, styles, prenorm)
    if demodulate:
        d = demodulation_coefficients(w_eff, s_eff)
        # c: the un-demodulated conv, recomputed by the kernel (fp32 out) rather than stored.
        c = torch.ops.sgtriton.modulated_conv2d(x, w_eff, s_eff, None, None, None, resample_filter, up, False,
                                                "linear", 0.0, 1.0, None, True)
        e = d.pow(3) * (gf * c.float()).sum(dim=[2, 3])
    else:
        d = torch.ones(g.shape[:2], dtype=torch.float32, device=g.device)
    u = modconv_transposed(g.to(x.dtype), w_eff, d, up, resample_filter).float()
    dx = (u * s_eff[:, :, None, None]).to(x.dtype) if needs[0] else None

    dweight = dstyles = None
    if needs[1] or needs[2]:
        ds_eff = (x.float() * u).sum(dim=[2, 3])
        dw_eff = modconv_weight_grad(x.float() * s_eff[:, :, None, None], gf * d[:, :, None, None],
                                     weight.shape, up, resample_filter)
        if demodulate:
            ds_eff = ds_eff - s_eff * (e @ demodulation_gram(w_eff))
            dw_eff = dw_eff - w_eff * (e.transpose(0, 1) @ s_eff.square())[:, :, None, None]
        if prenorm:
            dw_eff, ds_eff = _prenormalize_vjp(weight, styles, dw_eff, ds_eff)
        dweight = dw_eff.to(weight.dtype) if needs[1] else None
        dstyles = ds_eff.to(styles.dtype) if needs[2] else None
    return dx, dweight, dstyles, dbias, dnoise, dstrength, None, None, None, None, None, None, None, None


_modulated_conv2d_op.register_autograd(_modconv_backward, setup_context=_modconv_setup_context)
