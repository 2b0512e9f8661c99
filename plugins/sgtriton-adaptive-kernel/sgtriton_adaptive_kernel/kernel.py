"""The Triton kernel of the adaptive-kernel style layer, and its declarations (tuning space, AOT signature).

One launch computes, for every sample ``n`` (maths in :mod:`sgtriton_adaptive_kernel.reference`)::

    out[n, o, p] = clamp(lrelu(d[n, o] * sum_{i,k} K[n,o,i,k] s[n,i] x[n, i, p + k] + strength * noise[p]
                               + bias[o], alpha) * gain, +-clamp)
    K[n,o,i,k]   = sum_j a[n, j] W_j[o, i, k],    a[n] = softmax(logits[n])

**The bank is one more reduction axis, reduced in the weight-tile prologue.** Per sample the conv is
the implicit GEMM of ``sgtriton.ops.modconv``: ``[pixels, I*k*k] x [I*k*k, O]``, A gathered from ``x``.
Each weight tile (the GEMM's second operand, ``[BLOCK_K, BLOCK_N]``) is built in fp32 registers as
``sum_j a_j W_j[tile]`` (``BANK`` loads), multiplied by the styles, rounded once to the dot's dtype and fed to one
``tl.dot``. Reducing ``j`` there instead of inside the GEMM keeps the tensor-core work at exactly that
of a single-kernel layer; what the bank costs is ``BANK`` weight-tile loads and FMAs per step, i.e.
about ``BANK / BLOCK_M`` of the GEMM's multiply-adds (amortised over the pixels of a tile, which is
why the tuning space favours tall tiles). The mixed kernel exists only tile by tile in registers:
no ``[N, O, I, k, k]`` tensor is ever written.

**Selection weights in the kernel.** Each program loads the sample's ``BANK`` logits, takes their max
and the sum of exponentials once, and forms ``a_j = exp(logit_j - max) / sum`` where it needs it, so
no softmax launch precedes the kernel.

**Demodulation from the Gram planes, in sgtriton's prologue.** ``d[n,o] = rsqrt(sum_i s'[n,i]^2 Q_n[o, i]
+ eps)`` with ``Q_n[o, i] = sum_{j<=j'} c_jj' a_j a_j' G[p(j,j'), o, i]`` (``c = 1`` on the diagonal, 2 off
it) from the ``B (B + 1) / 2`` Gram planes ``G [P, O, I]`` (precomputed per bank version): ``O * I * P``
multiply-adds per sample instead of the ``O * I * k*k * B`` of a pass over the bank (10 vs 36 per
``(o, i)`` for ``B = 4``). The launcher forms ``Q_n`` and runs sgtriton's modulated-conv prologue
(:func:`sgtriton.ops.modconv.demodulation_prologue`, one small launch, per-sample ``Q``), which also
pre-normalises the styles; the kernel reads ``d`` and ``s'``. Nothing of the prologue is copied here.

**fp16.** As ``moddemod``: styles divided by their per-sample max-abs (in the prologue), the tile multiplied by
``c[o] = 1 / (sqrt(I*k*k) * wmax[o])`` with ``wmax[o] = max_{j,i,k} |W_j[o,i,k]|`` (precomputed),
``d = rsqrt(c^2 q + eps)``; fp32 uses ``tl.dot`` with ``input_precision="tf32x3"`` (as modconv).

**Two bank regimes.** For ``B <= UNROLL_MAX_BANK`` (4, the block's default) the loops over the bank
are unrolled, so the software pipeliner sees every weight-tile load of a step; registers and shared
memory then grow with ``B``. Larger banks loop over ``j`` at run time, with a register and
shared-memory budget independent of ``B``. Each regime is a declared kernel of its own (gated and
tuned separately): ``adaptive_modconv2d[_up2]`` and ``adaptive_modconv2d[_up2]_large_bank``.

**Without demodulation** (``DEMOD`` off) the Gram pass is skipped and the output is not scaled: the
backward runs its transposed conv through this kernel with ``d`` as the styles (see the backward in
:mod:`sgtriton_adaptive_kernel.ops`).

**up = 2** uses the polyphase form of modconv: the GEMM reads the four 3x3 phase weights of every
bank entry (``upsample_phase_weights``, linear in the weight, so the phase weight of the mixture is
the mixture of the phase weights), the demodulation reads ``G`` of the original bank.
"""

from __future__ import annotations

import triton
import triton.language as tl
from sgtriton.ops._runtime import KernelConfig, KernelSpec, declare_kernel
from sgtriton.ops.modconv import DEMOD_EPS, FP32_DOT_PRECISION

_EPS = tl.constexpr(DEMOD_EPS)


# No @triton.jit helpers (as in sgtriton's modconv): under the interpreter they would become
# interpreted functions that an ahead-of-time compile from the same process cannot follow.
@triton.jit
def _adaptive_modconv_kernel(
    x_ptr, bank_ptr, d_ptr, wmax_ptr, logits_ptr, s_ptr, bias_ptr, noise_ptr, strength_ptr, out_ptr,
    H, W, I, O,
    stride_xn, stride_xc, stride_xh, stride_xw,
    stride_bp, stride_bj, stride_bo, stride_bi, stride_bh, stride_bw,
    stride_dn,
    stride_ln, stride_lj,
    stride_sn, stride_si,
    stride_nn, stride_nh, stride_nw,
    fan_in_rsqrt, alpha, gain, clamp,
    UP: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr, BANK: tl.constexpr, BANK_P2: tl.constexpr,
    UNROLL_BANK: tl.constexpr, DEMOD: tl.constexpr, PRENORM: tl.constexpr, HAS_NOISE: tl.constexpr,
    USE_CLAMP: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """Adaptive-kernel style layer, one launch (see the module docstring for the maths).

    Pointers:
        x: ``[N, I, H, W]`` fp32 or fp16, any strides (``stride_x*``).
        bank: the GEMM weights at ``phase * stride_bp + j * stride_bj + o * stride_bo + i * stride_bi
            + ky * stride_bh + kx * stride_bw``: the bank ``[B, O, I, KH, KW]`` for ``UP = 1``
            (``stride_bp = 0``), its phase weights ``[4, B, O, I, 3, 3]`` for ``UP = 2``; fp32.
        d: ``[N, O]`` fp32 demodulation coefficients (row stride ``stride_dn``; read if ``DEMOD``), from
            sgtriton's modulated-conv prologue on this layer's per-sample Gram form.
        wmax: ``[O]`` fp32 bank-wide max-abs per output channel (read if ``PRENORM``).
        logits: ``[N, B]`` selection logits (``stride_l*``), softmax taken here.
        s: ``[N, I]`` the styles the tiles are modulated by (``stride_s*``): with ``DEMOD`` the
            prologue's ``s'`` (pre-normalised for fp16).
        bias: ``[O]`` fp32.
        noise: one value per output pixel at ``n * stride_nn + Y * stride_nh + X * stride_nw``
            (``stride_nn = 0`` broadcasts one map); read if ``HAS_NOISE``.
        strength: one fp32 element multiplying the noise.
        out: ``[N, O, H*UP, W*UP]`` contiguous, in its own dtype.
    Scalars: ``fan_in_rsqrt = 1/sqrt(I*KH*KW)``; ``alpha`` (leaky slope); ``gain``; ``clamp``.
    Constexprs: ``UP`` 1 or 2 (2 needs 3x3); ``KH``, ``KW`` odd; ``BANK`` (bank size); ``BANK_P2``
    (power of two >= BANK); ``UNROLL_BANK`` (unroll the loops over the bank, else loop at run time);
    ``DEMOD`` (demodulate; off for the backward's transposed conv, which is modulated by ``d``);
    ``PRENORM`` (fp16 pre-normalisation, only with ``DEMOD``); ``HAS_NOISE``;
    ``USE_CLAMP``; tiles ``BLOCK_M`` (pixels of the input grid), ``BLOCK_N`` (output channels),
    ``BLOCK_K`` (input channels per step).

    Grid: axis 0 = output-channel block (fastest) x pixel block; axis 1 = phase ``ry * UP + rx``;
    axis 2 = sample.
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
    x_base = x_ptr + n.to(tl.int64) * stride_xn
    s_base = s_ptr + n.to(tl.int64) * stride_sn
    l_base = logits_ptr + n.to(tl.int64) * stride_ln

    # --- selection: softmax statistics of this sample's logits (a_j formed where needed) ---
    offs_j = tl.arange(0, BANK_P2)
    logits = tl.load(l_base + offs_j * stride_lj, mask=offs_j < BANK, other=float("-inf")).to(tl.float32)
    l_max = tl.max(logits, axis=0)
    l_sum = tl.sum(tl.exp(logits - l_max), axis=0)

    # --- fp16 pre-normalisation of the weights: c[o] = fan_in_rsqrt / wmax[o] (s' comes pre-normalised) ---
    if PRENORM:
        wmax = tl.load(wmax_ptr + offs_n, mask=n_mask, other=1.0)
        col_scale = fan_in_rsqrt / wmax

    # --- implicit GEMM: acc[p, o] = sum_{i,k} x[n, i, p + k - PAD] * (sum_j a_j W_j[o, i, k]) * s'[n, i] ---
    i_blocks = tl.cdiv(I, BLOCK_K)
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    x_pix = x_base + (my * stride_xh + mx * stride_xw)[:, None]
    b_col = bank_ptr + phase * stride_bp + (offs_n * stride_bo)[None, :]
    for step in range(0, KH * KW * i_blocks):
        tap = step // i_blocks
        offs_k = (step - tap * i_blocks) * BLOCK_K + offs_kb
        k_mask = offs_k < I
        ky = tap // KW
        kx = tap - ky * KW
        dy = ky - PAD
        dx = kx - PAD
        iy = my + dy
        ix = mx + dx
        a_mask = m_mask & (iy >= 0) & (iy < H) & (ix >= 0) & (ix < W)
        a = tl.load(x_pix + (dy * stride_xh + dx * stride_xw) + (offs_k * stride_xc)[None, :],
                    mask=a_mask[:, None] & k_mask[None, :], other=0.0)

        # Prologue: the sample's kernel tile, mixed and modulated in fp32, rounded once for the dot.
        b_ptrs = b_col + (ky * stride_bh + kx * stride_bw) + (offs_k * stride_bi)[:, None]
        b_mask = k_mask[:, None] & n_mask[None, :]
        mixed = tl.zeros([BLOCK_K, BLOCK_N], dtype=tl.float32)
        if UNROLL_BANK:
            for j in tl.static_range(BANK):
                a_j = tl.exp(tl.load(l_base + j * stride_lj).to(tl.float32) - l_max) / l_sum
                mixed += a_j * tl.load(b_ptrs + j * stride_bj, mask=b_mask, other=0.0)
        else:
            for j in range(BANK):
                a_j = tl.exp(tl.load(l_base + j * stride_lj).to(tl.float32) - l_max) / l_sum
                mixed += a_j * tl.load(b_ptrs + j * stride_bj, mask=b_mask, other=0.0)
        s = tl.load(s_base + offs_k * stride_si, mask=k_mask, other=0.0).to(tl.float32)
        b = mixed * s[:, None]
        if PRENORM:
            b = b * col_scale[None, :]

        if x_ptr.dtype.element_ty == tl.float32:
            acc = tl.dot(a, b, acc, input_precision=FP32_DOT_PRECISION)
        else:
            acc = tl.dot(a, b.to(x_ptr.dtype.element_ty), acc)

    # --- epilogue on the fp32 accumulator: demod, noise, bias, lrelu, gain, clamp; one store ---
    y = acc
    if DEMOD:
        y = y * tl.load(d_ptr + n.to(tl.int64) * stride_dn + offs_n, mask=n_mask, other=0.0)[None, :]
    HO = H * UP
    WO = W * UP
    oy = my * UP + phase // UP
    ox = mx * UP + phase % UP
    if HAS_NOISE:
        noise = tl.load(noise_ptr + n.to(tl.int64) * stride_nn + oy * stride_nh + ox * stride_nw,
                        mask=m_mask, other=0.0).to(tl.float32)
        y += (noise * tl.load(strength_ptr).to(tl.float32))[:, None]
    y += tl.load(bias_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)[None, :]
    y = tl.where(y >= 0, y, y * alpha) * gain
    if USE_CLAMP:
        y = tl.minimum(tl.maximum(y, -clamp), clamp)
    out_ptrs = (out_ptr + n.to(tl.int64) * O * HO * WO
                + offs_n[None, :] * (HO * WO) + (oy * WO + ox)[:, None])
    tl.store(out_ptrs, y.to(out_ptr.dtype.element_ty), mask=m_mask[:, None] & n_mask[None, :])


# ----------------------------------------------------------------------------------------------
# Declarations: tuning space and ahead-of-time signatures
# ----------------------------------------------------------------------------------------------

#: Tuning space (first = default). The bank mix costs ``BANK`` tile loads + FMAs per K step,
#: amortised over ``BLOCK_M`` pixels, so tiles are tall; ``BLOCK_K = 16`` keeps a step's ``BANK``
#: weight tiles (each pipelined by the compiler when unrolled) within registers and shared memory.
#: Every config x dtype x sm_80/sm_90 compiles without spills for both bank regimes below, under
#: Triton 3.6 and 3.9 (128 x 64 x 16 with 8 warps spills in fp32 on sm_80 under 3.6).
ADAPTIVE_MODCONV_CONFIGS = (
    KernelConfig({"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 16}, num_warps=4, num_stages=3),
    KernelConfig({"BLOCK_M": 128, "BLOCK_N": 32, "BLOCK_K": 16}, num_warps=4, num_stages=3),
    KernelConfig({"BLOCK_M": 256, "BLOCK_N": 32, "BLOCK_K": 16}, num_warps=8, num_stages=3),
    KernelConfig({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 16}, num_warps=8, num_stages=2),
    KernelConfig({"BLOCK_M": 32, "BLOCK_N": 64, "BLOCK_K": 16}, num_warps=4, num_stages=3),
)

#: Largest bank whose loops are unrolled. Unrolled, the ``BANK`` weight-tile loads of a step are
#: visible to the software pipeliner, but registers and shared memory grow with ``BANK`` and the
#: Gram pass unrolls ``BANK (BANK + 1) / 2`` tile loads: measured with the default config, BANK = 6
#: still compiles clean, 8 starts to spill on sm_90 (fp32) and 16 spills ~850 B per thread. Looped at
#: run time, registers (~160) and shared memory do not depend on ``BANK`` (measured at 4 and 16).
UNROLL_MAX_BANK = 4
#: The bank size each regime is compiled with in the gate: the block's default, and the next size up.
AOT_BANK_SIZES = {True: UNROLL_MAX_BANK, False: 2 * UNROLL_MAX_BANK}

def bank_p2(bank_size: int) -> int:
    """The power-of-two width the kernel loads the logits with (``tl.arange`` needs one)."""
    return max(triton.next_power_of_2(bank_size), 2)


def unroll_bank(bank_size: int) -> bool:
    """Whether a bank of ``bank_size`` kernels runs with unrolled bank loops (see ``UNROLL_MAX_BANK``)."""
    return bank_size <= UNROLL_MAX_BANK


def example_launches(up: int, bank_size: int):
    """Example launches (compile gate) of the layer as generators run it: 256 channels at 16x16
    (32x32 out for ``up = 2``), batch 2, a bank of ``bank_size`` 3x3 kernels; with noise and clamp,
    without clamp, without noise, and (``up = 1``) without demodulation, as the backward runs it."""

    def launches(dtype: str, device) -> dict:
        import torch
        from sgtriton.ops._runtime import torch_dtype

        from sgtriton_adaptive_kernel.ops import adaptive_modulated_conv2d_triton

        n, c, res = 2, 256, 16
        x = torch.randn(n, c, res, res, dtype=torch_dtype(dtype), device=device)
        bank = torch.randn(bank_size, c, c, 3, 3, device=device)
        logits, styles, bias = (torch.randn(n, bank_size, device=device), torch.randn(n, c, device=device),
                                torch.randn(c, device=device))
        noise = torch.randn(n, 1, res * up, res * up, device=device)
        strength = torch.full([1], 0.1, device=device)

        def layer(**options):
            return lambda: adaptive_modulated_conv2d_triton(x, bank, logits, styles, bias, up=up, **options)

        variants = {
            "noise-clamp": layer(noise=noise, noise_strength=strength, clamp=256.0),
            "noise": layer(noise=noise, noise_strength=strength),
            "no-noise": layer(clamp=256.0),
        }
        if up == 1:  # the backward's transposed conv (the up = 2 one is an up = 1 conv of the phases)
            variants["transposed"] = layer(demodulate=False, alpha=1.0, gain=1.0)
        return variants

    return launches


def _declare(up: int, unrolled: bool) -> KernelSpec:
    bank_size = AOT_BANK_SIZES[unrolled]
    name = "adaptive_modconv2d" + ("_up2" if up == 2 else "") + ("" if unrolled else "_large_bank")
    conv = ("3x3 transposed conv + [1,3,3,1] FIR (polyphase)" if up == 2 else "k x k conv")
    bank = f"bank <= {UNROLL_MAX_BANK} unrolled" if unrolled else f"bank > {UNROLL_MAX_BANK} looped"
    return declare_kernel(
        name, _adaptive_modconv_kernel, ADAPTIVE_MODCONV_CONFIGS, uses_tensor_cores=True,
        launches=example_launches(up, bank_size),
        description=f"adaptive-kernel (GigaGAN) {conv}, softmax bank mix in the weight-tile prologue ({bank}) "
                    f"+ mod/demod (Gram) + noise + bias + lrelu + clamp, one implicit GEMM",
    )


#: One kernel source, four declared specialisations: ``UP`` changes the grid, the weight operand and
#: the store pattern (as sgtriton's modconv2d / modconv2d_up2), ``UNROLL_BANK`` the register and
#: shared-memory budget -- each gets its own compile-gate entries and its own tuned configs.
KERNEL_SPECS: dict[tuple[int, bool], KernelSpec] = {
    (up, unrolled): _declare(up, unrolled) for up in (1, 2) for unrolled in (True, False)
}


def kernel_spec(up: int, bank_size: int) -> KernelSpec:
    """The declared kernel that runs a layer with this ``up`` and bank size."""
    if up not in (1, 2):
        raise ValueError(f"up={up!r}: expected 1 or 2")
    return KERNEL_SPECS[(up, unroll_bank(bank_size))]
