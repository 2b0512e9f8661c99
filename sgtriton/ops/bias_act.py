"""Fused bias + activation + gain + clamp (``bias_act``).

Maths, applied elementwise with ``b`` broadcast along ``dim``::

    y = clamp(act(x + b, alpha) * gain, -clamp, +clamp)

in exactly this order (NVlabs ``bias_act``). ``gain`` defaults to the activation's own gain
(``sqrt(2)`` for ``lrelu``/``relu``, 1 for ``linear``); ``clamp=None`` (or negative) disables clamping.

Shapes: ``x`` any shape ``[..., C at dim, ...]``; ``b`` ``[C]`` or ``None``; returns ``x.shape``.

Implementations: ``impl='ref'`` runs the steps as separate PyTorch ops in ``x.dtype``;
``impl='triton'`` runs :func:`_bias_act_kernel` (registered as ``sgtriton::bias_act``), which
loads fp16/fp32 values, does all four steps in fp32 and rounds once on store, like NVlabs' CUDA op.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from sgtriton.ops._runtime import KernelConfig, declare_kernel, launch_config, torch_dtype, triton_dtype
from sgtriton.ops._triton_utils import as_fp32_param, check_kernel_input


@dataclass(frozen=True)
class Activation:
    """One row of the activation table: the function, its default slope and gain, its kernel code."""

    func: Callable[[torch.Tensor, float], torch.Tensor]
    default_alpha: float
    default_gain: float
    kernel_code: int


ACTIVATIONS: dict[str, Activation] = {
    "linear": Activation(lambda x, alpha: x, 0.0, 1.0, 0),
    "relu": Activation(lambda x, alpha: torch.relu(x), 0.0, math.sqrt(2), 1),
    "lrelu": Activation(lambda x, alpha: torch.nn.functional.leaky_relu(x, alpha), 0.2, math.sqrt(2), 2),
}


def resolve_activation(act: str, alpha: float | None, gain: float | None) -> tuple[Activation, float, float]:
    """Look ``act`` up in :data:`ACTIVATIONS` and fill in its default ``alpha`` and ``gain``."""
    if act not in ACTIVATIONS:
        raise ValueError(f"act={act!r}: expected one of {sorted(ACTIVATIONS)}")
    spec = ACTIVATIONS[act]
    return (
        spec,
        float(spec.default_alpha if alpha is None else alpha),
        float(spec.default_gain if gain is None else gain),
    )


def bias_act_ref(
    x: torch.Tensor,
    b: torch.Tensor | None = None,
    dim: int = 1,
    act: str = "linear",
    alpha: float | None = None,
    gain: float | None = None,
    clamp: float | None = None,
) -> torch.Tensor:
    """Reference ``bias_act`` in plain PyTorch (the specification; any device, any float dtype)."""
    spec, alpha, gain = resolve_activation(act, alpha, gain)
    if b is not None:
        if b.ndim != 1 or b.shape[0] != x.shape[dim]:
            raise ValueError(f"b: expected shape [{x.shape[dim]}] (x.shape[{dim}]), got {list(b.shape)}")
        x = x + b.to(x.dtype).reshape([-1 if i == dim % x.ndim else 1 for i in range(x.ndim)])
    x = spec.func(x, alpha)
    if gain != 1:
        x = x * gain
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


# --------------------------------------------------------------------------------------------
# Triton kernel
# --------------------------------------------------------------------------------------------


@triton.jit
def activate(v, alpha, ACT: tl.constexpr):
    """Apply activation ``ACT`` (a :data:`ACTIVATIONS` ``kernel_code``) to the fp32 block ``v``.

    ``ACT`` 0 linear (identity), 1 relu ``max(v, 0)``, 2 lrelu ``v if v > 0 else alpha * v``.
    Shared by every kernel with an activation epilogue.
    """
    if ACT == 1:
        v = tl.where(v > 0, v, 0.0)
    elif ACT == 2:
        v = tl.where(v > 0, v, v * alpha)
    return v


@triton.jit
def _bias_act_kernel(
    x_ptr, b_ptr, y_ptr,
    rows, channels, inner,
    alpha, gain, clamp,
    ACT: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_CLAMP: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_I: tl.constexpr,
):
    """``y = clamp(act(x + b[c], alpha) * gain, -clamp, clamp)`` on a contiguous ``x`` seen as 2-D.

    Pointers:
        x_ptr: ``[rows, inner]`` contiguous input (fp32/fp16/bf16) -- ``x`` viewed with all axes
            before and at ``dim`` merged into ``rows`` and all axes after it into ``inner``.
        b_ptr: ``[channels]`` fp32 bias; row ``r`` uses ``b[r % channels]`` (unused unless HAS_BIAS).
        y_ptr: ``[rows, inner]`` contiguous output, same dtype as ``x``.
    Sizes: ``rows``, ``channels`` (``x.shape[dim]``, 1 without bias), ``inner`` (all i32).
    Scalars (fp32): ``alpha`` (lrelu slope), ``gain``, ``clamp`` (used only if HAS_CLAMP).
    Constexprs: ``ACT`` activation code; ``HAS_BIAS``; ``HAS_CLAMP``; ``BLOCK_R x BLOCK_I`` the tile
        of ``[rows, inner]`` one program covers (``BLOCK_I`` ~ next power of two of ``inner``, so
        the channel index is computed once per row, not per element).
    Grid: 1-D, ``cdiv(rows, BLOCK_R) * cdiv(inner, BLOCK_I)`` programs, column tiles fastest.
    """
    pid = tl.program_id(0)
    col_tiles = tl.cdiv(inner, BLOCK_I)
    r = (pid // col_tiles) * BLOCK_R + tl.arange(0, BLOCK_R)
    i = (pid % col_tiles) * BLOCK_I + tl.arange(0, BLOCK_I)
    mask = (r[:, None] < rows) & (i[None, :] < inner)
    offs = r.to(tl.int64)[:, None] * inner + i[None, :]
    v = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        v += tl.load(b_ptr + r % channels, mask=r < rows, other=0.0)[:, None]
    v = activate(v, alpha, ACT) * gain
    if HAS_CLAMP:
        v = tl.minimum(tl.maximum(v, -clamp), clamp)
    tl.store(y_ptr + offs, v.to(y_ptr.dtype.element_ty), mask=mask)


def _bias_act_launches(dtype: str, device: torch.device) -> dict:
    """Example launches (compile gate): a 512-channel 32x32 feature map, as the generators use it."""
    x = torch.randn(2, 512, 32, 32, dtype=torch_dtype(dtype), device=device)
    b = torch.randn(512, device=device)
    lrelu, linear = ACTIVATIONS["lrelu"].kernel_code, ACTIVATIONS["linear"].kernel_code
    return {
        "lrelu-bias-clamp": lambda: _bias_act_launch(x, b, 1, lrelu, 0.2, math.sqrt(2), 256.0),
        "lrelu-bias": lambda: _bias_act_launch(x, b, 1, lrelu, 0.2, math.sqrt(2), None),
        "linear-nobias": lambda: _bias_act_launch(x, None, 1, linear, 0.0, 1.0, None),
    }


BIAS_ACT_KERNEL = declare_kernel(
    "bias_act",
    _bias_act_kernel,
    configs=[
        KernelConfig(meta={"BLOCK": 1024}, num_warps=4, num_stages=1),
        KernelConfig(meta={"BLOCK": 2048}, num_warps=8, num_stages=1),
        KernelConfig(meta={"BLOCK": 4096}, num_warps=8, num_stages=1),
        KernelConfig(meta={"BLOCK": 512}, num_warps=4, num_stages=1),
    ],
    launches=_bias_act_launches,
    dtypes=("fp32", "fp16", "bf16"),
    description="elementwise bias + activation + gain + clamp, fp32 maths, one rounding on store",
)


def _bias_act_launch(
    x: torch.Tensor, b: torch.Tensor | None, dim: int, act_code: int, alpha: float, gain: float,
    clamp: float | None,
) -> torch.Tensor:
    """Launch :func:`_bias_act_kernel`; arguments already validated, ``dim`` non-negative."""
    x = x.contiguous()
    y = torch.empty_like(x)
    if x.numel() == 0:
        return y
    if b is None:
        rows, channels, inner = 1, 1, x.numel()
    else:
        channels = x.shape[dim]
        inner = math.prod(x.shape[dim + 1:])
        rows = x.numel() // inner
    config = launch_config(BIAS_ACT_KERNEL, (("dtype", triton_dtype(x.dtype)), ("bias", b is not None),
                                             ("inner", min(inner, 1 << 20))))
    block = config.meta["BLOCK"]
    block_i = min(triton.next_power_of_2(inner), block)
    block_r = block // block_i
    grid = (triton.cdiv(rows, block_r) * triton.cdiv(inner, block_i),)
    _bias_act_kernel[grid](
        x, as_fp32_param(b) if b is not None else x, y,
        rows, channels, inner,
        alpha, gain, 0.0 if clamp is None else clamp,
        ACT=act_code, HAS_BIAS=b is not None, HAS_CLAMP=clamp is not None,
        BLOCK_R=block_r, BLOCK_I=block_i,
        num_warps=config.num_warps, num_stages=config.num_stages,
    )
    return y


@torch.library.custom_op("sgtriton::bias_act", mutates_args=())
def _bias_act_op(
    x: torch.Tensor, b: torch.Tensor | None, dim: int, act: str, alpha: float, gain: float,
    clamp: float | None,
) -> torch.Tensor:
    """``sgtriton::bias_act``: the Triton kernel as a custom op (``alpha``/``gain`` resolved)."""
    return _bias_act_launch(x, b, dim, ACTIVATIONS[act].kernel_code, alpha, gain, clamp)


@_bias_act_op.register_fake
def _bias_act_fake(x, b, dim, act, alpha, gain, clamp):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _check_bias_act_args(x: torch.Tensor, b: torch.Tensor | None, dim: int) -> int:
    """Validate the Triton path's tensors; return ``dim`` made non-negative."""
    check_kernel_input(x, "x")
    if b is None:
        return dim
    if not -x.ndim <= dim < x.ndim:
        raise ValueError(f"dim={dim}: out of range for x of shape {list(x.shape)}")
    dim %= x.ndim
    if not isinstance(b, torch.Tensor) or b.ndim != 1 or b.shape[0] != x.shape[dim]:
        got = list(b.shape) if isinstance(b, torch.Tensor) else type(b).__name__
        raise ValueError(f"b: expected shape [{x.shape[dim]}] (x.shape[{dim}]), got {got}")
    if not b.is_floating_point():
        raise TypeError(f"b: expected a floating-point tensor, got dtype {b.dtype}")
    if b.device != x.device:
        raise ValueError(f"b: on {b.device}, expected x's device {x.device}")
    return dim


def bias_act(
    x: torch.Tensor,
    b: torch.Tensor | None = None,
    dim: int = 1,
    act: str = "linear",
    alpha: float | None = None,
    gain: float | None = None,
    clamp: float | None = None,
    impl: str = "ref",
) -> torch.Tensor:
    """``y = clamp(act(x + b, alpha) * gain, -clamp, clamp)`` with ``b [x.shape[dim]]`` broadcast.

    ``impl='ref'`` runs :func:`bias_act_ref`; ``impl='triton'`` the fused kernel (fp32/fp16, bf16 on
    CUDA only), which computes in fp32 and rounds once. Returns a tensor of ``x``'s shape and dtype.
    """
    if impl == "ref":
        return bias_act_ref(x, b, dim, act, alpha, gain, clamp)
    if impl == "triton":
        _, alpha, gain = resolve_activation(act, alpha, gain)
        dim = _check_bias_act_args(x, b, dim)
        clamp = float(clamp) if clamp is not None and clamp >= 0 else None
        return torch.ops.sgtriton.bias_act(x, b, dim, act, alpha, gain, clamp)
    raise ValueError(f"impl={impl!r}: expected 'ref' or 'triton'")


# --------------------------------------------------------------------------------------------
# Backward
# --------------------------------------------------------------------------------------------


def bias_act_input_grad(
    grad: torch.Tensor, y: torch.Tensor, act: str, alpha: float, gain: float, clamp: float | None,
) -> torch.Tensor:
    """``dL/d(x + b)`` from ``grad = dL/dy`` and the output ``y = clamp(act(x + b, alpha) * gain)``.

    The output is enough: ``act(v) * gain`` has the sign of ``v`` times the sign of ``gain`` for every
    activation in :data:`ACTIVATIONS`, so ``v > 0`` exactly where ``y * gain > 0``, and the clamp
    passes gradient where ``|y| < clamp`` (values the clamp cut sit exactly on ``+-clamp``). The
    result is linear in ``grad`` with masks that are constant almost everywhere, so it is itself
    differentiable (the second derivative of a piecewise-linear activation is zero), in ``grad``'s dtype.
    """
    g = grad * gain
    if act == "lrelu":
        g = torch.where(y * gain > 0, g, g * alpha)
    elif act == "relu":
        g = torch.where(y * gain > 0, g, torch.zeros_like(g))
    elif act != "linear":
        raise ValueError(f"act={act!r}: expected one of {sorted(ACTIVATIONS)}")
    if clamp is not None and clamp >= 0:
        g = torch.where(y.abs() < clamp, g, torch.zeros_like(g))
    return g


def sum_to_channel(g: torch.Tensor, dim: int) -> torch.Tensor:
    """Sum ``g`` over every axis but ``dim``: the gradient of a bias broadcast along ``dim``."""
    return g.sum(dim=[i for i in range(g.ndim) if i != dim % g.ndim])


def _bias_act_setup_context(ctx, inputs, output):
    x, b, dim, act, alpha, gain, clamp = inputs
    ctx.save_for_backward(output)
    ctx.args = (b is not None, b.dtype if b is not None else None, dim, act, alpha, gain, clamp)


def _bias_act_backward(ctx, grad):
    (y,) = ctx.saved_tensors
    has_bias, bias_dtype, dim, act, alpha, gain, clamp = ctx.args
    g = bias_act_input_grad(grad, y, act, alpha, gain, clamp)
    db = sum_to_channel(g.float(), dim).to(bias_dtype) if has_bias and ctx.needs_input_grad[1] else None
    return g, db, None, None, None, None, None


_bias_act_op.register_autograd(_bias_act_backward, setup_context=_bias_act_setup_context)
