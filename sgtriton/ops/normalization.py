"""Per-sample, per-channel feature-map normalisations used by the StyleGAN1 and revised blocks.

For ``x [N, C, H, W]`` and statistics over the ``H*W`` positions of each ``(n, c)``:

* ``instance_norm``:  ``(x - mean) * rsqrt(mean((x - mean)^2) + eps)`` (biased variance), eps 1e-8.
* ``rms_normalize``:  ``x * rsqrt(mean(x^2) + eps)`` -- "std without mean subtraction", eps 1e-8
  (the revised architecture's normalisation, StyleGAN2 Fig. 2c).
* ``adain_epilogue``: StyleGAN1's layer epilogue ::

      x = x + noise * noise_weight[c]      (noise [N or 1, 1, H, W], noise_weight [C])
      x = x + bias[c]
      x = lrelu(x, 0.2)
      x = instance_norm(x)
      x = x * (style[:, :C] + 1) + style[:, C:]      (style [N, 2C], from the affine of w)

Implementations: ``impl='ref'`` (the functions ``*_ref`` below, PyTorch) and ``impl='triton'``:
:func:`_adain_epilogue_kernel` and :func:`_rms_normalize_kernel` (one program per ``(n, c)`` plane,
looping over ``H*W`` in blocks; statistics in fp32), registered as ``sgtriton::adain_epilogue`` and
``sgtriton::rms_normalize``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from sgtriton.ops._gradients import rms_norm_vjp
from sgtriton.ops._runtime import KernelConfig, KernelSpec, declare_kernel, launch_config, torch_dtype, triton_dtype
from sgtriton.ops._triton_utils import as_fp32_param, check_kernel_input
from sgtriton.ops.bias_act import ACTIVATIONS, activate, bias_act_input_grad, bias_act_ref, resolve_activation

NORM_EPS = 1e-8
ADAIN_ALPHA = 0.2


def instance_norm_ref(x: torch.Tensor, eps: float = NORM_EPS) -> torch.Tensor:
    """Instance normalisation over the spatial axes of ``[N, C, H, W]``."""
    x = x - x.mean(dim=[2, 3], keepdim=True)
    return x * (x.square().mean(dim=[2, 3], keepdim=True) + eps).rsqrt()


def rms_normalize_ref(x: torch.Tensor, eps: float = NORM_EPS) -> torch.Tensor:
    """Divide each ``(n, c)`` feature map by its root-mean-square."""
    return x * (x.square().mean(dim=[2, 3], keepdim=True) + eps).rsqrt()


def adain_epilogue_ref(
    x: torch.Tensor,
    noise: torch.Tensor | None,
    noise_weight: torch.Tensor | None,
    bias: torch.Tensor,
    style: torch.Tensor,
    alpha: float = ADAIN_ALPHA,
    eps: float = NORM_EPS,
) -> torch.Tensor:
    """StyleGAN1 layer epilogue; ``x [N, C, H, W]``, ``style [N, 2C]`` -> ``[N, C, H, W]``."""
    if x.ndim != 4:
        raise ValueError(f"x: expected [N, C, H, W], got shape {list(x.shape)}")
    n, c = x.shape[:2]
    if list(style.shape) != [n, 2 * c]:
        raise ValueError(f"style: expected shape [{n}, {2 * c}], got {list(style.shape)}")
    if noise is not None and noise_weight is not None:
        x = x + noise.to(x.dtype) * noise_weight.to(x.dtype).reshape(1, -1, 1, 1)
    x = x + bias.to(x.dtype).reshape(1, -1, 1, 1)
    x = F.leaky_relu(x, alpha)
    x = instance_norm_ref(x, eps)
    style = style.to(x.dtype)
    return x * (style[:, :c, None, None] + 1) + style[:, c:, None, None]


# --------------------------------------------------------------------------------------------
# Triton kernels
# --------------------------------------------------------------------------------------------


@triton.jit
def _adain_pre(x_plane, noise_plane, offs, mask, noise_weight, bias, alpha, HAS_NOISE: tl.constexpr):
    """``lrelu(x + noise * noise_weight + bias, alpha)`` in fp32 for one block of a plane (0 where masked)."""
    v = tl.load(x_plane + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_NOISE:
        v += tl.load(noise_plane + offs, mask=mask, other=0.0).to(tl.float32) * noise_weight
    v = activate(v + bias, alpha, 2)
    return tl.where(mask, v, 0.0)


@triton.jit
def _adain_epilogue_kernel(
    x_ptr, noise_ptr, noise_weight_ptr, bias_ptr, style_ptr, y_ptr,
    channels, hw, stride_noise_n, stride_style_n, alpha, eps,
    HAS_NOISE: tl.constexpr, BLOCK: tl.constexpr,
):
    """StyleGAN1's layer epilogue for one ``(n, c)`` plane of ``hw`` positions.

    ``t = lrelu(x + noise * noise_weight[c] + bias[c], alpha)``; ``y = (t - mean(t)) * rsqrt(var(t) + eps)
    * (style[n, c] + 1) + style[n, C + c]`` with the biased variance over the plane. Pass 1 loops over
    the plane in ``BLOCK`` steps and merges per-block (count, mean, M2) with Chan's formula (no
    ``E[t^2] - E[t]^2`` cancellation); pass 2 recomputes ``t`` and writes ``y``.

    Pointers:
        x_ptr: ``[N, C, H, W]`` contiguous (fp32/fp16); ``y_ptr`` likewise, same dtype.
        noise_ptr: ``[N or 1, H*W]`` noise (fp32/fp16), row stride ``stride_noise_n`` (0 when shared
            by the batch), unit stride along ``H*W`` (unused unless HAS_NOISE).
        noise_weight_ptr: fp32 ``[C]`` (unused unless HAS_NOISE); bias_ptr: fp32 ``[C]``.
        style_ptr: fp32 ``[N, 2C]`` (scale then bias), row stride ``stride_style_n``, unit column stride.
    Sizes (i32): ``channels`` (C), ``hw`` (H*W). Scalars (fp32): ``alpha`` (lrelu slope), ``eps``.
    Constexprs: ``HAS_NOISE``; ``BLOCK`` positions per loop step.
    Grid: ``(N * C,)``.
    """
    plane = tl.program_id(0)
    n = plane // channels
    c = plane % channels
    x_plane = x_ptr + plane.to(tl.int64) * hw
    y_plane = y_ptr + plane.to(tl.int64) * hw
    noise_plane = noise_ptr + n.to(tl.int64) * stride_noise_n
    noise_weight = 0.0
    if HAS_NOISE:
        noise_weight = tl.load(noise_weight_ptr + c)
    bias = tl.load(bias_ptr + c)

    count = 0.0
    mean = 0.0
    m2 = 0.0
    for start in range(0, hw, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        mask = offs < hw
        t = _adain_pre(x_plane, noise_plane, offs, mask, noise_weight, bias, alpha, HAS_NOISE)
        block_count = tl.minimum(hw - start, BLOCK).to(tl.float32)
        block_mean = tl.sum(t, axis=0) / block_count
        d = tl.where(mask, t - block_mean, 0.0)
        block_m2 = tl.sum(d * d, axis=0)
        total = count + block_count
        delta = block_mean - mean
        mean += delta * (block_count / total)
        m2 += block_m2 + delta * delta * (count * block_count / total)
        count = total

    rstd = tl.rsqrt(m2 / hw + eps)
    scale = rstd * (tl.load(style_ptr + n * stride_style_n + c) + 1.0)
    shift = tl.load(style_ptr + n * stride_style_n + channels + c)
    for start in range(0, hw, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        mask = offs < hw
        t = _adain_pre(x_plane, noise_plane, offs, mask, noise_weight, bias, alpha, HAS_NOISE)
        tl.store(y_plane + offs, ((t - mean) * scale + shift).to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _rms_normalize_kernel(
    x_ptr, noise_ptr, noise_strength_ptr, bias_ptr, y_ptr,
    channels, hw, stride_noise_n, eps, alpha, gain, clamp,
    HAS_NOISE: tl.constexpr, HAS_BIAS: tl.constexpr, ACT: tl.constexpr, USE_CLAMP: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """RMS normalisation of one ``(n, c)`` plane of ``hw`` positions, with the revised layer's epilogue.

    ``y = clamp(act(x * rsqrt(mean(x^2) + eps) + strength * noise + bias[c], alpha) * gain, +-clamp)``;
    with every flag off this is plain ``x * rsqrt(mean(x^2) + eps)``.

    Pointers:
        x_ptr / y_ptr: ``[N, C, H, W]`` contiguous (fp32/fp16, same dtype).
        noise_ptr: ``[N or 1, H*W]`` noise, row stride ``stride_noise_n`` (0 when shared by the batch),
            unit stride along ``H*W`` (unused unless HAS_NOISE).
        noise_strength_ptr: fp32 ``[1]``, the noise scale (a tensor, so no host sync; unused unless HAS_NOISE).
        bias_ptr: fp32 ``[C]`` (unused unless HAS_BIAS).
    Sizes (i32): ``channels`` (C), ``hw`` (H*W). Scalars (fp32): ``eps``, ``alpha``, ``gain``, ``clamp``.
    Constexprs: ``HAS_NOISE``, ``HAS_BIAS``, ``ACT`` (an activation ``kernel_code``), ``USE_CLAMP``;
    ``BLOCK`` positions per loop step (sum of squares kept per lane, reduced once).
    Grid: ``(N * C,)``.
    """
    plane = tl.program_id(0)
    n = plane // channels
    c = plane % channels
    x_plane = x_ptr + plane.to(tl.int64) * hw
    y_plane = y_ptr + plane.to(tl.int64) * hw
    noise_plane = noise_ptr + n.to(tl.int64) * stride_noise_n
    sumsq = tl.zeros([BLOCK], dtype=tl.float32)
    for start in range(0, hw, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        v = tl.load(x_plane + offs, mask=offs < hw, other=0.0).to(tl.float32)
        sumsq += v * v
    rstd = tl.rsqrt(tl.sum(sumsq, axis=0) / hw + eps)
    bias = 0.0
    if HAS_BIAS:
        bias = tl.load(bias_ptr + c)
    strength = 0.0
    if HAS_NOISE:
        strength = tl.load(noise_strength_ptr)
    for start in range(0, hw, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        mask = offs < hw
        v = tl.load(x_plane + offs, mask=mask, other=0.0).to(tl.float32) * rstd
        if HAS_NOISE:
            v += tl.load(noise_plane + offs, mask=mask, other=0.0).to(tl.float32) * strength
        v = activate(v + bias, alpha, ACT) * gain
        if USE_CLAMP:
            v = tl.minimum(tl.maximum(v, -clamp), clamp)
        tl.store(y_plane + offs, v.to(y_ptr.dtype.element_ty), mask=mask)


def _adain_epilogue_launches(dtype: str, device: torch.device) -> dict:
    """Example launches (compile gate): a StyleGAN1 512-channel 32x32 layer, with and without noise."""
    x = torch.randn(2, 512, 32, 32, dtype=torch_dtype(dtype), device=device)
    noise = torch.randn(2, 1, 32, 32, dtype=torch_dtype(dtype), device=device)
    weight, bias, style = torch.randn(512, device=device), torch.randn(512, device=device), \
        torch.randn(2, 1024, device=device)
    return {
        "noise": lambda: _adain_epilogue_launch(x, noise, weight, bias, style, 0.2, NORM_EPS),
        "no-noise": lambda: _adain_epilogue_launch(x, None, None, bias, style, 0.2, NORM_EPS),
    }


def _rms_normalize_launches(dtype: str, device: torch.device) -> dict:
    """Example launches (compile gate): the revised block's 512-channel 32x32 epilogue (noise, bias,
    lrelu, clamp), without clamp, without noise, and the bare normalisation."""
    x = torch.randn(2, 512, 32, 32, dtype=torch_dtype(dtype), device=device)
    noise = torch.randn(2, 1, 32, 32, dtype=torch_dtype(dtype), device=device)
    strength, bias = torch.full([1], 0.1, device=device), torch.randn(512, device=device)
    gain = 2 ** 0.5
    return {
        "full": lambda: _rms_normalize_launch(x, noise, strength, bias, "lrelu", 0.2, gain, 256.0, NORM_EPS),
        "no-clamp": lambda: _rms_normalize_launch(x, noise, strength, bias, "lrelu", 0.2, gain, None, NORM_EPS),
        "no-noise": lambda: _rms_normalize_launch(x, None, None, bias, "lrelu", 0.2, gain, 256.0, NORM_EPS),
        "plain": lambda: _rms_normalize_launch(x, None, None, None, "linear", 0.0, 1.0, None, NORM_EPS),
    }


#: Tuning space of the one-plane-a-program kernels (first = default): positions per loop step.
PLANE_CONFIGS = (
    KernelConfig(meta={"BLOCK": 1024}, num_warps=4, num_stages=1),
    KernelConfig(meta={"BLOCK": 2048}, num_warps=8, num_stages=1),
    KernelConfig(meta={"BLOCK": 4096}, num_warps=8, num_stages=1),
    KernelConfig(meta={"BLOCK": 256}, num_warps=2, num_stages=1),
)

ADAIN_EPILOGUE_KERNEL = declare_kernel(
    "adain_epilogue",
    _adain_epilogue_kernel,
    configs=PLANE_CONFIGS,
    launches=_adain_epilogue_launches,
    dtypes=("fp32", "fp16", "bf16"),
    description="StyleGAN1 epilogue: noise, bias, lrelu, instance norm, style scale/bias; one plane a program",
)

RMS_NORMALIZE_KERNEL = declare_kernel(
    "rms_normalize",
    _rms_normalize_kernel,
    configs=PLANE_CONFIGS,
    launches=_rms_normalize_launches,
    dtypes=("fp32", "fp16", "bf16"),
    description="divide each (n, c) plane by its RMS (+ noise, bias, act, gain, clamp); one plane a program",
)


# --------------------------------------------------------------------------------------------
# Launchers and custom ops
# --------------------------------------------------------------------------------------------


def _plane_block(spec: KernelSpec, x: torch.Tensor, hw: int) -> tuple[int, KernelConfig]:
    """The config for planes of ``hw`` positions, with its block cut down to a small plane's size."""
    config = launch_config(spec, (("dtype", triton_dtype(x.dtype)), ("spatial", min(hw, 1 << 20))))
    return min(config.meta["BLOCK"], triton.next_power_of_2(hw)), config


def _adain_epilogue_launch(
    x: torch.Tensor, noise: torch.Tensor | None, noise_weight: torch.Tensor | None, bias: torch.Tensor,
    style: torch.Tensor, alpha: float, eps: float,
) -> torch.Tensor:
    x = x.contiguous()
    n, c, h, w = x.shape
    hw = h * w
    y = torch.empty_like(x)
    if y.numel() == 0:
        return y
    has_noise = noise is not None and noise_weight is not None
    if has_noise:
        # [H, W], [1, 1, H, W] or [N, 1, H, W] -> rows of H*W; one shared row gets stride 0.
        noise = noise.reshape(-1, hw).contiguous()
        noise_stride = 0 if noise.shape[0] == 1 else hw
    else:
        noise, noise_stride = x, 0
    style = as_fp32_param(style)
    block, config = _plane_block(ADAIN_EPILOGUE_KERNEL, x, hw)
    _adain_epilogue_kernel[(n * c,)](
        x, noise, as_fp32_param(noise_weight) if has_noise else style, as_fp32_param(bias), style, y,
        c, hw, noise_stride, style.stride(0), float(alpha), float(eps),
        HAS_NOISE=has_noise, BLOCK=block, num_warps=config.num_warps, num_stages=config.num_stages,
    )
    return y


def _rms_normalize_launch(
    x: torch.Tensor, noise: torch.Tensor | None, noise_strength: torch.Tensor | None, bias: torch.Tensor | None,
    act: str, alpha: float, gain: float, clamp: float | None, eps: float,
) -> torch.Tensor:
    x = x.contiguous()
    n, c, h, w = x.shape
    y = torch.empty_like(x)
    if y.numel() == 0:
        return y
    has_noise = noise is not None
    if has_noise:
        noise = noise.reshape(-1, h * w).contiguous()
        noise_stride = 0 if noise.shape[0] == 1 else h * w
        strength = as_fp32_param(noise_strength.reshape(1)) if noise_strength is not None else \
            torch.ones([1], dtype=torch.float32, device=x.device)
    else:
        noise, noise_stride, strength = x, 0, x
    _, config = _plane_block(RMS_NORMALIZE_KERNEL, x, h * w)
    block = min(config.meta["BLOCK"], triton.next_power_of_2(h * w))
    _rms_normalize_kernel[(n * c,)](
        x, noise, strength, as_fp32_param(bias) if bias is not None else x, y, c, h * w, noise_stride,
        float(eps), float(alpha), float(gain), -1.0 if clamp is None else float(clamp),
        HAS_NOISE=has_noise, HAS_BIAS=bias is not None,
        ACT=ACTIVATIONS[act].kernel_code, USE_CLAMP=clamp is not None and clamp >= 0,
        BLOCK=block, num_warps=config.num_warps, num_stages=config.num_stages,
    )
    return y


@torch.library.custom_op("sgtriton::adain_epilogue", mutates_args=())
def _adain_epilogue_op(
    x: torch.Tensor, noise: torch.Tensor | None, noise_weight: torch.Tensor | None, bias: torch.Tensor,
    style: torch.Tensor, alpha: float, eps: float,
) -> torch.Tensor:
    return _adain_epilogue_launch(x, noise, noise_weight, bias, style, alpha, eps)


@_adain_epilogue_op.register_fake
def _adain_epilogue_fake(x, noise, noise_weight, bias, style, alpha, eps):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.custom_op("sgtriton::rms_normalize", mutates_args=())
def _rms_normalize_op(
    x: torch.Tensor, noise: torch.Tensor | None, noise_strength: torch.Tensor | None, bias: torch.Tensor | None,
    act: str, alpha: float, gain: float, clamp: float | None, eps: float,
) -> torch.Tensor:
    return _rms_normalize_launch(x, noise, noise_strength, bias, act, alpha, gain, clamp, eps)


@_rms_normalize_op.register_fake
def _rms_normalize_fake(x, noise, noise_strength, bias, act, alpha, gain, clamp, eps):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


# --------------------------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------------------------


def _check_impl(impl: str) -> None:
    if impl not in ("ref", "triton"):
        raise ValueError(f"impl={impl!r}: expected 'ref' or 'triton'")


def _check_feature_map(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        got = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x: expected [N, C, H, W], got {got}")


def _check_adain_args(
    x: torch.Tensor, noise: torch.Tensor | None, noise_weight: torch.Tensor | None, bias: torch.Tensor,
    style: torch.Tensor,
) -> None:
    """Shapes the Triton path accepts (the reference relies on broadcasting for the same ones)."""
    _check_feature_map(x)
    n, c, h, w = x.shape
    for name, t in (("bias", bias), ("noise_weight", noise_weight)):
        if t is not None and (not isinstance(t, torch.Tensor) or list(t.shape) != [c]):
            got = list(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{name}: expected shape [{c}] (x.shape[1]), got {got}")
    if not isinstance(style, torch.Tensor) or list(style.shape) != [n, 2 * c]:
        got = list(style.shape) if isinstance(style, torch.Tensor) else type(style).__name__
        raise ValueError(f"style: expected shape [{n}, {2 * c}], got {got}")
    if noise is not None:
        check_kernel_input(noise, "noise")
        if list(noise.shape) not in ([h, w], [1, 1, h, w], [n, 1, h, w]):
            raise ValueError(f"noise: expected shape [{h}, {w}], [1, 1, {h}, {w}] or [{n}, 1, {h}, {w}], "
                             f"got {list(noise.shape)}")
    for name, t in (("noise", noise), ("noise_weight", noise_weight), ("bias", bias), ("style", style)):
        if t is not None and t.device != x.device:
            raise ValueError(f"{name}: on {t.device}, expected x's device {x.device}")


def adain_epilogue(
    x: torch.Tensor,
    noise: torch.Tensor | None,
    noise_weight: torch.Tensor | None,
    bias: torch.Tensor,
    style: torch.Tensor,
    alpha: float = ADAIN_ALPHA,
    eps: float = NORM_EPS,
    impl: str = "ref",
) -> torch.Tensor:
    """StyleGAN1's layer epilogue (module docstring): noise, bias, lrelu, instance norm, AdaIN style.

    ``x [N, C, H, W]``; ``noise`` ``[H, W]``, ``[1, 1, H, W]``, ``[N, 1, H, W]`` or ``None``;
    ``noise_weight [C]`` or ``None`` (noise is added only when both are given); ``bias [C]``;
    ``style [N, 2C]`` (scale, then bias). Returns ``[N, C, H, W]`` in ``x.dtype``.
    ``impl='triton'`` runs one fused kernel (one program per ``(n, c)`` plane, fp32 statistics).
    """
    _check_impl(impl)
    if impl == "ref":
        return adain_epilogue_ref(x, noise, noise_weight, bias, style, alpha, eps)
    check_kernel_input(x, "x")
    _check_adain_args(x, noise, noise_weight, bias, style)
    return torch.ops.sgtriton.adain_epilogue(x, noise, noise_weight, bias, style, float(alpha), float(eps))


def rms_normalize(x: torch.Tensor, eps: float = NORM_EPS, impl: str = "ref") -> torch.Tensor:
    """``x * rsqrt(mean(x^2 over H, W) + eps)`` per ``(n, c)``; ``x [N, C, H, W]`` -> same shape and dtype."""
    return rms_normalize_epilogue(x, act="linear", gain=1.0, eps=eps, impl=impl)


def rms_normalize_epilogue_ref(
    x: torch.Tensor, noise: torch.Tensor | None = None, noise_strength: torch.Tensor | float | None = None,
    bias: torch.Tensor | None = None, act: str = "linear", alpha: float | None = None,
    gain: float | None = None, clamp: float | None = None, eps: float = NORM_EPS,
) -> torch.Tensor:
    """Reference of :func:`rms_normalize_epilogue` from :func:`rms_normalize_ref` and ``bias_act_ref``."""
    x = rms_normalize_ref(x, eps)
    if noise is not None:
        x = x + (noise if noise_strength is None else noise * noise_strength).to(x.dtype)
    return bias_act_ref(x, None if bias is None else bias.to(x.dtype), act=act, alpha=alpha, gain=gain, clamp=clamp)


def rms_normalize_epilogue(
    x: torch.Tensor, noise: torch.Tensor | None = None, noise_strength: torch.Tensor | float | None = None,
    bias: torch.Tensor | None = None, act: str = "linear", alpha: float | None = None,
    gain: float | None = None, clamp: float | None = None, eps: float = NORM_EPS, impl: str = "ref",
) -> torch.Tensor:
    """The revised layer after its conv (StyleGAN2 Fig. 2c: bias and noise outside the style block)::

        y = clamp(act(x * rsqrt(mean_{h,w}(x^2) + eps) + noise_strength * noise + bias[c], alpha) * gain, +-clamp)

    ``x [N, C, H, W]``; ``noise`` ``[H, W]``, ``[1, 1, H, W]``, ``[N, 1, H, W]`` or ``None``; ``bias [C]`` or
    ``None``; ``noise_strength`` a scalar tensor or float (``None`` = 1); ``act``/``alpha``/``gain``/``clamp``
    as in :func:`~sgtriton.ops.bias_act.bias_act`. Returns
    ``x.shape`` in ``x.dtype``. ``impl='triton'``: one kernel, one program per ``(n, c)`` plane.
    """
    _check_impl(impl)
    _, alpha, gain = resolve_activation(act, alpha, gain)
    if impl == "ref":
        return rms_normalize_epilogue_ref(x, noise, noise_strength, bias, act, alpha, gain, clamp, eps)
    check_kernel_input(x, "x")
    _check_feature_map(x)
    n, c, h, w = x.shape
    if noise is not None:
        check_kernel_input(noise, "noise")
        if list(noise.shape) not in ([h, w], [1, 1, h, w], [n, 1, h, w]):
            raise ValueError(f"noise: expected shape [{h}, {w}], [1, 1, {h}, {w}] or [{n}, 1, {h}, {w}], "
                             f"got {list(noise.shape)}")
    if bias is not None and list(bias.shape) != [c]:
        raise ValueError(f"bias: expected shape [{c}] (x.shape[1]), got {list(bias.shape)}")
    if noise_strength is not None and not isinstance(noise_strength, torch.Tensor):
        noise_strength = torch.full([1], float(noise_strength), dtype=torch.float32, device=x.device)
    return torch.ops.sgtriton.rms_normalize(x, noise, noise_strength, bias, act, float(alpha), float(gain),
                                            clamp, float(eps))


# --------------------------------------------------------------------------------------------
# Backward (differentiable PyTorch formulas: these ops are memory-bound and cheap to recompute)
# --------------------------------------------------------------------------------------------


def _adain_epilogue_setup_context(ctx, inputs, output):
    x, noise, noise_weight, bias, style, alpha, eps = inputs
    ctx.save_for_backward(x, noise, noise_weight, bias, style)
    ctx.args = (alpha, eps)


def _adain_epilogue_backward(ctx, grad):
    """Recompute ``t = lrelu(x + noise*nw + bias)``, ``u = instance_norm(t)`` in fp32, then
    ``du = grad * (1 + gamma)``; ``dt = r (du - mean du) - (t - mu) r^3 mean(du (t - mu))``."""
    x, noise, noise_weight, bias, style = ctx.saved_tensors
    alpha, eps = ctx.args
    needs = ctx.needs_input_grad
    c = x.shape[1]
    has_noise = noise is not None and noise_weight is not None
    pre = x.float() + bias.float().reshape(1, -1, 1, 1)
    if has_noise:
        pre = pre + noise.float() * noise_weight.float().reshape(1, -1, 1, 1)
    t = torch.where(pre > 0, pre, pre * alpha)
    centred = t - t.mean(dim=[2, 3], keepdim=True)
    r = (centred.square().mean(dim=[2, 3], keepdim=True) + eps).rsqrt()
    u = centred * r
    gf = grad.float()
    sf = style.float()
    dstyle = torch.cat([(gf * u).sum(dim=[2, 3]), gf.sum(dim=[2, 3])], dim=1).to(style.dtype) if needs[4] else None
    du = gf * (sf[:, :c, None, None] + 1)
    dt = r * (du - du.mean(dim=[2, 3], keepdim=True)) - centred * r.pow(3) * (du * centred).mean(
        dim=[2, 3], keepdim=True)
    dpre = torch.where(pre > 0, dt, dt * alpha)
    dx = dpre.to(x.dtype) if needs[0] else None
    dbias = dpre.sum(dim=[0, 2, 3]).to(bias.dtype) if needs[3] else None
    dnoise = dnoise_weight = None
    if has_noise:
        if needs[1]:
            dnoise = (dpre * noise_weight.float().reshape(1, -1, 1, 1)).sum_to_size(noise.shape).to(noise.dtype)
        if needs[2]:
            dnoise_weight = (dpre * noise.float()).sum(dim=[0, 2, 3]).to(noise_weight.dtype)
    return dx, dnoise, dnoise_weight, dbias, dstyle, None, None


_adain_epilogue_op.register_autograd(_adain_epilogue_backward, setup_context=_adain_epilogue_setup_context)


def _rms_normalize_setup_context(ctx, inputs, output):
    x, noise, noise_strength, bias, act, alpha, gain, clamp, eps = inputs
    ctx.save_for_backward(x, noise, noise_strength, output)
    ctx.args = (None if bias is None else bias.dtype, act, alpha, gain, clamp, eps)


def _rms_normalize_backward(ctx, grad):
    """``dv`` through the epilogue from the output; ``dx`` = :func:`rms_norm_vjp` of ``dv``."""
    x, noise, strength, y = ctx.saved_tensors
    bias_dtype, act, alpha, gain, clamp, eps = ctx.args
    needs = ctx.needs_input_grad
    dv = bias_act_input_grad(grad, y, act, alpha, gain, clamp).float()
    dx = rms_norm_vjp(x, dv, [2, 3], eps).to(x.dtype) if needs[0] else None
    dbias = dv.sum(dim=[0, 2, 3]).to(bias_dtype) if bias_dtype is not None and needs[3] else None
    dnoise = dstrength = None
    if noise is not None:
        n, c, h, w = x.shape
        noise_b = noise.float().reshape(-1, 1, h, w)
        scale = 1.0 if strength is None else strength.float().reshape(())
        if needs[1]:
            dnoise = (dv * scale).sum(dim=1, keepdim=True).sum_to_size(noise_b.shape).reshape(noise.shape)
            dnoise = dnoise.to(noise.dtype)
        if strength is not None and needs[2]:
            dstrength = (dv * noise_b).sum().reshape(strength.shape).to(strength.dtype)
    return dx, dnoise, dstrength, dbias, None, None, None, None, None


_rms_normalize_op.register_autograd(_rms_normalize_backward, setup_context=_rms_normalize_setup_context)
