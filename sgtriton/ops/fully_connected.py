"""The mapping network's ops: pixel norm, the equalised-lr FC layer (alone or as a whole chain), truncation.

``normalize_2nd_moment`` (StyleGAN1's pixel norm), for ``x [N, F]`` and eps = 1e-8::

    y = x * rsqrt(mean(x^2, dim=1) + eps)

``fully_connected``, for ``x [N, in]``, ``W [out, in]``, ``b [out]`` -> ``[N, out]``::

    y = act(x @ (W * weight_gain)^T + b * bias_gain, alpha) * act_gain

StyleGAN2 uses ``weight_gain = lr / sqrt(in)``, ``bias_gain = lr`` and the activation's default gain
(``sqrt 2`` for lrelu); StyleGAN1 moves the ``sqrt 2`` into ``weight_gain`` and uses ``act_gain = 1``.

``mapping_chain``: ``L`` such layers back to back (optionally after a pixel norm of the input),
``x [N, in]`` -> ``[N, D]`` in fp32, each layer reading the previous one's width: a mapping network's
weights are ``[layer, in]``, ``[layer, layer]`` ... ``[D, layer]`` (``layer = D`` unless NVlabs'
``layer_features`` says otherwise).

``truncate``, for ``w [N, D]`` and ``w_avg [D]`` -> ``ws [N, num_ws, D]``::

    ws[:, i] = w_avg + psi * (w - w_avg)   for i < cutoff   (all i when cutoff is None)
    ws[:, i] = w                           otherwise

Implementations: ``impl='ref'`` (PyTorch) or ``impl='triton'``: :func:`_pixel_norm_kernel`,
:func:`_fully_connected_kernel` (one layer, fused bias/act/gain), :func:`_mapping_chain_kernel`
(every layer of the chain in one launch, for small batches) and :func:`_truncate_kernel`,
registered as ``sgtriton::pixel_norm``, ``sgtriton::fully_connected``, ``sgtriton::mapping_chain``
and ``sgtriton::truncate``. Kernels read fp32/fp16 activations and compute in fp32 (``tl.dot`` with
``input_precision="ieee"``: the mapping network is small, and TF32 would cost it its fp32 accuracy).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl

from sgtriton.ops._gradients import rms_norm_vjp
from sgtriton.ops._runtime import KernelConfig, declare_kernel, launch_config, torch_dtype, triton_dtype
from sgtriton.ops._triton_utils import as_fp32_param, check_kernel_input
from sgtriton.ops.bias_act import ACTIVATIONS, activate, bias_act_input_grad, bias_act_ref, resolve_activation

PIXEL_NORM_EPS = 1e-8
#: Above this batch size ``mapping_chain`` launches one kernel per layer: the fused chain runs its
#: layers one after another inside a program, which pays off only while launches dominate.
CHAIN_MAX_BATCH = 64


# --------------------------------------------------------------------------------------------
# References
# --------------------------------------------------------------------------------------------


def fully_connected_ref(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    weight_gain: float,
    bias_gain: float,
    act: str = "linear",
    act_gain: float | None = None,
    alpha: float | None = None,
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
    return bias_act_ref(x.matmul(w.t()), b, act=act, alpha=alpha, gain=act_gain)


def normalize_2nd_moment_ref(x: torch.Tensor, dim: int = 1, eps: float = PIXEL_NORM_EPS) -> torch.Tensor:
    """``x * rsqrt(mean(x^2, dim) + eps)``."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def mapping_chain_ref(
    x: torch.Tensor,
    weights: Sequence[torch.Tensor],
    biases: Sequence[torch.Tensor] | None,
    weight_gains: float | Sequence[float],
    bias_gain: float,
    act: str = "lrelu",
    alpha: float | None = None,
    act_gain: float | None = None,
    normalize_input: bool = True,
    eps: float = PIXEL_NORM_EPS,
) -> torch.Tensor:
    """Reference chain: optional pixel norm, then ``fully_connected_ref`` per layer, in fp32 (or fp64)."""
    gains = _check_chain_args(x, weights, biases, weight_gains)
    x = x if x.dtype == torch.float64 else x.float()
    if normalize_input:
        x = normalize_2nd_moment_ref(x, eps=eps)
    for i, weight in enumerate(weights):
        x = fully_connected_ref(x, weight, biases[i] if biases else None, gains[i], bias_gain, act, act_gain, alpha)
    return x


def truncate_ref(
    w: torch.Tensor, w_avg: torch.Tensor, num_ws: int, psi: float = 1.0, cutoff: int | None = None
) -> torch.Tensor:
    """Reference broadcast + truncation; ``w [N, D]``, ``w_avg [D]`` -> ``[N, num_ws, D]``."""
    _check_truncate_args(w, w_avg, num_ws, cutoff)
    ws = w.unsqueeze(1).repeat([1, num_ws, 1])
    if psi != 1:
        cut = num_ws if cutoff is None else cutoff
        ws[:, :cut] = w_avg.to(ws.dtype).lerp(ws[:, :cut], psi)
    return ws


# --------------------------------------------------------------------------------------------
# Triton kernels
# --------------------------------------------------------------------------------------------


@triton.jit
def _fc_tile(
    x_ptr, stride_x, w_ptr, stride_w, rows, row_ok, cols, col_ok, in_features,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """``x[rows, :] @ W[cols, :]^T`` as a ``[BLOCK_M, BLOCK_N]`` fp32 tile (no gains).

    ``x_ptr`` rows of ``in_features`` (row stride ``stride_x``, any float dtype); ``w_ptr`` fp32
    ``[out, in_features]`` with row stride ``stride_w``; ``rows``/``cols`` index vectors with their
    validity masks. The K loop runs in ``BLOCK_K`` steps; masked lanes contribute zeros.
    """
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(0, in_features, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        k_ok = k < in_features
        xt = tl.load(x_ptr + rows[:, None] * stride_x + k[None, :], mask=row_ok[:, None] & k_ok[None, :],
                     other=0.0).to(tl.float32)
        wt = tl.load(w_ptr + cols[None, :] * stride_w + k[:, None], mask=col_ok[None, :] & k_ok[:, None],
                     other=0.0)
        acc = tl.dot(xt, wt, acc, input_precision="ieee")
    return acc


@triton.jit
def _fc_epilogue(
    acc, scale, b_ptr, cols, col_ok, bias_gain, alpha, act_gain,
    ACT: tl.constexpr, HAS_BIAS: tl.constexpr,
):
    """``act(acc * scale + b[cols] * bias_gain, alpha) * act_gain``; ``scale`` a scalar or ``[BLOCK_M, 1]``."""
    acc = acc * scale
    if HAS_BIAS:
        acc += tl.load(b_ptr + cols, mask=col_ok, other=0.0)[None, :] * bias_gain
    return activate(acc, alpha, ACT) * act_gain


@triton.jit
def _pixel_norm_kernel(
    x_ptr, y_ptr, rows, features, stride_x, eps,
    BLOCK_M: tl.constexpr, BLOCK_F: tl.constexpr,
):
    """``y = x * rsqrt(mean(x^2, axis=1) + eps)`` for ``BLOCK_M`` rows of ``x``.

    Pointers: ``x_ptr`` ``[rows, features]`` (fp32/fp16, row stride ``stride_x``, unit column stride);
    ``y_ptr`` ``[rows, features]`` contiguous, ``x``'s dtype. ``eps`` fp32.
    Constexprs: ``BLOCK_M`` rows per program, ``BLOCK_F`` features per loop step.
    Grid: ``(cdiv(rows, BLOCK_M),)``.
    """
    r = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    r_ok = r < rows
    sumsq = tl.zeros([BLOCK_M, BLOCK_F], dtype=tl.float32)
    for f0 in range(0, features, BLOCK_F):
        f = f0 + tl.arange(0, BLOCK_F)
        ok = r_ok[:, None] & (f[None, :] < features)
        v = tl.load(x_ptr + r[:, None] * stride_x + f[None, :], mask=ok, other=0.0).to(tl.float32)
        sumsq += v * v
    scale = tl.rsqrt(tl.sum(sumsq, axis=1) / features + eps)[:, None]
    for f0 in range(0, features, BLOCK_F):
        f = f0 + tl.arange(0, BLOCK_F)
        ok = r_ok[:, None] & (f[None, :] < features)
        v = tl.load(x_ptr + r[:, None] * stride_x + f[None, :], mask=ok, other=0.0).to(tl.float32)
        tl.store(y_ptr + r[:, None] * features + f[None, :], (v * scale).to(y_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _fully_connected_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr,
    batch, in_features, out_features, stride_x, stride_w,
    weight_gain, bias_gain, alpha, act_gain,
    ACT: tl.constexpr, HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """One ``[BLOCK_M, BLOCK_N]`` tile of ``y = act(x @ (W*weight_gain)^T + b*bias_gain) * act_gain``.

    Pointers: ``x_ptr`` ``[batch, in_features]`` (fp32/fp16, row stride ``stride_x``, unit column
    stride); ``w_ptr`` fp32 ``[out_features, in_features]`` (row stride ``stride_w``); ``b_ptr`` fp32
    ``[out_features]`` (unused unless HAS_BIAS); ``y_ptr`` ``[batch, out_features]`` contiguous, ``x``'s dtype.
    Scalars (fp32): ``weight_gain``, ``bias_gain``, ``alpha`` (lrelu slope), ``act_gain``.
    Constexprs: ``ACT`` activation code (:data:`ACTIVATIONS`), ``HAS_BIAS``, tile sizes.
    Grid: ``(cdiv(batch, BLOCK_M), cdiv(out_features, BLOCK_N))``.
    """
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < batch
    col_ok = cols < out_features
    acc = _fc_tile(x_ptr, stride_x, w_ptr, stride_w, rows, row_ok, cols, col_ok, in_features,
                   BLOCK_M, BLOCK_N, BLOCK_K)
    acc = _fc_epilogue(acc, weight_gain, b_ptr, cols, col_ok, bias_gain, alpha, act_gain, ACT, HAS_BIAS)
    tl.store(y_ptr + rows[:, None] * out_features + cols[None, :], acc.to(y_ptr.dtype.element_ty),
             mask=row_ok[:, None] & col_ok[None, :])


@triton.jit
def _mapping_chain_kernel(
    x_ptr, w_first_ptr, w_rest_ptr, b_ptr, scratch_ptr, y_ptr,
    batch, in_features, features, num_layers, stride_x,
    weight_gain_first, weight_gain_rest, bias_gain, alpha, act_gain, eps,
    ACT: tl.constexpr, HAS_BIAS: tl.constexpr, NORMALIZE_INPUT: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """The whole FC chain of a mapping network for ``BLOCK_M`` rows of the batch, in one program.

    Layer 0 reads ``x`` (scaled per row by ``rsqrt(mean(x^2) + eps)`` if NORMALIZE_INPUT -- applied
    to the product, as the layer is linear); layer ``l`` reads layer ``l - 1``'s output. Outputs
    ping-pong between ``scratch`` and ``y`` so that the last layer lands in ``y``; a CTA barrier
    after each layer makes a layer's stores visible to the whole program before the next reads.

    Pointers:
        x_ptr: ``[batch, in_features]`` input (fp32/fp16, row stride ``stride_x``, unit column stride).
        w_first_ptr: fp32 ``[features, in_features]`` contiguous, layer 0's weight.
        w_rest_ptr: fp32 ``[num_layers - 1, features, features]`` contiguous, the other weights.
        b_ptr: fp32 ``[num_layers, features]`` contiguous biases (unused unless HAS_BIAS).
        scratch_ptr, y_ptr: fp32 ``[batch, features]`` contiguous; ``y`` receives the result.
    Sizes (i32): ``batch``, ``in_features``, ``features`` (D), ``num_layers`` (L >= 1).
    Scalars (fp32): ``weight_gain_first`` (layer 0), ``weight_gain_rest`` (layers 1..L-1),
        ``bias_gain``, ``alpha``, ``act_gain``, ``eps`` (pixel norm).
    Constexprs: ``ACT``, ``HAS_BIAS``, ``NORMALIZE_INPUT``, tile sizes (``BLOCK_N`` output columns and
        ``BLOCK_K`` reduction step per ``tl.dot``).
    Grid: ``(cdiv(batch, BLOCK_M),)`` -- each program owns its rows through every layer.
    """
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < batch
    scale = tl.full([BLOCK_M, 1], 1.0, dtype=tl.float32)
    if NORMALIZE_INPUT:
        sumsq = tl.zeros([BLOCK_M, BLOCK_K], dtype=tl.float32)
        for k0 in range(0, in_features, BLOCK_K):
            k = k0 + tl.arange(0, BLOCK_K)
            v = tl.load(x_ptr + rows[:, None] * stride_x + k[None, :],
                        mask=row_ok[:, None] & (k[None, :] < in_features), other=0.0).to(tl.float32)
            sumsq += v * v
        scale = tl.rsqrt(tl.sum(sumsq, axis=1) / in_features + eps)[:, None]
    scale = scale * weight_gain_first

    # Layer 0: x -> y when it is the last layer (odd number of hops to go), else -> scratch.
    if (num_layers - 1) % 2 == 0:
        dst_ptr = y_ptr
    else:
        dst_ptr = scratch_ptr
    for n0 in range(0, features, BLOCK_N):
        cols = n0 + tl.arange(0, BLOCK_N)
        col_ok = cols < features
        acc = _fc_tile(x_ptr, stride_x, w_first_ptr, in_features, rows, row_ok, cols, col_ok, in_features,
                       BLOCK_M, BLOCK_N, BLOCK_K)
        acc = _fc_epilogue(acc, scale, b_ptr, cols, col_ok, bias_gain, alpha, act_gain, ACT, HAS_BIAS)
        tl.store(dst_ptr + rows[:, None] * features + cols[None, :], acc,
                 mask=row_ok[:, None] & col_ok[None, :])
    tl.debug_barrier()

    # Layers 1..L-1; the weight and bias pointers advance one layer per trip.
    w_ptr = w_rest_ptr
    b_layer_ptr = b_ptr + features
    for layer in range(1, num_layers):
        if (num_layers - 1 - layer) % 2 == 0:
            src_ptr = scratch_ptr
            dst_ptr = y_ptr
        else:
            src_ptr = y_ptr
            dst_ptr = scratch_ptr
        for n0 in range(0, features, BLOCK_N):
            cols = n0 + tl.arange(0, BLOCK_N)
            col_ok = cols < features
            acc = _fc_tile(src_ptr, features, w_ptr, features, rows, row_ok, cols, col_ok, features,
                           BLOCK_M, BLOCK_N, BLOCK_K)
            acc = _fc_epilogue(acc, weight_gain_rest, b_layer_ptr, cols, col_ok, bias_gain,
                               alpha, act_gain, ACT, HAS_BIAS)
            tl.store(dst_ptr + rows[:, None] * features + cols[None, :], acc,
                     mask=row_ok[:, None] & col_ok[None, :])
        tl.debug_barrier()
        w_ptr += features * features
        b_layer_ptr += features


@triton.jit
def _truncate_kernel(
    w_ptr, w_avg_ptr, y_ptr,
    features, num_ws, cutoff, stride_w, psi,
    BLOCK_D: tl.constexpr,
):
    """Broadcast one row of ``w`` to ``num_ws`` rows of ``y``, lerping the first ``cutoff`` towards ``w_avg``.

    ``y[n, i, d] = w_avg[d] + psi * (w[n, d] - w_avg[d])`` for ``i < cutoff``, else ``w[n, d]``.
    Pointers: ``w_ptr`` ``[N, features]`` (fp32/fp16, row stride ``stride_w``, unit column stride);
    ``w_avg_ptr`` fp32 ``[features]``; ``y_ptr`` ``[N, num_ws, features]`` contiguous, ``w``'s dtype.
    Sizes (i32): ``features`` (D), ``num_ws``, ``cutoff`` (``0 <= cutoff <= num_ws``). ``psi`` fp32.
    Constexprs: ``BLOCK_D`` features per program. Grid: ``(N, cdiv(features, BLOCK_D))``.
    """
    n = tl.program_id(0).to(tl.int64)
    d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    ok = d < features
    w = tl.load(w_ptr + n * stride_w + d, mask=ok, other=0.0).to(tl.float32)
    avg = tl.load(w_avg_ptr + d, mask=ok, other=0.0)
    truncated = (avg + psi * (w - avg)).to(y_ptr.dtype.element_ty)
    kept = w.to(y_ptr.dtype.element_ty)
    y_row = y_ptr + n * num_ws * features + d
    for i in range(0, num_ws):
        tl.store(y_row + i * features, tl.where(i < cutoff, truncated, kept), mask=ok)


def _mapping_examples(dtype: str, device: torch.device) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """A StyleGAN2 mapping network's operands: ``z [8, 512]`` and eight ``[512, 512]`` layers."""
    x = torch.randn(8, 512, dtype=torch_dtype(dtype), device=device)
    weights = [torch.randn(512, 512, device=device) for _ in range(8)]
    biases = [torch.randn(512, device=device) for _ in range(8)]
    return x, weights, biases


def _pixel_norm_launches(dtype: str, device: torch.device) -> dict:
    """Example launches (compile gate): the mapping network's input (``z [8, 512]``)."""
    x = torch.randn(8, 512, dtype=torch_dtype(dtype), device=device)
    return {"z": lambda: _pixel_norm_launch(x, PIXEL_NORM_EPS)}


def _fully_connected_launches(dtype: str, device: torch.device) -> dict:
    """Example launches (compile gate): a mapping layer (lrelu) and a style affine (linear), 512 wide."""
    x, weights, biases = _mapping_examples(dtype, device)
    lrelu, linear = ACTIVATIONS["lrelu"].kernel_code, ACTIVATIONS["linear"].kernel_code
    gain = 1 / 512 ** 0.5
    return {
        "mapping-layer": lambda: _fully_connected_launch(x, weights[0], biases[0], gain * 0.01, 0.01, lrelu, 0.2,
                                                         2 ** 0.5),
        "affine": lambda: _fully_connected_launch(x, weights[1], biases[1], gain, 1.0, linear, 0.0, 1.0),
        "no-bias": lambda: _fully_connected_launch(x, weights[2], None, gain, 1.0, linear, 0.0, 1.0),
    }


def _mapping_chain_launches(dtype: str, device: torch.device) -> dict:
    """Example launches (compile gate): StyleGAN2's 8-layer mapping (pixel norm first), a conditional
    one (``[z, embed(c)]`` of 1024 features into the first layer) and StyleGAN1's (lr multiplier 0.01)."""
    x, weights, biases = _mapping_examples(dtype, device)
    xc = torch.randn(8, 1024, dtype=torch_dtype(dtype), device=device)
    first_c = torch.randn(512, 1024, device=device)
    lrelu = ACTIVATIONS["lrelu"].kernel_code
    gains = [0.01 / 512 ** 0.5] * 8
    return {
        "stylegan2": lambda: _mapping_chain_launch(x, weights, biases, gains, 0.01, lrelu, 0.2, 2 ** 0.5, True,
                                                   PIXEL_NORM_EPS),
        "conditional": lambda: _mapping_chain_launch(xc, [first_c, *weights[1:]], biases,
                                                     [0.01 / 1024 ** 0.5, *gains[1:]], 0.01, lrelu, 0.2,
                                                     2 ** 0.5, False, PIXEL_NORM_EPS),
    }


def _truncate_launches(dtype: str, device: torch.device) -> dict:
    """Example launches (compile gate): config F's 18 ``w`` rows, cutoff 8."""
    w = torch.randn(8, 512, dtype=torch_dtype(dtype), device=device)
    w_avg = torch.randn(512, device=device)
    return {"config-f": lambda: _truncate_launch(w, w_avg, 18, 0.7, 8)}


PIXEL_NORM_KERNEL = declare_kernel(
    "pixel_norm",
    _pixel_norm_kernel,
    configs=[
        KernelConfig(meta={"BLOCK_M": 4, "BLOCK_F": 256}, num_warps=4, num_stages=1),
        KernelConfig(meta={"BLOCK_M": 1, "BLOCK_F": 512}, num_warps=4, num_stages=1),
        KernelConfig(meta={"BLOCK_M": 16, "BLOCK_F": 128}, num_warps=4, num_stages=1),
    ],
    launches=_pixel_norm_launches,
    dtypes=("fp32", "fp16", "bf16"),
    description="pixel norm (2nd-moment normalisation) of the rows of a matrix",
)

FULLY_CONNECTED_KERNEL = declare_kernel(
    "fully_connected",
    _fully_connected_kernel,
    configs=[
        KernelConfig(meta={"BLOCK_M": 16, "BLOCK_N": 64, "BLOCK_K": 32}, num_warps=4, num_stages=2),
        KernelConfig(meta={"BLOCK_M": 32, "BLOCK_N": 64, "BLOCK_K": 32}, num_warps=8, num_stages=2),
        KernelConfig(meta={"BLOCK_M": 16, "BLOCK_N": 128, "BLOCK_K": 32}, num_warps=8, num_stages=3),
        KernelConfig(meta={"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 32}, num_warps=8, num_stages=3),
    ],
    launches=_fully_connected_launches,
    dtypes=("fp32", "fp16", "bf16"),
    description="equalised-lr linear layer with fused bias, activation and gain (fp32 ieee dot)",
)

MAPPING_CHAIN_KERNEL = declare_kernel(
    "mapping_chain",
    _mapping_chain_kernel,
    configs=[
        KernelConfig(meta={"BLOCK_M": 16, "BLOCK_N": 64, "BLOCK_K": 32}, num_warps=4, num_stages=1),
        KernelConfig(meta={"BLOCK_M": 32, "BLOCK_N": 64, "BLOCK_K": 32}, num_warps=8, num_stages=2),
    ],
    launches=_mapping_chain_launches,
    dtypes=("fp32", "fp16", "bf16"),
    description="pixel norm + every FC layer of the mapping network in one launch (small batch)",
)

TRUNCATE_KERNEL = declare_kernel(
    "truncate",
    _truncate_kernel,
    configs=[
        KernelConfig(meta={"BLOCK_D": 512}, num_warps=4, num_stages=1),
        KernelConfig(meta={"BLOCK_D": 128}, num_warps=1, num_stages=1),
        KernelConfig(meta={"BLOCK_D": 1024}, num_warps=8, num_stages=1),
    ],
    launches=_truncate_launches,
    dtypes=("fp32", "fp16", "bf16"),
    description="broadcast w to num_ws rows and lerp the first cutoff rows towards w_avg",
)


# --------------------------------------------------------------------------------------------
# Launchers (arguments validated by the public functions)
# --------------------------------------------------------------------------------------------


def _unit_column_stride(x: torch.Tensor) -> torch.Tensor:
    """``x [N, F]`` with unit column stride (the kernels take only a row stride)."""
    return x if x.stride(1) == 1 or x.shape[1] == 1 else x.contiguous()


def _pixel_norm_launch(x: torch.Tensor, eps: float) -> torch.Tensor:
    x = _unit_column_stride(x)
    rows, features = x.shape
    y = torch.empty([rows, features], dtype=x.dtype, device=x.device)
    if y.numel() == 0:
        return y
    config = launch_config(PIXEL_NORM_KERNEL, (("dtype", triton_dtype(x.dtype)), ("features", features)))
    block_f = min(config.meta["BLOCK_F"], triton.next_power_of_2(features))
    grid = (triton.cdiv(rows, config.meta["BLOCK_M"]),)
    _pixel_norm_kernel[grid](x, y, rows, features, x.stride(0), float(eps),
                             BLOCK_M=config.meta["BLOCK_M"], BLOCK_F=block_f,
                             num_warps=config.num_warps, num_stages=config.num_stages)
    return y


def _fully_connected_launch(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, weight_gain: float, bias_gain: float,
    act_code: int, alpha: float, act_gain: float,
) -> torch.Tensor:
    x = _unit_column_stride(x)
    batch, in_features = x.shape
    out_features = weight.shape[0]
    y = torch.empty([batch, out_features], dtype=x.dtype, device=x.device)
    if y.numel() == 0:
        return y
    weight = as_fp32_param(weight)
    config = launch_config(FULLY_CONNECTED_KERNEL, (("dtype", triton_dtype(x.dtype)), ("batch", batch),
                                                   ("cin", in_features), ("cout", out_features)))
    meta = config.meta
    grid = (triton.cdiv(batch, meta["BLOCK_M"]), triton.cdiv(out_features, meta["BLOCK_N"]))
    _fully_connected_kernel[grid](
        x, weight, as_fp32_param(bias) if bias is not None else weight, y,
        batch, in_features, out_features, x.stride(0), weight.stride(0),
        weight_gain, bias_gain, alpha, act_gain,
        ACT=act_code, HAS_BIAS=bias is not None, **meta,
        num_warps=config.num_warps, num_stages=config.num_stages,
    )
    return y


def _chain_is_fusable(batch: int, weights: Sequence[torch.Tensor], gains: Sequence[float]) -> bool:
    """One launch serves the chain when layers 1.. are all ``[D, D]`` with one gain and the batch is small."""
    features = weights[0].shape[0]
    return (batch <= CHAIN_MAX_BATCH and all(tuple(w.shape) == (features, features) for w in weights[1:])
            and len(set(gains[1:])) <= 1)


def _mapping_chain_launch(
    x: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor], gains: Sequence[float],
    bias_gain: float, act_code: int, alpha: float, act_gain: float, normalize_input: bool, eps: float,
) -> torch.Tensor:
    x = _unit_column_stride(x)
    batch, in_features = x.shape
    features = weights[0].shape[0]
    if not _chain_is_fusable(batch, weights, gains):
        x = x.float()
        if normalize_input:
            x = _pixel_norm_launch(x, eps)
        for i, weight in enumerate(weights):
            x = _fully_connected_launch(x, weight, biases[i] if biases else None, gains[i], bias_gain,
                                        act_code, alpha, act_gain)
        return x

    y = torch.empty([batch, features], dtype=torch.float32, device=x.device)
    if y.numel() == 0:
        return y
    scratch = torch.empty_like(y) if len(weights) > 1 else y
    w_first = as_fp32_param(weights[0])
    w_rest = torch.stack([w.to(torch.float32) for w in weights[1:]]) if len(weights) > 1 else w_first
    b_all = torch.stack([b.to(torch.float32) for b in biases]) if biases else w_first
    config = launch_config(MAPPING_CHAIN_KERNEL, (("dtype", triton_dtype(x.dtype)), ("batch", batch),
                                                 ("cin", in_features), ("features", features)))
    grid = (triton.cdiv(batch, config.meta["BLOCK_M"]),)
    _mapping_chain_kernel[grid](
        x, w_first, w_rest, b_all, scratch, y,
        batch, in_features, features, len(weights), x.stride(0),
        gains[0], gains[-1], bias_gain, alpha, act_gain, eps,
        ACT=act_code, HAS_BIAS=bool(biases), NORMALIZE_INPUT=normalize_input, **config.meta,
        num_warps=config.num_warps, num_stages=config.num_stages,
    )
    return y


def _truncate_launch(w: torch.Tensor, w_avg: torch.Tensor, num_ws: int, psi: float, cutoff: int) -> torch.Tensor:
    w = _unit_column_stride(w)
    batch, features = w.shape
    y = torch.empty([batch, num_ws, features], dtype=w.dtype, device=w.device)
    if y.numel() == 0:
        return y
    config = launch_config(TRUNCATE_KERNEL, (("dtype", triton_dtype(w.dtype)), ("features", features)))
    block_d = min(config.meta["BLOCK_D"], triton.next_power_of_2(features))
    grid = (batch, triton.cdiv(features, block_d))
    _truncate_kernel[grid](w, as_fp32_param(w_avg), y, features, num_ws, cutoff, w.stride(0), psi,
                           BLOCK_D=block_d, num_warps=config.num_warps, num_stages=config.num_stages)
    return y


# --------------------------------------------------------------------------------------------
# Custom ops (``torch.compile`` sees these as opaque nodes with the fake shapes below)
# --------------------------------------------------------------------------------------------


@torch.library.custom_op("sgtriton::pixel_norm", mutates_args=())
def _pixel_norm_op(x: torch.Tensor, eps: float) -> torch.Tensor:
    return _pixel_norm_launch(x, eps)


@_pixel_norm_op.register_fake
def _pixel_norm_fake(x, eps):
    return x.new_empty(x.shape)


@torch.library.custom_op("sgtriton::fully_connected", mutates_args=())
def _fully_connected_op(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, weight_gain: float, bias_gain: float,
    act: str, alpha: float, act_gain: float,
) -> torch.Tensor:
    return _fully_connected_launch(x, weight, bias, weight_gain, bias_gain, ACTIVATIONS[act].kernel_code,
                                   alpha, act_gain)


@_fully_connected_op.register_fake
def _fully_connected_fake(x, weight, bias, weight_gain, bias_gain, act, alpha, act_gain):
    return x.new_empty([x.shape[0], weight.shape[0]])


@torch.library.custom_op("sgtriton::mapping_chain", mutates_args=())
def _mapping_chain_op(
    x: torch.Tensor, weights: list[torch.Tensor], biases: list[torch.Tensor], weight_gains: list[float],
    bias_gain: float, act: str, alpha: float, act_gain: float, normalize_input: bool, eps: float,
) -> torch.Tensor:
    """``sgtriton::mapping_chain``: an empty ``biases`` list means no biases."""
    return _mapping_chain_launch(x, weights, biases, weight_gains, bias_gain, ACTIVATIONS[act].kernel_code,
                                 alpha, act_gain, normalize_input, eps)


@_mapping_chain_op.register_fake
def _mapping_chain_fake(x, weights, biases, weight_gains, bias_gain, act, alpha, act_gain, normalize_input, eps):
    return x.new_empty([x.shape[0], weights[-1].shape[0]], dtype=torch.float32)


@torch.library.custom_op("sgtriton::truncate", mutates_args=())
def _truncate_op(w: torch.Tensor, w_avg: torch.Tensor, num_ws: int, psi: float, cutoff: int) -> torch.Tensor:
    return _truncate_launch(w, w_avg, num_ws, psi, cutoff)


@_truncate_op.register_fake
def _truncate_fake(w, w_avg, num_ws, psi, cutoff):
    return w.new_empty([w.shape[0], num_ws, w.shape[1]])


# --------------------------------------------------------------------------------------------
# Argument checks and public functions
# --------------------------------------------------------------------------------------------


def _check_impl(impl: str) -> None:
    if impl not in ("ref", "triton"):
        raise ValueError(f"impl={impl!r}: expected 'ref' or 'triton'")


def _check_matrix(t: object, name: str, columns: int | None = None) -> None:
    """``t`` must be a 2-D floating-point tensor (with ``columns`` columns when given)."""
    if not isinstance(t, torch.Tensor) or t.ndim != 2 or (columns is not None and t.shape[1] != columns):
        got = list(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"{name}: expected a 2-D tensor [N, {columns if columns is not None else 'F'}], got {got}")
    if not t.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got dtype {t.dtype}")


def _check_fc_args(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    if not isinstance(weight, torch.Tensor) or weight.ndim != 2:
        got = list(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise ValueError(f"weight: expected a 2-D tensor [out, in], got {got}")
    _check_matrix(x, "x", weight.shape[1])
    if bias is not None and (not isinstance(bias, torch.Tensor) or list(bias.shape) != [weight.shape[0]]):
        got = list(bias.shape) if isinstance(bias, torch.Tensor) else type(bias).__name__
        raise ValueError(f"bias: expected shape [{weight.shape[0]}] (weight.shape[0]), got {got}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.device != x.device:
            raise ValueError(f"{name}: on {t.device}, expected x's device {x.device}")


def _check_chain_args(
    x: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor] | None,
    weight_gains: float | Sequence[float],
) -> list[float]:
    """Validate a chain's shapes (each layer reads the previous one's width); return the per-layer
    weight gains."""
    if isinstance(weights, torch.Tensor) or len(weights) == 0:
        raise ValueError("weights: expected a non-empty sequence of [out, in] tensors, one per layer")
    in_features = x.shape[1] if isinstance(x, torch.Tensor) and x.ndim == 2 else None
    for i, w in enumerate(weights):
        if not isinstance(w, torch.Tensor) or w.ndim != 2 or (in_features is not None and w.shape[1] != in_features):
            got = list(w.shape) if isinstance(w, torch.Tensor) else type(w).__name__
            raise ValueError(f"weights[{i}]: expected shape [out, {in_features}] (layer widths must chain), "
                             f"got {got}")
        in_features = w.shape[0]
    _check_matrix(x, "x", weights[0].shape[1])
    if biases:
        if len(biases) != len(weights):
            raise ValueError(f"biases: expected {len(weights)} tensors (one per layer) or None, got {len(biases)}")
        for i, b in enumerate(biases):
            features = weights[i].shape[0]
            if not isinstance(b, torch.Tensor) or list(b.shape) != [features]:
                got = list(b.shape) if isinstance(b, torch.Tensor) else type(b).__name__
                raise ValueError(f"biases[{i}]: expected shape [{features}], got {got}")
    gains = [float(weight_gains)] * len(weights) if isinstance(weight_gains, (int, float)) else \
        [float(g) for g in weight_gains]
    if len(gains) != len(weights):
        raise ValueError(f"weight_gains: expected a float or {len(weights)} floats (one per layer), got {len(gains)}")
    return gains


def _check_truncate_args(w: torch.Tensor, w_avg: torch.Tensor, num_ws: int, cutoff: int | None) -> None:
    _check_matrix(w, "w")
    if not isinstance(w_avg, torch.Tensor) or list(w_avg.shape) != [w.shape[1]]:
        got = list(w_avg.shape) if isinstance(w_avg, torch.Tensor) else type(w_avg).__name__
        raise ValueError(f"w_avg: expected shape [{w.shape[1]}] (w.shape[1]), got {got}")
    if isinstance(num_ws, bool) or not isinstance(num_ws, int) or num_ws < 1:
        raise ValueError(f"num_ws={num_ws!r}: expected an int >= 1")
    if cutoff is not None and (isinstance(cutoff, bool) or not isinstance(cutoff, int) or cutoff < 0):
        raise ValueError(f"cutoff={cutoff!r}: expected None or an int >= 0")


def normalize_2nd_moment(
    x: torch.Tensor, dim: int = 1, eps: float = PIXEL_NORM_EPS, impl: str = "ref"
) -> torch.Tensor:
    """Pixel norm ``x * rsqrt(mean(x^2, dim) + eps)``; same shape and dtype as ``x``.

    ``impl='triton'`` takes ``x [N, F]`` normalised along ``dim=1`` (the mapping network's use).
    """
    _check_impl(impl)
    if impl == "ref":
        return normalize_2nd_moment_ref(x, dim, eps)
    check_kernel_input(x, "x")
    _check_matrix(x, "x")
    if dim not in (1, -1):
        raise ValueError(f"dim={dim}: impl='triton' normalises the rows of x [N, F]; expected 1 or -1")
    return torch.ops.sgtriton.pixel_norm(x, float(eps))


def fully_connected(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    weight_gain: float,
    bias_gain: float,
    act: str = "linear",
    act_gain: float | None = None,
    alpha: float | None = None,
    impl: str = "ref",
) -> torch.Tensor:
    """``act(x @ (weight * weight_gain)^T + bias * bias_gain, alpha) * act_gain``.

    ``x [N, in]``, ``weight [out, in]``, ``bias [out]`` or ``None`` -> ``[N, out]`` in ``x.dtype``.
    ``act_gain``/``alpha`` default to the activation's own (``sqrt 2`` and 0.2 for lrelu).
    """
    _check_impl(impl)
    if impl == "ref":
        return fully_connected_ref(x, weight, bias, weight_gain, bias_gain, act, act_gain, alpha)
    _, alpha, act_gain = resolve_activation(act, alpha, act_gain)
    check_kernel_input(x, "x")
    _check_fc_args(x, weight, bias)
    return torch.ops.sgtriton.fully_connected(x, weight, bias, float(weight_gain), float(bias_gain), act,
                                              alpha, act_gain)


def mapping_chain(
    x: torch.Tensor,
    weights: Sequence[torch.Tensor],
    biases: Sequence[torch.Tensor] | None,
    weight_gains: float | Sequence[float],
    bias_gain: float,
    act: str = "lrelu",
    alpha: float | None = None,
    act_gain: float | None = None,
    normalize_input: bool = True,
    eps: float = PIXEL_NORM_EPS,
    impl: str = "ref",
) -> torch.Tensor:
    """The mapping network's layers: ``x [N, in]`` -> ``[N, D]`` in fp32 (fp64 for an fp64 ``ref`` input).

    ``h_0 = pixel_norm(x)`` if ``normalize_input`` else ``x``;
    ``h_{l+1} = act(h_l @ (weights[l] * weight_gains[l])^T + biases[l] * bias_gain, alpha) * act_gain``.

    ``weights``: ``L`` tensors ``[out_l, in_l]`` with ``in_0 = in`` and ``in_l = out_{l-1}``, ``D = out_{L-1}``
    (a mapping network's ``[layer, in]``, ``[layer, layer]`` ... ``[w_dim, layer]``); ``biases``: ``L``
    tensors ``[out_l]`` or ``None``; ``weight_gains``: one float for all layers or one per layer
    (NVlabs: ``lr / sqrt(in_l)``, times ``sqrt 2`` for StyleGAN1). ``impl='triton'`` runs all layers in
    one launch when layers ``1..L-1`` are ``[D, D]`` with one gain and ``N <= CHAIN_MAX_BATCH``, one
    launch per layer otherwise.
    """
    _check_impl(impl)
    if impl == "ref":
        return mapping_chain_ref(x, weights, biases, weight_gains, bias_gain, act, alpha, act_gain,
                                 normalize_input, eps)
    _, alpha, act_gain = resolve_activation(act, alpha, act_gain)
    check_kernel_input(x, "x")
    gains = _check_chain_args(x, weights, biases, weight_gains)
    for name, tensors in (("weights", weights), ("biases", biases or [])):
        for i, t in enumerate(tensors):
            if t.device != x.device:
                raise ValueError(f"{name}[{i}]: on {t.device}, expected x's device {x.device}")
    return torch.ops.sgtriton.mapping_chain(x, list(weights), list(biases or []), gains, float(bias_gain), act,
                                            alpha, act_gain, bool(normalize_input), float(eps))


def truncate(
    w: torch.Tensor,
    w_avg: torch.Tensor,
    num_ws: int,
    psi: float = 1.0,
    cutoff: int | None = None,
    impl: str = "ref",
) -> torch.Tensor:
    """Broadcast ``w [N, D]`` to ``ws [N, num_ws, D]`` and pull ``ws[:, :cutoff]`` towards ``w_avg [D]``.

    ``ws[:, i] = w_avg + psi * (w - w_avg)`` for ``i < cutoff`` (every ``i`` when ``cutoff`` is None),
    ``w`` elsewhere; ``psi = 1`` is the identity broadcast. Returns ``w``'s dtype.
    """
    _check_impl(impl)
    if impl == "ref":
        return truncate_ref(w, w_avg, num_ws, psi, cutoff)
    check_kernel_input(w, "w")
    _check_truncate_args(w, w_avg, num_ws, cutoff)
    if w_avg.device != w.device:
        raise ValueError(f"w_avg: on {w_avg.device}, expected w's device {w.device}")
    # psi == 1 is an exact broadcast, as in the reference (w_avg + 1 * (w - w_avg) may round).
    cut = 0 if psi == 1 else num_ws if cutoff is None else min(cutoff, num_ws)
    return torch.ops.sgtriton.truncate(w, w_avg, num_ws, float(psi), cut)


# --------------------------------------------------------------------------------------------
# Backward (differentiable PyTorch formulas; the mapping network is small)
# --------------------------------------------------------------------------------------------
#
# One layer, pre = x (W wg)^T + b bg, y = act(pre) * ag, and G = dL/dy:
#   g = bias_act_input_grad(G, y);  dx = g (W wg);  dW = g^T x wg;  db = bg sum_n g.


def _pixel_norm_setup_context(ctx, inputs, output):
    x, eps = inputs
    ctx.save_for_backward(x)
    ctx.eps = eps


def _pixel_norm_backward(ctx, grad):
    (x,) = ctx.saved_tensors
    return rms_norm_vjp(x, grad, [1], ctx.eps).to(x.dtype), None


_pixel_norm_op.register_autograd(_pixel_norm_backward, setup_context=_pixel_norm_setup_context)


def _fc_layer_vjp(x, weight, grad, y, weight_gain, bias_gain, act, alpha, act_gain, need_bias: bool):
    """``(dx, dW, db)`` of one layer from its input ``x``, output ``y`` and ``grad = dL/dy`` (fp32)."""
    g = bias_act_input_grad(grad.float(), y.float(), act, alpha, act_gain, None)
    w = weight.float() * weight_gain
    dx = g @ w
    dw = (g.transpose(0, 1) @ x.float()) * weight_gain
    db = g.sum(dim=0) * bias_gain if need_bias else None
    return dx, dw, db


def _fully_connected_setup_context(ctx, inputs, output):
    x, weight, bias, weight_gain, bias_gain, act, alpha, act_gain = inputs
    ctx.save_for_backward(x, weight, output)
    ctx.args = (None if bias is None else bias.dtype, weight_gain, bias_gain, act, alpha, act_gain)


def _fully_connected_backward(ctx, grad):
    x, weight, y = ctx.saved_tensors
    bias_dtype, weight_gain, bias_gain, act, alpha, act_gain = ctx.args
    dx, dw, db = _fc_layer_vjp(x, weight, grad, y, weight_gain, bias_gain, act, alpha, act_gain,
                               bias_dtype is not None)
    return (dx.to(x.dtype), dw.to(weight.dtype), None if db is None else db.to(bias_dtype),
            None, None, None, None, None)


_fully_connected_op.register_autograd(_fully_connected_backward, setup_context=_fully_connected_setup_context)


def _mapping_chain_setup_context(ctx, inputs, output):
    x, weights, biases, weight_gains, bias_gain, act, alpha, act_gain, normalize_input, eps = inputs
    ctx.save_for_backward(x, *weights, *biases)
    ctx.args = (len(weights), bool(biases), list(weight_gains), bias_gain, act, alpha, act_gain, normalize_input, eps)


def _mapping_chain_backward(ctx, grad):
    """Recompute every layer's activations (fp32), then walk the chain back one layer at a time."""
    num_layers, has_bias, gains, bias_gain, act, alpha, act_gain, normalize_input, eps = ctx.args
    x, *rest = ctx.saved_tensors
    weights, biases = rest[:num_layers], rest[num_layers:]
    h = [normalize_2nd_moment_ref(x.float(), eps=eps) if normalize_input else x.float()]
    for i, weight in enumerate(weights):
        h.append(fully_connected_ref(h[-1], weight.float(), biases[i].float() if has_bias else None, gains[i],
                                     bias_gain, act, act_gain, alpha))
    dweights, dbiases = [None] * num_layers, [None] * num_layers
    g = grad.float()
    for i in reversed(range(num_layers)):
        g, dw, db = _fc_layer_vjp(h[i], weights[i], g, h[i + 1], gains[i], bias_gain, act, alpha, act_gain,
                                  has_bias)
        dweights[i] = dw.to(weights[i].dtype)
        dbiases[i] = None if db is None else db.to(biases[i].dtype)
    dx = rms_norm_vjp(x, g, [1], eps) if normalize_input else g
    return dx.to(x.dtype), dweights, dbiases if has_bias else [], None, None, None, None, None, None, None


_mapping_chain_op.register_autograd(_mapping_chain_backward, setup_context=_mapping_chain_setup_context)


def _truncate_setup_context(ctx, inputs, output):
    w, w_avg, num_ws, psi, cutoff = inputs
    ctx.args = (psi, cutoff, w_avg.dtype)


def _truncate_backward(ctx, grad):
    """``dw = psi sum_{i < cutoff} G_i + sum_{i >= cutoff} G_i``; ``dw_avg = (1 - psi) sum_{n, i < cutoff} G``."""
    psi, cutoff, avg_dtype = ctx.args
    dw = grad[:, :cutoff].sum(dim=1) * psi + grad[:, cutoff:].sum(dim=1)
    dw_avg = (grad[:, :cutoff].float().sum(dim=[0, 1]) * (1 - psi)).to(avg_dtype)
    return dw, dw_avg, None, None, None


_truncate_op.register_autograd(_truncate_backward, setup_context=_truncate_setup_context)
